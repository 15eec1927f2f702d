//! The recorded plan of a pipeline's outputs: the columns each output's SQL returns. Ingest plans the SQL at cold
//! start anyway and records the result; the compactor, which links no SQL engine, reads it to create and check
//! the output tables and to emit windows.
//!
//! The record is one JSON file in the warehouse, `_floe/plans/<pipeline>/<fingerprint>.json`. The fingerprint
//! covers everything planning reads (the raw table's columns, the reference tables' columns, each output's
//! table, SQL and dedup key), so a compactor deployed with the same pipeline finds the plan, and one deployed
//! with a changed pipeline waits until an ingest with that pipeline has started. The content is deterministic:
//! concurrent cold starts write the same bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, Pipeline, Planned};

/// What is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    pipeline: String,
    fingerprint: String,
    outputs: Vec<RecordedOutput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedOutput {
    table: String,
    /// `(name, type)` of each column the SQL returns, types as in the pipeline file.
    columns: Vec<(String, String)>,
}

/// Where the plan of `pipeline` (as it is now) is recorded under `warehouse`.
pub fn plan_location(warehouse: &str, pipeline: &Pipeline) -> String {
    format!(
        "{}/_floe/plans/{}/{:016x}.json",
        warehouse.trim_end_matches('/'),
        pipeline.name,
        pipeline.plan_fingerprint()
    )
}

/// Record the columns of a resolved pipeline's outputs, unless that plan is recorded already.
pub async fn record_plan(file_io: &iceberg::io::FileIO, warehouse: &str, pipeline: &Pipeline) -> Result<()> {
    if pipeline.outputs.is_empty() {
        return Ok(());
    }
    pipeline.check_resolved()?;
    let location = plan_location(warehouse, pipeline);
    if file_io.exists(&location).await? {
        return Ok(());
    }
    let record = Record {
        pipeline: pipeline.name.clone(),
        fingerprint: format!("{:016x}", pipeline.plan_fingerprint()),
        outputs: pipeline
            .outputs
            .iter()
            .map(|o| RecordedOutput {
                table: o.table.to_string(),
                columns: o.sql_columns.iter().map(|(n, t)| (n.clone(), t.to_string())).collect(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&record).expect("a plan record serializes");
    file_io.new_output(&location)?.write(bytes.into()).await?;
    Ok(())
}

/// The recorded columns of the pipeline's outputs, in file order, for [`Pipeline::resolve`]; `None` while no
/// ingest with this pipeline has recorded them.
pub async fn recorded_plan(
    file_io: &iceberg::io::FileIO,
    warehouse: &str,
    pipeline: &Pipeline,
) -> Result<Option<Vec<Planned>>> {
    let location = plan_location(warehouse, pipeline);
    if !file_io.exists(&location).await? {
        return Ok(None);
    }
    let bytes = file_io.new_input(&location)?.read().await?;
    let bad = |message: String| Error::state(format!("plan record {location}: {message}"), false);
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let tables: Vec<String> = pipeline.outputs.iter().map(|o| o.table.to_string()).collect();
    let recorded: Vec<&String> = record.outputs.iter().map(|o| &o.table).collect();
    if record.pipeline != pipeline.name || recorded != tables.iter().collect::<Vec<_>>() {
        return Err(bad(format!("records outputs {recorded:?} of `{}`, not {tables:?}", record.pipeline)));
    }
    record
        .outputs
        .into_iter()
        .map(|o| {
            o.columns
                .into_iter()
                .map(|(name, ty)| ColumnType::parse(&ty).map(|t| (name, t)).map_err(bad))
                .collect::<Result<Vec<_>>>()
                .map(Ok)
        })
        .collect::<Result<Vec<Planned>>>()
        .map(Some)
}

#[cfg(all(test, feature = "sql"))]
mod tests {
    use std::sync::Arc;

    use iceberg::io::{FileIOBuilder, LocalFsStorageFactory};

    use super::*;

    const STREAM: &str = include_str!("../../../../tests/pipelines/stream.toml");

    #[tokio::test]
    async fn a_recorded_plan_resolves_the_pipeline_as_planning_does() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = format!("file://{}", dir.path().display());
        let io = FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
        let planned = crate::parse_pipeline(STREAM, "stream.toml").unwrap();
        let mut parsed = Pipeline::parse(STREAM, "stream.toml").unwrap();
        assert!(!parsed.is_resolved());
        assert_eq!(recorded_plan(&io, &warehouse, &parsed).await.unwrap(), None);

        record_plan(&io, &warehouse, &planned).await.unwrap();
        let recorded = recorded_plan(&io, &warehouse, &parsed).await.unwrap().expect("recorded");
        parsed.resolve(recorded).unwrap();
        for (a, b) in parsed.outputs.iter().zip(&planned.outputs) {
            assert_eq!(a.sql_columns, b.sql_columns, "{}", a.table);
            assert_eq!(format!("{:?}", a.window), format!("{:?}", b.window), "{}", a.table);
            assert_eq!(format!("{:?}", a.partition), format!("{:?}", b.partition), "{}", a.table);
        }

        // Another SQL is another plan: the compactor of an edited pipeline waits for its own.
        let edited = STREAM.replace("e.amount * 2 AS amount2", "e.amount * 3 AS amount3");
        let edited = Pipeline::parse(&edited, "stream.toml").unwrap();
        assert_ne!(plan_location(&warehouse, &edited), plan_location(&warehouse, &planned));
        assert_eq!(recorded_plan(&io, &warehouse, &edited).await.unwrap(), None);
        // A comment is not: the fingerprint covers only what planning reads.
        let commented = Pipeline::parse(&format!("# edited\n{STREAM}"), "stream.toml").unwrap();
        assert_eq!(plan_location(&warehouse, &commented), plan_location(&warehouse, &planned));
    }
}
