//! Derived outputs of a pipeline: reference tables, SQL transforms, key deduplication and event-time windows.
//! Parsing checks what the file alone decides; [`Pipeline::resolve`] completes each output with the columns its
//! SQL returns (from the planner at load, or from the recorded plan) and checks windows and partition specs
//! against them, so a statement that cannot run never reaches a Lambda.

use std::ops::Range;

use arrow_schema::SchemaRef;

use super::raw::{RawOutput, RawPartitionField, RawReference, RawWindow};
use super::window::{WatermarkSpec, WindowSpec};
use super::{ColumnType, PartitionField, Pipeline, TableName, Validator};
use crate::error::{Error, Result};

/// The name of the decoded stream in SQL.
pub const INPUT_TABLE: &str = "input";

/// A static table the SQL may join, loaded once per process.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    /// Relative to the warehouse, or an absolute `file://` / `s3://` location.
    pub location: String,
    pub format: ReferenceFormat,
    pub columns: Vec<(String, ColumnType)>,
    /// The declared columns as Arrow (what the SQL plans against).
    pub schema: SchemaRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceFormat {
    /// CSV with a header row.
    Csv,
    Parquet,
}

/// One derived output table.
#[derive(Debug, Clone)]
pub struct Output {
    /// The table written: the SQL rows, or the window aggregates when `window` is set.
    pub table: TableName,
    pub sql: String,
    /// Columns the SQL returns, with their Iceberg types (empty until [`Pipeline::resolve`]).
    pub sql_columns: Vec<(String, ColumnType)>,
    /// Partition spec of `table`.
    pub partition: Vec<PartitionField>,
    pub dedup: Option<Dedup>,
    pub window: Option<WindowOutput>,
    /// What parsing left for [`Pipeline::resolve`]; `None` once resolved.
    pending: Option<Box<Pending>>,
}

/// The parts of an output that need the SQL's columns, with their places in the file.
#[derive(Debug, Clone)]
struct Pending {
    index: usize,
    sql_span: Range<usize>,
    dedup_span: Range<usize>,
    partition: Vec<RawPartitionField>,
    window: Option<(RawWindow, WindowDecl)>,
}

/// What parsing decides about a window: its kind, watermark and late-records table.
#[derive(Debug, Clone)]
struct WindowDecl {
    spec: WindowSpec,
    watermark: WatermarkSpec,
    late_table: TableName,
}

/// What a SQL planner found for one output: the columns its statement returns, or why it cannot run.
pub type Planned = std::result::Result<Vec<(String, ColumnType)>, PlanError>;

/// Why an output's SQL cannot run, as its planner says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The output's `sql`.
    Sql(String),
    /// The output's `dedup.key` expression.
    DedupKey(String),
}

/// Drop records whose key was already seen within `horizon_ms` of Kafka record time.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// SQL expression over `input` columns.
    pub key: String,
    pub horizon_ms: i64,
}

/// Event-time aggregation of an output's rows.
#[derive(Debug, Clone)]
pub struct WindowOutput {
    pub spec: WindowSpec,
    pub watermark: WatermarkSpec,
    pub time_column: String,
    /// Type of the time column (window_start/window_end get the same one).
    pub time_type: ColumnType,
    pub group_by: Vec<(String, ColumnType)>,
    pub aggregates: Vec<Aggregate>,
    /// Where records later than the allowed lateness go.
    pub late_table: TableName,
}

/// One aggregate column of a window table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub name: String,
    pub function: AggregateFn,
    /// Input column (`None` for `count(*)`) and its type.
    pub column: Option<(String, ColumnType)>,
    pub output_type: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    ApproxDistinct,
}

/// Column names every window table starts with.
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

impl Output {
    /// The columns of the table this output writes.
    pub fn table_columns(&self) -> Vec<(String, ColumnType)> {
        match &self.window {
            None => self.sql_columns.clone(),
            Some(w) => {
                let mut cols = vec![(WINDOW_START.to_string(), w.time_type.clone())];
                cols.push((WINDOW_END.to_string(), w.time_type.clone()));
                cols.extend(w.group_by.iter().cloned());
                cols.extend(w.aggregates.iter().map(|a| (a.name.clone(), a.output_type.clone())));
                cols
            }
        }
    }
}

/// Columns a late-records table adds to the SQL row.
pub fn late_columns() -> [(&'static str, ColumnType, &'static str); 4] {
    [
        ("late_topic", ColumnType::String, "source topic"),
        ("late_partition", ColumnType::Int, "source partition"),
        ("late_offset", ColumnType::Long, "source offset"),
        ("late_reason", ColumnType::String, "why the record missed its window"),
    ]
}

