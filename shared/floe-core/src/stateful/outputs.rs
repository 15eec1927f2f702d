//! Running a pipeline's derived outputs on one topic-partition batch: dedup, SQL (with failing rows isolated
//! and dead-lettered), then either rows for the output table or window pre-aggregation plus late rows.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use arrow_select::filter::filter_record_batch;
use arrow_select::take::take_record_batch;
use datafusion::prelude::SessionContext;
use iceberg::io::FileIO;

use crate::error::{Error, Result};
use crate::input::event::{SourcePartition, SourceRecord};
use crate::pipeline::{Output, Pipeline, Reference, ReferenceFormat};
use crate::stateful::rows::WindowRows;
use crate::stateful::sql::{self, INPUT_TABLE, OFFSET_COLUMN, SqlPlan};
use crate::stateful::store::StreamStore;
use crate::stateful::update;
use crate::table::adapt::adapt;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// One output, planned and ready to run.
pub struct OutputRunner {
    pub output: Output,
    /// `<pipeline>/<table>`: the state scope of dedup keys and windows.
    pub scope: String,
    plan: SqlPlan,
    key_plan: Option<SqlPlan>,
    /// Writes the output rows, or the late rows of a windowed output.
    pub writer: TableWriter,
}

/// What running the outputs on one batch produced.
#[derive(Default)]
pub struct OutputsResult {
    /// (table writer index, batch) to write and stage.
    pub batches: Vec<(usize, RecordBatch)>,
    /// Offsets of records a transform failed on, with the reason.
    pub failures: Vec<(i64, String)>,
    pub duplicates: u64,
    pub late: u64,
}

/// All outputs of a pipeline with their SQL session (reference tables loaded).
pub struct Outputs {
    ctx: SessionContext,
    /// The rows of the pipeline file's columns (the SQL's view, whatever automatic evolution adds to the table).
    rows: arrow_schema::SchemaRef,
    input: arrow_schema::SchemaRef,
    pub runners: Vec<OutputRunner>,
}

impl Outputs {
    /// The outputs of `pipeline` over rows of `raw`; `layouts[i]` is the table output `i` stages files for (see
    /// [`TableLayout::staged_for`]), bound to the table in the catalog.
    pub async fn new(
        pipeline: &Pipeline,
        warehouse: &str,
        file_io: &FileIO,
        raw: &TableLayout,
        layouts: Vec<TableLayout>,
    ) -> Result<Outputs> {
        let ctx = sql::session();
        let input = sql::input_schema(&raw.input);
        let config_err = |m: String| Error::Config { file: "pipeline".into(), message: m };
        sql::register(&ctx, INPUT_TABLE, input.clone(), vec![]).map_err(config_err)?;
        for r in &pipeline.references {
            let batches = load_reference(r, warehouse, pipeline.base.as_deref(), file_io).await?;
            sql::register(&ctx, &r.name, r.schema.clone(), batches).map_err(config_err)?;
        }
        let mut runners = Vec::new();
        if layouts.len() != pipeline.outputs.len() {
            return Err(Error::Invariant(format!("{} outputs but {} layouts", pipeline.outputs.len(), layouts.len())));
        }
        for (o, layout) in pipeline.outputs.iter().zip(layouts) {
            let plan = SqlPlan::new(&ctx, &o.sql).map_err(|m| config_err(format!("output {}: {m}", o.table)))?;
            let key_plan = match &o.dedup {
                None => None,
                Some(d) => Some(
                    SqlPlan::new(&ctx, &format!("SELECT {} AS dedup_key FROM {INPUT_TABLE}", d.key))
                        .map_err(|m| config_err(format!("output {} dedup key: {m}", o.table)))?,
                ),
            };
            runners.push(OutputRunner {
                output: o.clone(),
                scope: format!("{}/{}", pipeline.name, o.table),
                plan,
                key_plan,
                writer: TableWriter::new(layout, file_io.clone())?,
            });
        }
        Ok(Outputs { ctx, rows: raw.input.clone(), input, runners })
    }

