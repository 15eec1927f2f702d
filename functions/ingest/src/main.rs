//! floe ingest Lambda, triggered by the MSK event source mapping: tracing, settings and the pipeline file read
//! once at cold start (failing fast on any mistake), the backends opened once, then every event goes to the
//! [`handler`].

mod handler;

use lambda_runtime::{LambdaEvent, service_fn};

/// Plan the outputs' SQL at cold start; a build without the SQL engine runs only pipelines without outputs.
#[cfg(feature = "sql")]
const PLANNING: floe_backends::Planning = floe_backends::Planning::Plan;
#[cfg(not(feature = "sql"))]
const PLANNING: floe_backends::Planning = floe_backends::Planning::Recorded;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe_backends::init_lambda_tracing();
    let settings = floe_backends::FunctionSettings::from_env()?;
    let (pipeline, backends) = floe_backends::open(&settings, PLANNING).await?;
    let handler = &handler::Handler::new(pipeline, &backends).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<floe_core::MskEvent>| handler.invoke(event.payload))).await
}
