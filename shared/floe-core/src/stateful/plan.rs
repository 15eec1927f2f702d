//! Planning a pipeline's outputs with DataFusion at load: each output's SQL (and dedup key) is planned against
//! the raw table and the reference tables, and the columns it returns complete the pipeline
//! ([`Pipeline::resolve`]), so a statement that cannot run fails validation instead of a Lambda.

use arrow_schema::SchemaRef;

use super::sql::{self, SqlPlan};
use crate::error::{Error, Result};
use crate::pipeline::{INPUT_TABLE, Pipeline, PlanError, Planned};
use crate::table::layout::TableLayout;

/// Plan every output of `pipeline` and resolve it with what the statements return.
pub fn plan(pipeline: &mut Pipeline) -> Result<()> {
    if pipeline.outputs.is_empty() {
        return Ok(());
    }
    let planned = plan_outputs(pipeline)?;
    pipeline.resolve(planned)
}

/// What each output's SQL returns, in file order (the pipeline itself is not changed).
fn plan_outputs(pipeline: &Pipeline) -> Result<Vec<Planned>> {
    // The raw table's columns as ingest decodes them; the warehouse does not matter for the schema.
    let raw_schema = TableLayout::target(pipeline, "file:///floe")
        .map_err(|e| Error::Config { file: pipeline.file().to_string(), message: e.to_string() })?
        .arrow_schema;
    let ctx = sql::session();
    let register = |name: &str, schema: SchemaRef| {
        sql::register(&ctx, name, schema, vec![]).expect("registering an empty table cannot fail")
    };
    register(INPUT_TABLE, sql::input_schema(&raw_schema));
    for r in &pipeline.references {
        register(&r.name, r.schema.clone());
    }
    Ok(pipeline
        .outputs
        .iter()
        .map(|o| {
            let plan = SqlPlan::new(&ctx, &o.sql).map_err(PlanError::Sql)?;
            let columns = plan
                .schema
                .fields()
                .iter()
                .map(|f| sql::column_type(f.name(), f.data_type()).map(|t| (f.name().clone(), t)))
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(PlanError::Sql)?;
            if let Some(d) = &o.dedup {
                let key_sql = format!("SELECT {} AS dedup_key FROM {INPUT_TABLE}", d.key);
                SqlPlan::new(&ctx, &key_sql).map_err(PlanError::DedupKey)?;
            }
            Ok(columns)
        })
        .collect())
}
