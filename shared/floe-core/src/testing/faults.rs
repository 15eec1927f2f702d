//! Test-only fault injection around a state store: every call first checks its named point
//! (`state.<method>`, see [`failpoint::STATE_CALLS`]) and, when armed, fails as a throttled store would
//! (retryable). With the AWS backends the tests also inject real throttling responses at the HTTP layer; this
//! wrapper gives the embedded default the same cells. Compiled only with the `failpoints` feature.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::failpoint::throttle;
use crate::input::event::SourcePartition;
use crate::state::{Fence, StageRequest, StagedFile, StateStore};
use crate::stateful::store::{Cell, CellWrite, ClockWrite, KeyClaim, StreamStore, WindowProgress};

/// A state store whose calls can be made to fail on demand.
pub struct FaultyState(pub Arc<dyn StateStore>);

#[async_trait]
impl StateStore for FaultyState {
    async fn fence_state(&self, pipeline: &str, source: &SourcePartition) -> Result<Option<Fence>> {
        throttle("state.fence")?;
        self.0.fence_state(pipeline, source).await
    }

    async fn stage(&self, request: &StageRequest) -> Result<()> {
        throttle("state.stage")?;
        self.0.stage(request).await
    }

    async fn staged_files(&self, table: &str) -> Result<Vec<StagedFile>> {
        throttle("state.staged_files")?;
        self.0.staged_files(table).await
    }

    async fn remove_staged(&self, table: &str, files: &[StagedFile]) -> Result<()> {
        throttle("state.remove_staged")?;
        self.0.remove_staged(table, files).await
    }
}

#[async_trait]
impl StreamStore for FaultyState {
    async fn claim_keys(&self, scope: &str, claims: &[KeyClaim]) -> Result<Vec<bool>> {
        throttle("state.claim_keys")?;
        self.0.claim_keys(scope, claims).await
    }

    async fn window_progress(&self, scope: &str) -> Result<WindowProgress> {
        throttle("state.window_progress")?;
        self.0.window_progress(scope).await
    }

    async fn set_closed(&self, scope: &str, expected: Option<i64>, closed_ms: i64) -> Result<()> {
        throttle("state.set_closed")?;
        self.0.set_closed(scope, expected, closed_ms).await
    }

    async fn set_emitted(&self, scope: &str, emitted_ms: i64) -> Result<()> {
        throttle("state.set_emitted")?;
        self.0.set_emitted(scope, emitted_ms).await
    }

    async fn get_cells(&self, scope: &str, ids: &[String]) -> Result<Vec<Option<Cell>>> {
        throttle("state.get_cells")?;
        self.0.get_cells(scope, ids).await
    }

    async fn scan_cells(&self, scope: &str, close_at_most: Option<i64>) -> Result<Vec<Cell>> {
        throttle("state.scan_cells")?;
        self.0.scan_cells(scope, close_at_most).await
    }

    async fn put_cells(
        &self,
        scope: &str,
        expected_closed: Option<i64>,
        writes: &[CellWrite],
        clock: Option<&ClockWrite>,
    ) -> Result<()> {
        throttle("state.put_cells")?;
        self.0.put_cells(scope, expected_closed, writes, clock).await
    }

    async fn delete_cells(&self, scope: &str, cells: &[(String, Option<i64>)]) -> Result<()> {
        throttle("state.delete_cells")?;
        self.0.delete_cells(scope, cells).await
    }

    async fn clocks(&self, scope: &str) -> Result<Vec<(SourcePartition, i64, i64)>> {
        throttle("state.clocks")?;
        self.0.clocks(scope).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::failpoint;

    struct Empty;

    #[async_trait]
    impl StateStore for Empty {
        async fn fence_state(&self, _: &str, _: &SourcePartition) -> Result<Option<Fence>> {
            Ok(Some(Fence { next: 7, start: None }))
        }
        async fn stage(&self, _: &StageRequest) -> Result<()> {
            Ok(())
        }
        async fn staged_files(&self, _: &str) -> Result<Vec<StagedFile>> {
            Ok(vec![])
        }
        async fn remove_staged(&self, _: &str, _: &[StagedFile]) -> Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl StreamStore for Empty {
        async fn claim_keys(&self, _: &str, c: &[KeyClaim]) -> Result<Vec<bool>> {
            Ok(vec![true; c.len()])
        }
        async fn window_progress(&self, _: &str) -> Result<WindowProgress> {
            Ok(WindowProgress::default())
        }
        async fn set_closed(&self, _: &str, _: Option<i64>, _: i64) -> Result<()> {
            Ok(())
        }
        async fn set_emitted(&self, _: &str, _: i64) -> Result<()> {
            Ok(())
        }
        async fn get_cells(&self, _: &str, ids: &[String]) -> Result<Vec<Option<Cell>>> {
            Ok(vec![None; ids.len()])
        }
        async fn scan_cells(&self, _: &str, _: Option<i64>) -> Result<Vec<Cell>> {
            Ok(vec![])
        }
        async fn put_cells(&self, _: &str, _: Option<i64>, _: &[CellWrite], _: Option<&ClockWrite>) -> Result<()> {
            Ok(())
        }
        async fn delete_cells(&self, _: &str, _: &[(String, Option<i64>)]) -> Result<()> {
            Ok(())
        }
        async fn clocks(&self, _: &str) -> Result<Vec<(SourcePartition, i64, i64)>> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn an_armed_call_fails_as_retryable_throttling_then_passes() {
        let store = FaultyState(Arc::new(Empty));
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        assert_eq!(store.fence("p", &source).await.unwrap(), Some(7));
        failpoint::arm_times("state.fence", 1);
        let err = store.fence("p", &source).await.unwrap_err();
        assert!(matches!(err, Error::State { retryable: true, .. }) && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("state.fence"), "{err}");
        assert_eq!(store.fence("p", &source).await.unwrap(), Some(7));
    }
}