/// Parse a duration: `250ms`, `10s`, `5m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("`{s}` is not a duration like 250ms, 10s, 5m, 2h or 7d"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` has an unknown unit: use ms, s, m, h or d")),
    };
    n.checked_mul(ms).ok_or_else(|| format!("`{s}` is too long"))
}

impl Validator<'_> {
    pub(super) fn references(&self, raw: &[RawReference]) -> Result<Vec<Reference>> {
        let mut out: Vec<Reference> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let field = |f: &str| format!("reference[{i}].{f}");
            let name = self.identifier(&r.name, &field("name"))?;
            if name == INPUT_TABLE || out.iter().any(|x| x.name == name) {
                return self.err(r.name.span(), &field("name"), format!("table name `{name}` is already used"));
            }
            let format = match r.format.get_ref().as_str() {
                "csv" => ReferenceFormat::Csv,
                "parquet" => ReferenceFormat::Parquet,
                _ => return self.err(r.format.span(), &field("format"), "must be `csv` or `parquet`"),
            };
            if r.location.get_ref().trim().is_empty() {
                return self.err(r.location.span(), &field("location"), "must not be empty");
            }
            let mut columns: Vec<(String, ColumnType)> = Vec::new();
            for (j, c) in r.columns.get_ref().iter().enumerate() {
                let cname = self.identifier(&c.name, &field(&format!("columns[{j}].name")))?;
                let ty = match ColumnType::parse(c.ty.get_ref()) {
                    Ok(t @ (ColumnType::Struct(_) | ColumnType::List { .. } | ColumnType::Map { .. })) => {
                        let msg = format!("reference columns must be primitive, found `{t}`");
                        return self.err(c.ty.span(), &field(&format!("columns[{j}].type")), msg);
                    }
                    Ok(t) => t,
                    Err(m) => return self.err(c.ty.span(), &field(&format!("columns[{j}].type")), m),
                };
                if columns.iter().any(|(n, _)| *n == cname) {
                    return self.err(c.name.span(), &field(&format!("columns[{j}].name")), "column name appears twice");
                }
                columns.push((cname, ty));
            }
            if columns.is_empty() {
                return self.err(r.columns.span(), &field("columns"), "declare at least one column");
            }
            let schema = super::arrow_schema_of(&columns).map_err(|e| Error::Config {
                file: self.file.to_string(),
                message: format!("{}: {e}", field("columns")),
            })?;
            out.push(Reference { name, location: r.location.get_ref().clone(), format, columns, schema });
        }
        Ok(out)
    }

    /// Every output as far as the file decides it: names, SQL text, dedup horizon, window kind and watermark.
    pub(super) fn outputs(
        &self,
        raw: &[RawOutput],
        default_namespace: &str,
        used: &mut Vec<TableName>,
    ) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for (i, o) in raw.iter().enumerate() {
            let field = |f: &str| format!("output[{i}].{f}");
            let table = TableName {
                namespace: match &o.namespace {
                    Some(n) => self.identifier(n, &field("namespace"))?,
                    None => default_namespace.to_string(),
                },
                name: self.identifier(&o.name, &field("name"))?,
            };
            if used.contains(&table) {
                return self.err(o.name.span(), &field("name"), format!("table `{table}` is already written"));
            }
            used.push(table.clone());
            let sql = o.sql.as_ref().map_or_else(|| format!("SELECT * FROM {INPUT_TABLE}"), |s| s.get_ref().clone());
            let sql_span = o.sql.as_ref().map_or(o.name.span(), |s| s.span());
            let dedup = match &o.dedup {
                None => None,
                Some(d) => {
                    let horizon_ms = match parse_duration(d.horizon.get_ref()) {
                        Ok(h) if h > 0 => h,
                        Ok(_) => return self.err(d.horizon.span(), &field("dedup.horizon"), "must be positive"),
                        Err(m) => return self.err(d.horizon.span(), &field("dedup.horizon"), m),
                    };
                    Some(Dedup { key: d.key.get_ref().clone(), horizon_ms })
                }
            };
            let window = match &o.window {
                None => None,
                Some(w) => {
                    let decl = self.window_decl(w, &table, &field("window"))?;
                    if used.contains(&decl.late_table) {
                        let span = w.late_table.as_ref().map_or(w.kind.span(), |t| t.span());
                        let msg = format!("table `{}` is already written", decl.late_table);
                        return self.err(span, &field("window.late_table"), msg);
                    }
                    used.push(decl.late_table.clone());
                    Some((w.clone(), decl))
                }
            };
            outputs.push(Output {
                table,
                sql,
                sql_columns: Vec::new(),
                partition: Vec::new(),
                dedup,
                window: None,
                pending: Some(Box::new(Pending {
                    index: i,
                    sql_span,
                    dedup_span: o.dedup.as_ref().map_or(0..0, |d| d.key.span()),
                    partition: o.partition.clone(),
                    window,
                })),
            });
        }
        Ok(outputs)
    }

    /// Complete one output with the columns its SQL returns.
    fn resolve(&self, output: &mut Output, planned: Planned) -> Result<()> {
        let Some(pending) = output.pending.take() else {
            return Ok(());
        };
        let i = pending.index;
        let field = |f: &str| format!("output[{i}].{f}");
        let sql_columns = match planned {
            Ok(columns) => columns,
            Err(PlanError::Sql(m)) => return self.err(pending.sql_span, &field("sql"), m),
            Err(PlanError::DedupKey(m)) => return self.err(pending.dedup_span, &field("dedup.key"), m),
        };
        for (j, (name, _)) in sql_columns.iter().enumerate() {
            if sql_columns[..j].iter().any(|(n, _)| n == name) {
                let msg = format!("the result has two columns named `{name}`: alias one with AS");
                return self.err(pending.sql_span, &field("sql"), msg);
            }
        }
        output.window = match &pending.window {
            None => None,
            Some((w, decl)) => Some(self.window(w, decl, &sql_columns, &field("window"))?),
        };
        output.sql_columns = sql_columns;
        output.partition = self.partition(&pending.partition, &field("partition"), &output.table_columns())?;
        Ok(())
    }

    /// The parts of a window that do not depend on the SQL's columns.
    fn window_decl(&self, w: &RawWindow, table: &TableName, field: &str) -> Result<WindowDecl> {
        let f = |x: &str| format!("{field}.{x}");
        let duration = |v: &Option<toml::Spanned<String>>, name: &str, default: Option<i64>| -> Result<i64> {
            match (v, default) {
                (Some(v), _) => match parse_duration(v.get_ref()) {
                    Ok(ms) if ms >= 0 => Ok(ms),
                    Ok(_) => self.err(v.span(), &f(name), "must not be negative"),
                    Err(m) => self.err(v.span(), &f(name), m),
                },
                (None, Some(d)) => Ok(d),
                (None, None) => {
                    self.err(w.kind.span(), &f(name), format!("a {} window needs `{name}`", w.kind.get_ref()))
                }
            }
        };
        let spec = match w.kind.get_ref().as_str() {
            "tumbling" => WindowSpec::Tumbling { size_ms: duration(&w.size, "size", None)? },
            "hopping" => WindowSpec::Hopping {
                size_ms: duration(&w.size, "size", None)?,
                hop_ms: duration(&w.hop, "hop", None)?,
            },
            "session" => WindowSpec::Session { gap_ms: duration(&w.gap, "gap", None)? },
            _ => return self.err(w.kind.span(), &f("kind"), "must be `tumbling`, `hopping` or `session`"),
        };
        if let Err(m) = spec.validate() {
            return self.err(w.kind.span(), &f("kind"), m);
        }
        let watermark = WatermarkSpec {
            max_out_of_orderness_ms: duration(&w.max_out_of_orderness, "max_out_of_orderness", Some(0))?,
            idle_timeout_ms: duration(&w.idle_timeout, "idle_timeout", Some(60_000))?,
            allowed_lateness_ms: duration(&w.allowed_lateness, "allowed_lateness", Some(0))?,
        };
        let late_table = TableName {
            namespace: table.namespace.clone(),
            name: match &w.late_table {
                Some(t) => self.identifier(t, &f("late_table"))?,
                None => format!("{}_late", table.name),
            },
        };
        Ok(WindowDecl { spec, watermark, late_table })
    }

    /// A window over the SQL's `columns`: time column, grouping and aggregates.
    fn window(
        &self,
        w: &RawWindow,
        decl: &WindowDecl,
        columns: &[(String, ColumnType)],
        field: &str,
    ) -> Result<WindowOutput> {
        let f = |x: &str| format!("{field}.{x}");
        let find = |name: &toml::Spanned<String>, what: &str| -> Result<(String, ColumnType)> {
            match columns.iter().find(|(n, _)| n == name.get_ref()) {
                Some(c) => Ok(c.clone()),
                None => {
                    let names: Vec<_> = columns.iter().map(|(n, _)| n.as_str()).collect();
                    let msg =
                        format!("the SQL returns no column `{}` (it returns {})", name.get_ref(), names.join(", "));
                    self.err(name.span(), &f(what), msg)
                }
            }
        };
        for (name, _, _) in late_columns() {
            if columns.iter().any(|(n, _)| n == name) {
                let msg = format!("the SQL returns a column `{name}`, which the late-records table adds itself");
                return self.err(w.kind.span(), &f("late_table"), msg);
            }
        }
        let (time_column, time_type) = find(&w.time_column, "time_column")?;
        if !time_type.is_timestamp() {
            return self.err(
                w.time_column.span(),
                &f("time_column"),
                format!("must be a timestamp, not `{time_type}`"),
            );
        }
        let mut group_by: Vec<(String, ColumnType)> = Vec::new();
        for g in &w.group_by {
            let c = find(g, "group_by")?;
            if !groupable(&c.1) {
                let msg = format!("cannot group by a column of type `{}`", c.1);
                return self.err(g.span(), &f("group_by"), msg);
            }
            if [WINDOW_START, WINDOW_END].contains(&c.0.as_str()) || group_by.iter().any(|x| x.0 == c.0) {
                return self.err(g.span(), &f("group_by"), format!("`{}` is already a column", c.0));
            }
            group_by.push(c);
        }
        let mut aggregates: Vec<Aggregate> = Vec::new();
        for a in w.aggregates.get_ref() {
            let agg = match parse_aggregate(a.get_ref(), columns) {
                Ok(agg) => agg,
                Err(m) => return self.err(a.span(), &f("aggregates"), m),
            };
            let taken = [WINDOW_START, WINDOW_END].contains(&agg.name.as_str())
                || group_by.iter().any(|g| g.0 == agg.name)
                || aggregates.iter().any(|x| x.name == agg.name);
            if taken {
                return self.err(a.span(), &f("aggregates"), format!("column name `{}` is already used", agg.name));
            }
            aggregates.push(agg);
        }
        if aggregates.is_empty() {
            return self.err(w.aggregates.span(), &f("aggregates"), "declare at least one aggregate");
        }
        Ok(WindowOutput {
            spec: decl.spec,
            watermark: decl.watermark,
            time_column,
            time_type,
            group_by,
            aggregates,
            late_table: decl.late_table.clone(),
        })
    }
}

