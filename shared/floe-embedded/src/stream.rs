//! Dedup claims and window state on SQLite. Every multi-row step is one `BEGIN IMMEDIATE` transaction, so the
//! conditions of [`StreamStore`] hold for the whole step at once.

use async_trait::async_trait;
use floe_core::SourcePartition;
use floe_core::{Cell, CellWrite, ClockWrite, KeyClaim, StreamStore, WindowProgress};
use floe_core::{Error, Result};
use sqlx::Row;

use crate::state::{SqliteStateStore, db_error};

pub(crate) const STREAM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dedup_keys (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS dedup_keys_expiry ON dedup_keys (scope, expires_ms);
CREATE TABLE IF NOT EXISTS window_progress (
    scope      TEXT PRIMARY KEY,
    closed_ms  INTEGER,
    emitted_ms INTEGER
);
CREATE TABLE IF NOT EXISTS window_cells (
    scope       TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    close_ms    INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (scope, id)
);
CREATE TABLE IF NOT EXISTS window_clocks (
    scope        TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    partition    INTEGER NOT NULL,
    max_event_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, topic, partition)
);
";

/// Keys per statement (SQLite allows 32,766 bound parameters).
const CHUNK: usize = 500;

/// Claims whose horizon ended this long ago (record time) are deleted when keys are claimed: SQLite has no TTL.
const EXPIRED_GRACE_MS: i64 = 60_000;

fn cell_from(body: &str) -> Result<Cell> {
    serde_json::from_str(body).map_err(|e| Error::state(format!("unreadable window cell: {e}"), false))
}