    /// Run every output over the decoded rows of one partition batch. `rows_records[i]` is the record index of
    /// row i of `batch`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        state: &dyn StreamStore,
        source: &SourcePartition,
        records: &[SourceRecord],
        batch: &RecordBatch,
        rows_records: &[usize],
        last_offset: i64,
        now_ms: i64,
    ) -> Result<OutputsResult> {
        let offsets: Vec<i64> = rows_records.iter().map(|i| records[*i].offset).collect();
        let batch = adapt(batch.clone(), &self.rows)?;
        let input = sql::with_offsets(&batch, offsets, &self.input).map_err(internal)?;
        let mut result = OutputsResult::default();
        for (index, runner) in self.runners.iter().enumerate() {
            let mut input = input.clone();
            if let (Some(d), Some(key_plan)) = (&runner.output.dedup, &runner.key_plan) {
                let (keep, failed) =
                    self.dedup(state, runner, d.horizon_ms, key_plan, source, records, rows_records, &input).await?;
                let what = format!("output {} dedup key", runner.output.table);
                result.failures.extend(failed.into_iter().map(|(o, m)| (o, format!("{what}: {m}"))));
                result.duplicates += keep.iter().filter(|k| !**k).count() as u64;
                input = filter_record_batch(&input, &BooleanArray::from(keep))?;
            }
            let (out, failures) = self.run_isolated(&runner.plan, input).await;
            let what = format!("output {}", runner.output.table);
            result.failures.extend(failures.into_iter().map(|(o, m)| (o, format!("{what}: {m}"))));
            let Some(out) = out else { continue };
            match &runner.output.window {
                None => {
                    let rows = sql::conform(&out, &runner.writer.layout().input)
                        .map_err(|m| internal(format!("{what}: {m}")))?;
                    result.batches.push((index, rows));
                }
                Some(window) => {
                    let offsets = out_offsets(&out)?;
                    let rows = WindowRows::extract(&out, window, offsets.clone())
                        .map_err(|m| internal(format!("{what}: {m}")))?;
                    let late =
                        update::apply_windows(state, &runner.scope, window, source, &rows, last_offset, now_ms).await?;
                    if !late.is_empty() {
                        result.late += late.len() as u64;
                        let idx = Int64Array::from(late.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>());
                        let taken = take_record_batch(&out, &idx)?;
                        let n = late.len();
                        let mut columns: Vec<ArrayRef> = Vec::new();
                        let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
                        for (name, _) in &runner.output.sql_columns {
                            let (_, f) = taken
                                .schema()
                                .column_with_name(name)
                                .map(|(i, f)| (i, Arc::new(f.clone())))
                                .ok_or_else(|| internal(format!("no column {name}")))?;
                            columns.push(taken.column_by_name(name).expect("found above").clone());
                            fields.push(f);
                        }
                        let extra: [(&str, ArrayRef); 4] = [
                            ("late_topic", Arc::new(StringArray::from(vec![source.topic.as_str(); n]))),
                            ("late_partition", Arc::new(Int32Array::from(vec![source.partition; n]))),
                            (
                                "late_offset",
                                Arc::new(Int64Array::from(late.iter().map(|(i, _)| offsets[*i]).collect::<Vec<_>>())),
                            ),
                            (
                                "late_reason",
                                Arc::new(StringArray::from(late.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>())),
                            ),
                        ];
                        for (name, col) in extra {
                            fields.push(Arc::new(arrow_schema::Field::new(name, col.data_type().clone(), true)));
                            columns.push(col);
                        }
                        let schema = Arc::new(arrow_schema::Schema::new(fields));
                        let late_batch = RecordBatch::try_new(schema, columns)?;
                        let rows = sql::conform(&late_batch, &runner.writer.layout().input)
                            .map_err(|m| internal(format!("{what} late rows: {m}")))?;
                        result.batches.push((index, rows));
                    }
                }
            }
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn dedup(
        &self,
        state: &dyn StreamStore,
        runner: &OutputRunner,
        horizon_ms: i64,
        key_plan: &SqlPlan,
        source: &SourcePartition,
        records: &[SourceRecord],
        rows_records: &[usize],
        input: &RecordBatch,
    ) -> Result<(Vec<bool>, Vec<(i64, String)>)> {
        let n = input.num_rows();
        // A record whose key cannot be computed is kept out of the deduplicated stream and dead-lettered.
        let (keys_out, failures) = self.run_isolated(key_plan, input.clone()).await;
        let mut keys: Vec<Option<String>> = vec![None; n];
        let mut failed = vec![false; n];
        let row_of: std::collections::HashMap<i64, usize> =
            rows_records.iter().enumerate().map(|(row, i)| (records[*i].offset, row)).collect();
        for (offset, _) in &failures {
            if let Some(r) = row_of.get(offset) {
                failed[*r] = true;
            }
        }
        if let Some(out) = keys_out {
            let key = arrow_cast::cast(out.column(0), &DataType::Utf8)?;
            let key = key.as_string::<i32>();
            for (k, offset) in out_offsets(&out)?.into_iter().enumerate() {
                if let Some(r) = row_of.get(&offset) {
                    keys[*r] = (!key.is_null(k)).then(|| key.value(k).to_string());
                }
            }
        }
        let positions: Vec<(i64, i64)> =
            rows_records.iter().map(|i| (records[*i].offset, records[*i].timestamp_ms.unwrap_or(0))).collect();
        let mut keep = update::dedup(state, &runner.scope, source, horizon_ms, &keys, &positions).await?;
        for (k, f) in keep.iter_mut().zip(failed) {
            *k &= !f;
        }
        Ok((keep, failures))
    }

    /// Run a plan; when the batch fails, bisect so only the rows that fail are reported (by offset).
    async fn run_isolated(&self, plan: &SqlPlan, input: RecordBatch) -> (Option<RecordBatch>, Vec<(i64, String)>) {
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        let mut stack = vec![input];
        while let Some(part) = stack.pop() {
            if part.num_rows() == 0 {
                continue;
            }
            match plan.run(&self.ctx, &part).await {
                Ok(Some(b)) => ok.push(b),
                Ok(None) => {}
                Err(m) if part.num_rows() == 1 => {
                    let offset =
                        part.column_by_name(OFFSET_COLUMN).map_or(-1, |c| c.as_primitive::<Int64Type>().value(0));
                    failures.push((offset, m));
                }
                Err(_) => {
                    let half = part.num_rows() / 2;
                    // Pushed in reverse so the first half runs first and output keeps source order.
                    stack.push(part.slice(half, part.num_rows() - half));
                    stack.push(part.slice(0, half));
                }
            }
        }
        failures.sort_by_key(|(o, _)| *o);
        if ok.is_empty() {
            return (None, failures);
        }
        let schema = ok[0].schema();
        match arrow_select::concat::concat_batches(&schema, &ok) {
            Ok(b) => (Some(b), failures),
            Err(e) => (None, vec![(-1, e.to_string())]),
        }
    }
}

fn out_offsets(out: &RecordBatch) -> Result<Vec<i64>> {
    let c = out.column_by_name(OFFSET_COLUMN).ok_or_else(|| internal("result lost the offset column".into()))?;
    Ok(c.as_primitive::<Int64Type>().values().to_vec())
}

fn internal(message: String) -> Error {
    Error::state(format!("transform: {message}"), false)
}

/// Where a reference table is: `{warehouse}/…` under the warehouse, an absolute path or URI as written, and
/// anything else relative to the pipeline file's location.
pub fn reference_location(location: &str, warehouse: &str, base: Option<&str>) -> std::result::Result<String, String> {
    if let Some(rest) = location.strip_prefix("{warehouse}/") {
        return Ok(format!("{}/{rest}", warehouse.trim_end_matches('/')));
    }
    if location.contains("://") || location.starts_with('/') {
        return Ok(location.to_string());
    }
    let base =
        base.ok_or("a relative location needs the pipeline file's location; use {warehouse}/… or an absolute one")?;
    Ok(format!("{}/{location}", base.trim_end_matches('/')))
}

/// Read a reference table into memory with its declared schema.
async fn load_reference(
    r: &Reference,
    warehouse: &str,
    base: Option<&str>,
    file_io: &FileIO,
) -> Result<Vec<RecordBatch>> {
    let config_error = |message: String| Error::Config {
        file: "pipeline".into(),
        message: format!("reference table `{}`: {message}", r.name),
    };
    let location = reference_location(&r.location, warehouse, base).map_err(config_error)?;
    let local = location.strip_prefix("file://").or_else(|| (!location.contains("://")).then_some(location.as_str()));
    let read = match local {
        Some(path) => tokio::fs::read(path).await.map(bytes::Bytes::from).map_err(|e| e.to_string()),
        None => match file_io.new_input(&location) {
            Ok(input) => input.read().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    let bytes = read.map_err(|e| config_error(format!("cannot read {location}: {e}")))?;
    let bad = |e: String| Error::Config {
        file: "pipeline".into(),
        message: format!("reference table `{}` ({location}): {e}", r.name),
    };
    let batches = match r.format {
        ReferenceFormat::Csv => {
            let reader = arrow_csv::ReaderBuilder::new(r.schema.clone())
                .with_header(true)
                .build(std::io::Cursor::new(bytes))
                .map_err(|e| bad(e.to_string()))?;
            reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?
        }
        ReferenceFormat::Parquet => {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| bad(e.to_string()))?
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let mut out = Vec::new();
            for b in reader {
                let b = b.map_err(|e| bad(e.to_string()))?;
                out.push(sql::conform(&b, &r.schema).map_err(bad)?);
            }
            out
        }
    };
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use iceberg::io::{FileIOBuilder, LocalFsStorageFactory};

    use crate::pipeline::ColumnType;

    fn reference(location: &str, format: ReferenceFormat) -> Reference {
        let columns = vec![("code".to_string(), ColumnType::String), ("rank".to_string(), ColumnType::Int)];
        let schema = crate::pipeline::arrow_schema_of(&columns).unwrap();
        Reference { name: "r".into(), location: location.into(), format, columns, schema }
    }

    #[test]
    fn reference_locations() {
        let wh = "s3://b/warehouse/";
        assert_eq!(reference_location("{warehouse}/ref/a.csv", wh, None).unwrap(), "s3://b/warehouse/ref/a.csv");
        assert_eq!(reference_location("ref/a.csv", wh, Some("s3://b/floe")).unwrap(), "s3://b/floe/ref/a.csv");
        assert_eq!(reference_location("/data/a.csv", wh, Some("s3://b/floe")).unwrap(), "/data/a.csv");
        assert_eq!(reference_location("s3://c/a.parquet", wh, None).unwrap(), "s3://c/a.parquet");
        assert!(reference_location("ref/a.csv", wh, None).unwrap_err().contains("{warehouse}"));
    }

    #[tokio::test]
    async fn csv_and_parquet_reference_tables_load_with_the_declared_schema() {
        let dir = tempfile::tempdir().unwrap();
        let io = FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
        std::fs::write(dir.path().join("r.csv"), "code,rank\nDE,1\nFR,\n").unwrap();
        let base = dir.path().display().to_string();
        let csv = load_reference(&reference("r.csv", ReferenceFormat::Csv), "", Some(&base), &io).await.unwrap();
        assert_eq!(csv.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert!(csv[0].column(1).is_null(1));

        // Parquet written with other (but castable) types: loaded as declared.
        let written = RecordBatch::try_from_iter([
            ("code", Arc::new(StringArray::from(vec!["US"])) as ArrayRef),
            ("rank", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
        ])
        .unwrap();
        let file = std::fs::File::create(dir.path().join("r.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, written.schema(), None).unwrap();
        writer.write(&written).unwrap();
        writer.close().unwrap();
        let r = reference(&format!("{base}/r.parquet"), ReferenceFormat::Parquet);
        let pq = load_reference(&r, "", None, &io).await.unwrap();
        assert_eq!(pq[0].column(1).as_primitive::<arrow_array::types::Int32Type>().value(0), 7);

        let missing = load_reference(&reference("nope.csv", ReferenceFormat::Csv), "", Some(&base), &io).await;
        let message = missing.err().unwrap().to_string();
        assert!(message.contains("reference table `r`") && message.contains("cannot read"), "{message}");
    }
}
