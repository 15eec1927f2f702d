//! The state store on SQLite: offset fences and the staged-file ledger in one database file.
//!
//! The staging step is one `BEGIN IMMEDIATE` transaction: the fence moves only if it still has the value ingest
//! read (compare-and-set), and the staged files are inserted in the same transaction. `IMMEDIATE` takes the write
//! lock up front, so two processes never deadlock upgrading a read lock; `busy_timeout` makes the loser wait.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use floe_core::SourcePartition;
use floe_core::{Error, Result};
use floe_core::{Fence, StageRequest, StagedContent, StagedFile, StateStore};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fences (
    pipeline    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    start_offset INTEGER,
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (pipeline, topic, partition)
);
CREATE TABLE IF NOT EXISTS staged_files (
    table_name   TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    pipeline     TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    partition    INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    file_size    INTEGER NOT NULL,
    data_file    TEXT    NOT NULL,
    staged_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    schema_id    INTEGER,
    table_uuid   TEXT,
    content      TEXT,
    PRIMARY KEY (table_name, path)
);
";

/// Columns (table, column, type) added after the first release, added to older databases when opened.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("staged_files", "schema_id", "INTEGER"),
    ("staged_files", "table_uuid", "TEXT"),
    ("staged_files", "content", "TEXT"),
    ("fences", "start_offset", "INTEGER"),
];

/// Staged files inserted by one statement: 13 parameters each, well inside SQLite's 32,766.
const STAGED_ROWS_PER_INSERT: usize = 500;

/// SQLite-backed [`StateStore`].
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    pool: SqlitePool,
    /// One write transaction of this process at a time. Partitions of an event stage concurrently; without
    /// this they would meet on SQLite's write lock, whose busy handler *sleeps* (1, 2, 5 … 100 ms) before
    /// retrying, longer than a whole staging step. Queued here, the next writer starts the moment the lock is
    /// free. Other processes still meet on the lock and `busy_timeout`.
    writer: Arc<tokio::sync::Mutex<()>>,
}