#[async_trait]
impl StreamStore for SqliteStateStore {
    async fn claim_keys(&self, scope: &str, claims: &[KeyClaim]) -> Result<Vec<bool>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let scope = scope.to_string();
        let claims = claims.to_vec();
        self.immediate(move |conn| {
            Box::pin(async move {
                // One query per few hundred keys, not per record.
                let mut held: std::collections::HashMap<String, (String, i64)> = std::collections::HashMap::new();
                for chunk in claims.chunks(CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let sql =
                        format!("SELECT key, owner, expires_ms FROM dedup_keys WHERE scope = ? AND key IN ({marks})");
                    let mut query = sqlx::query(&sql).bind(&scope);
                    for c in chunk {
                        query = query.bind(&c.key);
                    }
                    for r in query.fetch_all(&mut **conn).await.map_err(db_error)? {
                        held.insert(r.get(0), (r.get(1), r.get(2)));
                    }
                }
                let granted: Vec<bool> = claims
                    .iter()
                    .map(|c| {
                        held.get(&c.key).is_none_or(|(owner, expires)| *owner == c.owner || *expires <= c.event_ms)
                    })
                    .collect();
                let winners: Vec<&KeyClaim> =
                    claims.iter().zip(&granted).filter(|(_, g)| **g).map(|(c, _)| c).collect();
                for chunk in winners.chunks(CHUNK / 2) {
                    let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
                    let sql =
                        format!("INSERT OR REPLACE INTO dedup_keys (scope, key, owner, expires_ms) VALUES {rows}");
                    let mut query = sqlx::query(&sql);
                    for c in chunk {
                        query = query.bind(&scope).bind(&c.key).bind(&c.owner).bind(c.expires_ms);
                    }
                    query.execute(&mut **conn).await.map_err(db_error)?;
                }
                // Stand-in for DynamoDB's TTL: forget claims long expired relative to the newest record time.
                if let Some(newest) = claims.iter().map(|c| c.event_ms).max() {
                    sqlx::query("DELETE FROM dedup_keys WHERE scope = ? AND expires_ms < ?")
                        .bind(&scope)
                        .bind(newest.saturating_sub(EXPIRED_GRACE_MS))
                        .execute(&mut **conn)
                        .await
                        .map_err(db_error)?;
                }
                Ok(granted)
            })
        })
        .await
    }

    async fn window_progress(&self, scope: &str) -> Result<WindowProgress> {
        let row = sqlx::query("SELECT closed_ms, emitted_ms FROM window_progress WHERE scope = ?")
            .bind(scope)
            .fetch_optional(self.pool())
            .await
            .map_err(db_error)?;
        Ok(row.map_or_else(WindowProgress::default, |r| WindowProgress { closed_ms: r.get(0), emitted_ms: r.get(1) }))
    }

    async fn set_closed(&self, scope: &str, expected: Option<i64>, closed_ms: i64) -> Result<()> {
        let scope = scope.to_string();
        self.immediate(move |conn| {
            Box::pin(async move {
                let current: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT closed_ms FROM window_progress WHERE scope = ?")
                        .bind(&scope)
                        .fetch_optional(&mut **conn)
                        .await
                        .map_err(db_error)?;
                if current.flatten() != expected {
                    return Err(Error::Conflict(format!("{scope}: closed watermark moved")));
                }
                sqlx::query(
                    "INSERT INTO window_progress (scope, closed_ms) VALUES (?, ?)
                     ON CONFLICT (scope) DO UPDATE SET closed_ms = excluded.closed_ms",
                )
                .bind(&scope)
                .bind(closed_ms)
                .execute(&mut **conn)
                .await
                .map_err(db_error)?;
                Ok(())
            })
        })
        .await
    }

    async fn set_emitted(&self, scope: &str, emitted_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO window_progress (scope, emitted_ms) VALUES (?, ?)
             ON CONFLICT (scope) DO UPDATE SET emitted_ms = max(coalesce(emitted_ms, excluded.emitted_ms), excluded.emitted_ms)",
        )
        .bind(scope)
        .bind(emitted_ms)
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_cells(&self, scope: &str, ids: &[String]) -> Result<Vec<Option<Cell>>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut conn = self.pool().acquire().await.map_err(db_error)?;
        for id in ids {
            let body: Option<String> = sqlx::query_scalar("SELECT body FROM window_cells WHERE scope = ? AND id = ?")
                .bind(scope)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
            out.push(body.as_deref().map(cell_from).transpose()?);
        }
        Ok(out)
    }

    async fn scan_cells(&self, scope: &str, close_at_most: Option<i64>) -> Result<Vec<Cell>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM window_cells WHERE scope = ? AND close_ms <= ? ORDER BY id")
                .bind(scope)
                .bind(close_at_most.unwrap_or(i64::MAX))
                .fetch_all(self.pool())
                .await
                .map_err(db_error)?;
        rows.iter().map(|b| cell_from(b)).collect()
    }

    async fn put_cells(
        &self,
        scope: &str,
        expected_closed: Option<i64>,
        writes: &[CellWrite],
        clock: Option<&ClockWrite>,
    ) -> Result<()> {
        let scope = scope.to_string();
        let writes = writes.to_vec();
        let clock = clock.cloned();
        self.immediate(move |conn| {
            Box::pin(async move {
                let closed: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT closed_ms FROM window_progress WHERE scope = ?")
                        .bind(&scope)
                        .fetch_optional(&mut **conn)
                        .await
                        .map_err(db_error)?;
                if closed.flatten() != expected_closed {
                    return Err(Error::Conflict(format!("{scope}: closed watermark moved")));
                }
                for w in &writes {
                    let current: Option<i64> =
                        sqlx::query_scalar("SELECT last_offset FROM window_cells WHERE scope = ? AND id = ?")
                            .bind(&scope)
                            .bind(&w.cell.id)
                            .fetch_optional(&mut **conn)
                            .await
                            .map_err(db_error)?;
                    if current != w.expected_last_offset {
                        return Err(Error::Conflict(format!("{scope}: window cell {} changed", w.cell.id)));
                    }
                    let body = serde_json::to_string(&w.cell).expect("cells serialize");
                    sqlx::query(
                        "INSERT OR REPLACE INTO window_cells (scope, id, close_ms, last_offset, body) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(&scope)
                    .bind(&w.cell.id)
                    .bind(w.close_ms)
                    .bind(w.cell.last_offset)
                    .bind(body)
                    .execute(&mut **conn)
                    .await
                    .map_err(db_error)?;
                }
                if let Some(c) = &clock {
                    sqlx::query(
                        "INSERT INTO window_clocks (scope, topic, partition, max_event_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (scope, topic, partition) DO UPDATE SET
                           max_event_ms = max(max_event_ms, excluded.max_event_ms),
                           last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
                    )
                    .bind(&scope)
                    .bind(&c.source.topic)
                    .bind(c.source.partition)
                    .bind(c.max_event_ms)
                    .bind(c.now_ms)
                    .execute(&mut **conn)
                    .await
                    .map_err(db_error)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn delete_cells(&self, scope: &str, cells: &[(String, Option<i64>)]) -> Result<()> {
        let mut conn = self.pool().acquire().await.map_err(db_error)?;
        for (id, expected) in cells {
            sqlx::query("DELETE FROM window_cells WHERE scope = ? AND id = ? AND (? IS NULL OR last_offset = ?)")
                .bind(scope)
                .bind(id)
                .bind(expected)
                .bind(expected)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn clocks(&self, scope: &str) -> Result<Vec<(SourcePartition, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT topic, partition, max_event_ms, last_seen_ms FROM window_clocks WHERE scope = ? ORDER BY topic, partition",
        )
        .bind(scope)
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| (SourcePartition { topic: r.get(0), partition: r.get(1) }, r.get(2), r.get(3)))
            .collect())
    }
}
