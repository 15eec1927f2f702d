//! floe compactor Lambda, run on a schedule: the only writer of Iceberg metadata. Tracing, settings and the
//! backends once per cold start, then every scheduled event goes to the [`handler`] (the daily one with
//! orphan removal).

// mimalloc: see the workspace Cargo.toml (glibc malloc was 15 % of ingest throughput).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod handler;

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe_backends::init_lambda_tracing();
    let settings = floe_backends::FunctionSettings::from_env()?;
    let (pipelines, backends) = floe_backends::open(&settings, floe_backends::Planning::Recorded).await?;
    let handler = &handler::Handler::new(&pipelines, &backends)?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        handler.invoke(handler::Task::of(&event.payload), event.context.deadline)
    }))
    .await
}