pub(crate) fn db_error(e: sqlx::Error) -> Error {
    // Busy/locked and I/O hiccups can succeed on retry; anything else (constraint, corrupt file) cannot.
    let retryable = match &e {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including their extended codes (low byte).
        sqlx::Error::Database(d) => {
            d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => false,
    };
    Error::state_caused_by(format!("sqlite: {e}"), retryable, e)
}

impl SqliteStateStore {
    pub async fn open(path: &Path) -> Result<SqliteStateStore> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .map_err(db_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        // No ping before each acquire: a connection to a local file does not go stale, and the ping is one more
        // round trip to the connection's worker thread for every statement run on the pool.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(db_error)?;
        for (table, column, ty) in ADDED_COLUMNS {
            let present = |pool: SqlitePool| async move {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?) WHERE name = ?")
                    .bind(table)
                    .bind(column)
                    .fetch_one(&pool)
                    .await
                    .map_err(db_error)?;
                Ok::<_, Error>(count > 0)
            };
            if present(pool.clone()).await? {
                continue;
            }
            // A concurrent opener may add it first: only a real failure is one.
            let added = sqlx::raw_sql(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")).execute(&pool).await;
            if let Err(e) = added
                && !present(pool.clone()).await?
            {
                return Err(db_error(e));
            }
        }
        sqlx::raw_sql(crate::stream::STREAM_SCHEMA).execute(&pool).await.map_err(db_error)?;
        Ok(SqliteStateStore { pool, writer: Arc::default() })
    }

    /// Close the store's connections (shutdown). Later calls fail as retryable, like a store that went away:
    /// a handler hands such a failure back for redelivery.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Run `f` inside `BEGIN IMMEDIATE … COMMIT` (rolled back on error): the staging step and every multi-row
    /// step of the stream state.
    pub(crate) async fn immediate<T, F>(&self, f: F) -> Result<T>
    where
        F: for<'c> FnOnce(
            &'c mut PoolConnection<Sqlite>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>>,
    {
        let _turn = self.writer.lock().await;
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(db_error)?;
        let result = f(&mut conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::query(end).execute(&mut *conn).await.map_err(db_error);
        if ended.is_err() {
            // Never hand a connection with an open transaction back to the pool.
            let _ = conn.detach().close().await;
        }
        let value = result?;
        ended?;
        Ok(value)
    }

    /// All fences of a pipeline (for reports and tests).
    pub async fn fences(&self, pipeline: &str) -> Result<Vec<(SourcePartition, i64)>> {
        let rows = sqlx::query(
            "SELECT topic, partition, next_offset FROM fences WHERE pipeline = ? ORDER BY topic, partition",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows.iter().map(|r| (SourcePartition { topic: r.get(0), partition: r.get(1) }, r.get(2))).collect())
    }
}

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn fence_state(&self, pipeline: &str, source: &SourcePartition) -> Result<Option<Fence>> {
        let row = sqlx::query(
            "SELECT next_offset, start_offset FROM fences WHERE pipeline = ? AND topic = ? AND partition = ?",
        )
        .bind(pipeline)
        .bind(&source.topic)
        .bind(source.partition)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(|r| Fence { next: r.get(0), start: r.get(1) }))
    }

    async fn stage(&self, request: &StageRequest) -> Result<()> {
        let request = request.clone();
        self.immediate(move |conn| Box::pin(async move { stage_in_transaction(conn, &request).await })).await
    }

    async fn staged_files(&self, table: &str) -> Result<Vec<StagedFile>> {
        let rows = sqlx::query(
            "SELECT path, pipeline, topic, partition, first_offset, last_offset, record_count, file_size, data_file,
                    schema_id, table_uuid, content
             FROM staged_files WHERE table_name = ? ORDER BY topic, partition, first_offset, path",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| StagedFile {
                table: table.to_string(),
                path: r.get(0),
                pipeline: r.get(1),
                source: SourcePartition { topic: r.get(2), partition: r.get(3) },
                first_offset: r.get(4),
                last_offset: r.get(5),
                record_count: r.get::<i64, _>(6) as u64,
                file_size: r.get::<i64, _>(7) as u64,
                data_file: r.get(8),
                schema_id: r.get(9),
                table_uuid: r.get(10),
                content: StagedContent::parse(r.get::<Option<String>, _>(11).as_deref()),
            })
            .collect())
    }

    async fn remove_staged(&self, table: &str, files: &[StagedFile]) -> Result<()> {
        let _turn = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for path in files.iter().map(|f| &f.path) {
            sqlx::query("DELETE FROM staged_files WHERE table_name = ? AND path = ?")
                .bind(table)
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}

async fn stage_in_transaction(conn: &mut sqlx::SqliteConnection, request: &StageRequest) -> Result<()> {
    let s = &request.source;
    let moved = match request.expected_fence {
        None => sqlx::query(
            "INSERT INTO fences (pipeline, topic, partition, next_offset, start_offset) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&request.pipeline)
        .bind(&s.topic)
        .bind(s.partition)
        .bind(request.next_fence)
        .bind(request.first_offset),
        Some(expected) => sqlx::query(
            "UPDATE fences SET next_offset = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE pipeline = ? AND topic = ? AND partition = ? AND next_offset = ?",
        )
        .bind(request.next_fence)
        .bind(&request.pipeline)
        .bind(&s.topic)
        .bind(s.partition)
        .bind(expected),
    }
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    if moved != 1 {
        return Err(Error::Conflict(format!(
            "fence of {}/{s} is no longer {:?}",
            request.pipeline, request.expected_fence
        )));
    }
    // One statement per chunk of files, not per file: a partitioned table stages a file per Iceberg partition,
    // and every statement is a round trip to the connection's worker thread.
    for chunk in request.files.chunks(STAGED_ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO staged_files (table_name, path, pipeline, topic, partition, first_offset, last_offset,
                                       record_count, file_size, data_file, schema_id, table_uuid, content) VALUES ",
        );
        sql.push_str(&vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", "));
        let mut query = sqlx::query(&sql);
        for f in chunk {
            query = query
                .bind(&f.table)
                .bind(&f.path)
                .bind(&f.pipeline)
                .bind(&f.source.topic)
                .bind(f.source.partition)
                .bind(f.first_offset)
                .bind(f.last_offset)
                .bind(f.record_count as i64)
                .bind(f.file_size as i64)
                .bind(&f.data_file)
                .bind(f.schema_id)
                .bind(&f.table_uuid)
                .bind(f.content.as_str());
        }
        query.execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(expected: Option<i64>, next: i64, path: &str) -> StageRequest {
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        StageRequest {
            pipeline: "p".into(),
            source: source.clone(),
            expected_fence: expected,
            next_fence: next,
            first_offset: expected.unwrap_or(0),
            files: vec![StagedFile {
                table: "ns.tbl".into(),
                path: path.into(),
                pipeline: "p".into(),
                source,
                first_offset: expected.unwrap_or(0),
                last_offset: next - 1,
                record_count: 3,
                file_size: 10,
                data_file: "{}".into(),
                schema_id: Some(next as i32),
                table_uuid: Some("2b0e0c7e-0000-4000-8000-000000000000".into()),
                content: Default::default(),
            }],
        }
    }

    #[tokio::test]
    async fn a_ledger_from_before_schema_ids_gains_the_column_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display())).unwrap();
            let pool = SqlitePool::connect_with(options.create_if_missing(true)).await.unwrap();
            let old = SCHEMA
                .replace("    schema_id    INTEGER,\n", "")
                .replace("    table_uuid   TEXT,\n", "")
                .replace("    start_offset INTEGER,\n", "");
            assert!(!old.contains("schema_id") && !old.contains("start_offset"));
            sqlx::raw_sql(&old).execute(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO staged_files (table_name, path, pipeline, topic, partition, first_offset, last_offset,
                                           record_count, file_size, data_file)
                 VALUES ('ns.tbl', 'old', 'p', 't', 0, 0, 9, 3, 10, '{}')",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = SqliteStateStore::open(&path).await.unwrap();
        let tp = SourcePartition { topic: "t".into(), partition: 0 };
        assert_eq!(store.fence_state("p", &tp).await.unwrap(), None);
        store.stage(&request(Some(10), 20, "new")).await.unwrap_err(); // no fence was ever staged in the old db
        store.stage(&request(None, 20, "new")).await.unwrap();
        assert_eq!(store.fence_state("p", &tp).await.unwrap(), Some(Fence { next: 20, start: Some(0) }));
        let staged = store.staged_files("ns.tbl").await.unwrap();
        let ids: Vec<(&str, Option<i32>)> = staged.iter().map(|f| (f.path.as_str(), f.schema_id)).collect();
        assert_eq!(ids, [("new", Some(20)), ("old", None)]);
        // Opening again finds the column in place.
        drop(store);
        SqliteStateStore::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn a_step_of_many_files_stages_every_one_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
        // More files than one INSERT takes: three statements, one transaction.
        let mut step = request(None, 10, "f-0000");
        let template = step.files[0].clone();
        step.files =
            (0..1_201).map(|i| StagedFile { path: format!("f-{i:04}"), record_count: i, ..template.clone() }).collect();
        store.stage(&step).await.unwrap();
        let staged = store.staged_files("ns.tbl").await.unwrap();
        assert_eq!(staged, step.files);
        // A clash in the last chunk rolls back the earlier chunks and the fence.
        let mut clash = request(Some(10), 20, "g-0000");
        clash.files = (0..1_001).map(|i| StagedFile { path: format!("g-{i:04}"), ..template.clone() }).collect();
        clash.files.push(StagedFile { path: "f-0007".into(), ..template.clone() });
        assert!(store.stage(&clash).await.is_err());
        assert_eq!(store.staged_files("ns.tbl").await.unwrap().len(), 1_201);
        let tp = SourcePartition { topic: "t".into(), partition: 0 };
        assert_eq!(store.fence("p", &tp).await.unwrap(), Some(10));
    }

    #[tokio::test]
    async fn fence_is_compare_and_set_and_atomic_with_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
        let tp = SourcePartition { topic: "t".into(), partition: 0 };
        assert_eq!(store.fence("p", &tp).await.unwrap(), None);

        store.stage(&request(None, 10, "a")).await.unwrap();
        assert_eq!(store.fence("p", &tp).await.unwrap(), Some(10));
        assert_eq!(store.fence_state("p", &tp).await.unwrap(), Some(Fence { next: 10, start: Some(0) }));
        // A second "first" delivery loses and changes nothing.
        assert!(matches!(store.stage(&request(None, 10, "a2")).await, Err(Error::Conflict(_))));
        // A stale expected fence loses and records no file.
        assert!(matches!(store.stage(&request(Some(5), 20, "b")).await, Err(Error::Conflict(_))));
        store.stage(&request(Some(10), 20, "c")).await.unwrap();
        let staged: Vec<String> = store.staged_files("ns.tbl").await.unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(staged, ["a", "c"]);

        // A duplicate path fails the whole step: the fence does not move either.
        assert!(store.stage(&request(Some(20), 30, "c")).await.is_err());
        assert_eq!(store.fence("p", &tp).await.unwrap(), Some(20));

        let a = store.staged_files("ns.tbl").await.unwrap().into_iter().filter(|f| f.path == "a").collect::<Vec<_>>();
        store.remove_staged("ns.tbl", &a).await.unwrap();
        assert_eq!(store.staged_files("ns.tbl").await.unwrap().len(), 1);
        assert_eq!(store.fences("p").await.unwrap(), vec![(tp.clone(), 20)]);
        assert_eq!(store.fence_state("p", &tp).await.unwrap(), Some(Fence { next: 20, start: Some(0) }), "start kept");
    }
}