impl Pipeline {
    /// Complete the outputs with what their SQL returns, one [`Planned`] per output in file order (from the
    /// SQL planner at load, or from the plan ingest recorded), and check their windows and partition specs
    /// against those columns. Errors name the file, line, column and field like [`Pipeline::parse`]'s.
    pub fn resolve(&mut self, planned: Vec<Planned>) -> Result<()> {
        if planned.len() != self.outputs.len() {
            return Err(Error::Config {
                file: self.source.file.clone(),
                message: format!("{} outputs were planned for {} declared", planned.len(), self.outputs.len()),
            });
        }
        let source = self.source.clone();
        let validator = Validator { text: &source.text, file: &source.file };
        for (output, planned) in self.outputs.iter_mut().zip(planned) {
            validator.resolve(output, planned)?;
        }
        Ok(())
    }

    /// Whether every output knows its columns (always, for a pipeline without outputs).
    pub fn is_resolved(&self) -> bool {
        self.outputs.iter().all(|o| o.pending.is_none())
    }

    /// Fail unless [`Pipeline::resolve`] completed the outputs: layouts and runners need their columns.
    pub fn check_resolved(&self) -> Result<()> {
        match self.outputs.iter().find(|o| o.pending.is_some()) {
            None => Ok(()),
            Some(o) => Err(Error::Config {
                file: self.source.file.clone(),
                message: format!("output {}: its SQL has not been planned yet", o.table),
            }),
        }
    }
}

