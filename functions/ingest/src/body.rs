//! The invocation body as Lambda sent it, for the handler to read itself.
//!
//! lambda_runtime deserializes every body into the handler's payload type before calling it. Ingest reads the
//! event in place instead (floe-core's `input/event/body.rs`: records borrowed from the body, a third of the
//! cost of building an `MskEvent`, and on a multi-vCPU function that step is the part of an invocation the
//! partitions wait for). This layer takes the body off each invocation, keyed by the invocation's request id
//! (so it also holds under concurrent invocations), and passes `null` on, which the runtime deserializes as
//! the handler's `()` payload; the handler then [`Bodies::take`]s the body.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use lambda_runtime::LambdaInvocation;
use lambda_runtime::tower::{Layer, Service};

/// The bodies of the invocations in flight, by request id.
#[derive(Clone, Default)]
pub struct Bodies(Arc<Mutex<HashMap<String, Bytes>>>);

impl Bodies {
    /// The body of invocation `request_id` (once).
    pub fn take(&self, request_id: &str) -> Option<Bytes> {
        self.0.lock().expect("not poisoned").remove(request_id)
    }
}

impl<S> Layer<S> for Bodies {
    type Service = TakeBody<S>;

    fn layer(&self, inner: S) -> TakeBody<S> {
        TakeBody { bodies: self.clone(), inner }
    }
}

/// The service [`Bodies`] wraps around the runtime's: keeps the body, hands on `null`.
pub struct TakeBody<S> {
    bodies: Bodies,
    inner: S,
}

impl<S> Service<LambdaInvocation> for TakeBody<S>
where
    S: Service<LambdaInvocation>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        let id = invocation.context.request_id.clone();
        let body = std::mem::replace(&mut invocation.body, Bytes::from_static(b"null"));
        self.bodies.0.lock().expect("not poisoned").insert(id.clone(), body);
        let bodies = self.bodies.clone();
        let response = self.inner.call(invocation);
        Box::pin(async move {
            let out = response.await;
            // Not taken if the handler never ran (or panicked): do not keep it past its invocation.
            bodies.take(&id);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(request_id: &str, body: &'static [u8]) -> LambdaInvocation {
        let mut context = lambda_runtime::Context::default();
        context.request_id = request_id.into();
        let parts = http::Response::new(()).into_parts().0;
        LambdaInvocation { parts, body: Bytes::from_static(body), context }
    }

    #[tokio::test]
    async fn the_handler_takes_its_own_body_and_the_runtime_sees_null() {
        let bodies = Bodies::default();
        let seen = bodies.clone();
        let inner = lambda_runtime::service_fn(move |inv: LambdaInvocation| {
            let taken = seen.take(&inv.context.request_id);
            async move { Ok::<_, std::convert::Infallible>((inv.body, taken)) }
        });
        let mut service = bodies.layer(inner);
        let (runtime_sees, handler_got) = service.call(invocation("a", br#"{"records":{}}"#)).await.unwrap();
        assert_eq!(&runtime_sees[..], b"null");
        assert_eq!(handler_got.as_deref(), Some(&br#"{"records":{}}"#[..]));
        // Each invocation its own body, and nothing kept afterwards.
        let (_, other) = service.call(invocation("b", b"{}")).await.unwrap();
        assert_eq!(other.as_deref(), Some(&b"{}"[..]));
        assert!(bodies.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_the_handler_did_not_take_is_dropped_with_its_invocation() {
        let bodies = Bodies::default();
        let inner = lambda_runtime::service_fn(|_: LambdaInvocation| async { Ok::<_, std::convert::Infallible>(()) });
        bodies.layer(inner).call(invocation("c", b"{}")).await.unwrap();
        assert!(bodies.take("c").is_none());
    }
}
