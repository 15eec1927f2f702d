//! SQL transforms with Apache DataFusion: each output's `SELECT … FROM input` runs over every decoded
//! micro-batch, optionally joined with static reference tables.
//!
//! The SQL must be row-level (projection, filters, scalar functions, joins with reference tables): a micro-batch
//! is an accident of delivery, so aggregates, `DISTINCT`, `ORDER BY` or `LIMIT` over it would give different
//! results for the same stream. Aggregates across records belong in an output's `window`.
//!
//! floe appends the hidden column [`OFFSET_COLUMN`] to the statement's top projection, so every output row
//! carries the source offset of the input record it came from: dead letters, late records and the per-cell
//! offset fences of window state all need it.
//!
//! Plans are built once. At run time the `input` scan is swapped for the batch (no shared mutable catalog, so
//! partitions can run concurrently on one plan).

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, TableScan, col};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use crate::pipeline::INPUT_TABLE;
use crate::pipeline::{ColumnType, StructField};
/// Hidden column with each row's source offset.
pub const OFFSET_COLUMN: &str = "__floe_offset";

/// A session with floe's function set (DataFusion's string, time, regex and unicode functions, plus the JSON
/// functions of `datafusion-functions-json`). One partition: a Lambda has one or two cores and batches are small.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(1).with_batch_size(8192);
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let mut ctx = SessionContext::new_with_config(config);
    datafusion_functions_json::register_all(&mut ctx).expect("registering the JSON functions cannot fail");
    ctx
}

/// The `input` table's schema: the raw table's columns plus the offset column.
pub fn input_schema(table: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = table.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(OFFSET_COLUMN, DataType::Int64, false)));
    Arc::new(Schema::new(fields))
}

/// Append the offset column to a batch of the raw table.
pub fn with_offsets(batch: &RecordBatch, offsets: Vec<i64>, input: &SchemaRef) -> Result<RecordBatch, String> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(offsets)));
    RecordBatch::try_new(input.clone(), columns).map_err(|e| e.to_string())
}

/// One planned output statement.
#[derive(Debug, Clone)]
pub struct SqlPlan {
    plan: LogicalPlan,
    /// Result columns as planned, without the offset column.
    pub schema: SchemaRef,
}

/// Register empty tables of the given schemas (for planning) or real data (at run time).
pub fn register(ctx: &SessionContext, name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<(), String> {
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| e.to_string())?;
    ctx.register_table(name, Arc::new(table)).map_err(|e| e.to_string())?;
    Ok(())
}

impl SqlPlan {
    /// Plan `sql` against `ctx` (which has `input` and the reference tables registered). Errors are the
    /// planner's message or why the statement is not row-level.
    pub fn new(ctx: &SessionContext, sql: &str) -> Result<SqlPlan, String> {
        let plan = futures::executor::block_on(ctx.state().create_logical_plan(sql)).map_err(|e| clean(&e))?;
        check_row_level(&plan)?;
        let LogicalPlan::Projection(projection) = &plan else {
            return Err("the statement must be a SELECT … FROM input (a projection at the top)".into());
        };
        let visible: Vec<Arc<Field>> =
            projection.schema.fields().iter().filter(|f| f.name() != OFFSET_COLUMN).cloned().collect();
        for f in &visible {
            if f.name().starts_with("__floe") {
                return Err(format!("column name `{}` is reserved", f.name()));
            }
        }
        let mut exprs = projection.expr.clone();
        if visible.len() == projection.schema.fields().len() {
            exprs.push(col(OFFSET_COLUMN));
        }
        let plan = LogicalPlanBuilder::from(projection.input.as_ref().clone())
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(|e| format!("cannot carry the source offset through this statement: {}", clean(&e)))?;
        Ok(SqlPlan { plan, schema: Arc::new(Schema::new(visible)) })
    }

    /// Run over one batch of `input` (with its offset column). The result has the planned columns plus the
    /// offset column last.
    pub async fn run(&self, ctx: &SessionContext, input: &RecordBatch) -> Result<Option<RecordBatch>, String> {
        let schema = input.schema();
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::TableScan(scan) if scan.table_name.table() == INPUT_TABLE => {
                    let table = MemTable::try_new(schema.clone(), vec![vec![input.clone()]])?;
                    let source = provider_as_source(Arc::new(table));
                    let scan = TableScan::try_new(scan.table_name, source, scan.projection, scan.filters, scan.fetch)?;
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                other => Ok(Transformed::no(other)),
            })
            .map_err(|e| clean(&e))?
            .data;
        let frame = ctx.execute_logical_plan(plan).await.map_err(|e| clean(&e))?;
        let out_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(|e| clean(&e))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(None);
        }
        concat_batches(&out_schema, &batches).map(Some).map_err(|e| e.to_string())
    }
}

/// A DataFusion error as one line of text for config errors and dead-letter reasons.
fn clean(e: &datafusion::error::DataFusionError) -> String {
    e.to_string().trim().to_string()
}

