//! floe ingest Lambda, triggered by the MSK event source mapping: tracing, settings and the pipeline file read
//! once at cold start (failing fast on any mistake), the backends opened once, then every event goes to the
//! [`handler`]. Two binaries run it: `floe-ingest` (no SQL engine, for pipelines without outputs) and
//! `floe-ingest-sql` (this crate with its `sql` feature), so each deployment links only what its pipeline runs.

pub mod body;
pub mod handler;

use lambda_runtime::{LambdaEvent, Runtime, layers, service_fn};

/// Plan the outputs' SQL at cold start; a build without the SQL engine runs only pipelines without outputs and
/// refuses the others at cold start, naming the build that runs them.
#[cfg(feature = "sql")]
const PLANNING: floe_backends::Planning = floe_backends::Planning::Plan;
#[cfg(not(feature = "sql"))]
const PLANNING: floe_backends::Planning = floe_backends::Planning::Recorded;

/// The function's whole life: cold start, then one [`handler::Handler::invoke`] per event.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    floe_backends::init_lambda_tracing();
    let settings = floe_backends::FunctionSettings::from_env()?;
    let (pipelines, backends) = floe_backends::open(&settings, PLANNING).await?;
    let router = floe_backends::router(&pipelines, &backends, |k| std::env::var(k).ok()).await?;
    // Lives as long as the process (the runtime's layered service must not borrow from this frame).
    let handler: &'static handler::Handler = Box::leak(Box::new(handler::Handler::new(router)));
    // The handler reads the invocation body itself (see `body`); the runtime deserializes only `null`.
    let bodies = body::Bodies::default();
    let taken = bodies.clone();
    let service = service_fn(move |event: LambdaEvent<()>| {
        let body = taken.take(&event.context.request_id);
        async move {
            let missing = || floe_core::Error::Invariant("the invocation's body was not kept for the handler".into());
            let body = body.ok_or_else(|| handler::diagnostic(missing().into()))?;
            handler.invoke(&body).await
        }
    });
    Runtime::new(service).layer(bodies).layer(layers::TracingLayer::new()).run().await
}