fn groupable(ty: &ColumnType) -> bool {
    use ColumnType as T;
    matches!(ty, T::Boolean | T::Int | T::Long | T::Date | T::Timestamp | T::Timestamptz | T::String)
}

/// `count(*)`, `count(col)`, `sum(col)`, `min(col)`, `max(col)`, `avg(col)`, `approx_distinct(col)`, each
/// optionally `AS name` (default `<fn>_<col>`, or `count`).
pub fn parse_aggregate(text: &str, columns: &[(String, ColumnType)]) -> std::result::Result<Aggregate, String> {
    let usage = "write an aggregate as `fn(column) AS name`, with fn one of count, sum, min, max, avg, approx_distinct";
    let t = text.trim();
    let open = t.find('(').ok_or_else(|| format!("`{text}`: {usage}"))?;
    let close = t.find(')').filter(|c| *c > open).ok_or_else(|| format!("`{text}`: {usage}"))?;
    let fname = t[..open].trim().to_ascii_lowercase();
    let arg = t[open + 1..close].trim();
    let rest = t[close + 1..].trim();
    let alias = if rest.is_empty() {
        None
    } else {
        let lower = rest.to_ascii_lowercase();
        let name = lower.strip_prefix("as").map(|_| rest[2..].trim()).ok_or_else(|| format!("`{text}`: {usage}"))?;
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(format!("`{text}`: `{name}` is not a column name"));
        }
        Some(name.to_string())
    };
    let function = match fname.as_str() {
        "count" => AggregateFn::Count,
        "sum" => AggregateFn::Sum,
        "min" => AggregateFn::Min,
        "max" => AggregateFn::Max,
        "avg" => AggregateFn::Avg,
        "approx_distinct" => AggregateFn::ApproxDistinct,
        _ => return Err(format!("`{text}`: unknown aggregate `{fname}`; {usage}")),
    };
    let column = if arg == "*" {
        if function != AggregateFn::Count {
            return Err(format!("`{text}`: only count takes `*`"));
        }
        None
    } else {
        let c = columns.iter().find(|(n, _)| n == arg).ok_or_else(|| {
            let names: Vec<_> = columns.iter().map(|(n, _)| n.as_str()).collect();
            format!("`{text}`: the SQL returns no column `{arg}` (it returns {})", names.join(", "))
        })?;
        Some(c.clone())
    };
    use ColumnType as T;
    let numeric = |t: &ColumnType| matches!(t, T::Int | T::Long | T::Float | T::Double);
    let output_type = match (function, column.as_ref().map(|c| &c.1)) {
        (AggregateFn::Count | AggregateFn::ApproxDistinct, _) => T::Long,
        // 128-bit accumulators (see `aggregate`): exact, and wider than a long.
        (AggregateFn::Sum, Some(T::Int | T::Long)) => T::Decimal { precision: 38, scale: 0 },
        (AggregateFn::Sum, Some(T::Float | T::Double)) => T::Double,
        (AggregateFn::Avg, Some(t)) if numeric(t) => T::Double,
        (AggregateFn::Min | AggregateFn::Max, Some(t))
            if numeric(t) || matches!(t, T::Date | T::Timestamp | T::Timestamptz) =>
        {
            match t {
                T::Int => T::Long,
                T::Float => T::Double,
                other => other.clone(),
            }
        }
        (_, Some(t)) => return Err(format!("`{text}`: {fname} cannot take a column of type `{t}`")),
        (_, None) => unreachable!("only count takes *"),
    };
    if function == AggregateFn::ApproxDistinct
        && let Some((_, t)) = &column
        && !(groupable(t) || numeric(t))
    {
        return Err(format!("`{text}`: approx_distinct cannot take a column of type `{t}`"));
    }
    let name = alias.unwrap_or_else(|| match &column {
        None => "count".to_string(),
        Some((c, _)) => format!("{fname}_{c}"),
    });
    Ok(Aggregate { name, function, column, output_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
        assert!(parse_duration("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn aggregates_parse_with_types() {
        let cols = vec![("amount".to_string(), ColumnType::Int), ("user".to_string(), ColumnType::String)];
        let a = parse_aggregate("sum(amount) AS revenue", &cols).unwrap();
        let wide = ColumnType::Decimal { precision: 38, scale: 0 };
        assert_eq!((a.name.as_str(), a.function, a.output_type), ("revenue", AggregateFn::Sum, wide));
        assert_eq!(parse_aggregate("count(*)", &cols).unwrap().name, "count");
        assert_eq!(parse_aggregate("approx_distinct(user)", &cols).unwrap().name, "approx_distinct_user");
        assert_eq!(parse_aggregate("max(amount)", &cols).unwrap().output_type, ColumnType::Long);
        assert!(parse_aggregate("sum(user)", &cols).unwrap_err().contains("cannot take"));
        assert!(parse_aggregate("median(amount)", &cols).unwrap_err().contains("unknown aggregate"));
        assert!(parse_aggregate("sum(*)", &cols).unwrap_err().contains("only count"));
        assert!(parse_aggregate("sum(nope)", &cols).unwrap_err().contains("no column `nope`"));
    }
}
