//! floe backfill Lambda, invoked by the backfill state machine: tracing, settings, the pipeline files and the
//! backends once per cold start, then each invocation plans a job, loads one split until its deadline, or sums
//! a finished run ([`handler`]).

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
    let router = floe_backends::router(&pipelines, &backends, |k| std::env::var(k).ok()).await?;
    let handler = &handler::Handler::new(router, backends);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        handler.invoke(event.payload, event.context.deadline)
    }))
    .await
}