fn check_row_level(plan: &LogicalPlan) -> Result<(), String> {
    let mut problem = None;
    plan.apply(|node| {
        let what = match node {
            LogicalPlan::Aggregate(_) => Some("aggregates (GROUP BY, count(), sum(), …)"),
            LogicalPlan::Window(_) => Some("window functions (OVER …)"),
            LogicalPlan::Sort(_) => Some("ORDER BY"),
            LogicalPlan::Limit(_) => Some("LIMIT"),
            LogicalPlan::Distinct(_) => Some("DISTINCT"),
            LogicalPlan::Union(_) => Some("UNION"),
            LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_) => {
                Some("statements other than SELECT")
            }
            _ => None,
        };
        if let Some(w) = what {
            problem = Some(w);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| clean(&e))?;
    match problem {
        Some(what) => Err(format!(
            "{what} cannot be used: the SQL runs on each micro-batch, whose boundaries are arbitrary; \
             declare aggregates across records in the output's `window` instead"
        )),
        None => Ok(()),
    }
}

/// The Iceberg column type of a result column, or why it cannot be stored.
pub fn column_type(name: &str, ty: &DataType) -> Result<ColumnType, String> {
    Ok(match ty {
        DataType::Boolean => ColumnType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => ColumnType::Int,
        DataType::Int64 | DataType::UInt32 => ColumnType::Long,
        DataType::Float16 | DataType::Float32 => ColumnType::Float,
        DataType::Float64 => ColumnType::Double,
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => {
            ColumnType::Decimal { precision: u32::from(*p), scale: *s as u32 }
        }
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::Timestamptz,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColumnType::Binary,
        DataType::Struct(fields) => ColumnType::Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(StructField {
                        name: f.name().clone(),
                        ty: column_type(&format!("{name}.{}", f.name()), f.data_type())?,
                        required: false,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        DataType::List(f) | DataType::LargeList(f) => ColumnType::List {
            element: Box::new(column_type(&format!("{name}[]"), f.data_type())?),
            element_required: false,
        },
        DataType::Null => {
            return Err(format!("column `{name}` has no type (a bare NULL?): give it one with CAST(NULL AS …)"));
        }
        other => {
            return Err(format!(
                "column `{name}` has type {other}, which floe cannot store; CAST it to a supported type"
            ));
        }
    })
}

/// Cast a result batch to a table's Arrow schema, column by column and by name.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let column =
                batch.column_by_name(f.name()).ok_or_else(|| format!("result has no column `{}`", f.name()))?;
            arrow_cast::cast(column, f.data_type()).map_err(|e| format!("column `{}`: {e}", f.name()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, StringArray};

    fn input() -> (SessionContext, SchemaRef, RecordBatch) {
        let raw = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Int64, true),
            Field::new("doc", DataType::Utf8, true),
        ]));
        let schema = input_schema(&raw);
        let batch = RecordBatch::try_new(
            raw,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(Int64Array::from(vec![Some(5), None, Some(-1)])),
                Arc::new(StringArray::from(vec![r#"{"k":"x"}"#, r#"{"k":"y"}"#, "{}"])),
            ],
        )
        .unwrap();
        let batch = with_offsets(&batch, vec![10, 11, 12], &schema).unwrap();
        let ctx = session();
        register(&ctx, INPUT_TABLE, schema.clone(), vec![]).unwrap();
        (ctx, schema, batch)
    }

    #[tokio::test]
    async fn projection_filter_and_functions_carry_offsets() {
        let (ctx, _, batch) = input();
        let plan = SqlPlan::new(
            &ctx,
            "SELECT upper(id) AS id, amount * 2 AS doubled, json_get_str(doc, 'k') AS k FROM input WHERE amount > 0",
        )
        .unwrap();
        let names: Vec<_> = plan.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "doubled", "k"]);
        let out = plan.run(&ctx, &batch).await.unwrap().unwrap();
        assert_eq!(out.num_rows(), 1);
        let offsets = out.column_by_name(OFFSET_COLUMN).unwrap();
        assert_eq!(offsets.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 10);
        let k = arrow_cast::cast(out.column_by_name("k").unwrap(), &DataType::Utf8).unwrap();
        assert_eq!(k.as_any().downcast_ref::<StringArray>().unwrap().value(0), "x");
    }

    #[test]
    fn aggregates_and_unknown_columns_are_rejected_at_plan_time() {
        let (ctx, _, _) = input();
        let e = SqlPlan::new(&ctx, "SELECT count(*) FROM input").unwrap_err();
        assert!(e.contains("aggregates"), "{e}");
        let e = SqlPlan::new(&ctx, "SELECT id FROM input ORDER BY id").unwrap_err();
        assert!(e.contains("ORDER BY"), "{e}");
        let e = SqlPlan::new(&ctx, "SELECT nope FROM input").unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e =
            SqlPlan::new(&ctx, "SELECT NULL AS x FROM input").map(|p| column_type("x", p.schema.field(0).data_type()));
        assert!(e.unwrap().unwrap_err().contains("CAST(NULL"));
    }

    #[tokio::test]
    async fn a_row_that_fails_at_run_time_fails_the_batch() {
        let (ctx, _, batch) = input();
        let plan = SqlPlan::new(&ctx, "SELECT CAST(doc AS INT) AS n FROM input").unwrap();
        let e = plan.run(&ctx, &batch).await.unwrap_err();
        assert!(e.contains("Cannot cast") || e.contains("cast"), "{e}");
    }
}
