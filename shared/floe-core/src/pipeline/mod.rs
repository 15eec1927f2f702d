//! The pipeline file: one TOML file per deployment naming the source topics, the target table (schema, column
//! sources, partition spec, file size) and the dead-letter table. It is validated completely when loaded, and
//! every error names the file, line, column and field at fault.
//!
//! Validation has two steps. [`Pipeline::parse`] checks everything that the file alone decides. What an output's
//! SQL returns is known only to a SQL planner (DataFusion, in `stateful`) or from the plan ingest recorded; the
//! columns it reports complete the outputs in [`Pipeline::resolve`], which checks windows and partition specs
//! against them with the same file/line/column messages. This module plans nothing itself, so it sits at the
//! bottom of the crate.

mod changes;
mod columns;
mod format;
mod outputs;
mod raw;
mod routing;
mod schema;
mod types;
pub mod window;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use iceberg::spec::Transform;
use toml::Spanned;

pub use changes::{CHANGE_ENVELOPE, ChangeFormat, Changes};
pub use format::{Framing, RegistrySpec, SourceFormat, ValueFormat};
pub use outputs::{
    Aggregate, AggregateFn, Dedup, INPUT_TABLE, Output, PlanError, Planned, Reference, ReferenceFormat, WINDOW_END,
    WINDOW_START, WindowOutput, late_columns,
};
pub use routing::{Route, RouteOn, check_routes, topic_matches};
pub use schema::arrow_schema_of;
pub(crate) use schema::{field, type_name};
pub use types::{ColumnType, StructField};

use crate::error::{Error, Result};
use raw::{RawPartitionField, RawPipeline, RawTable};

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Stable pipeline name; scopes offset fences and file names. Changing it restarts from the ESM's position.
    pub name: String,
    /// Topic names, or patterns with `*` (see [`Pipeline::reads_topic`]).
    pub topics: Vec<String>,
    /// Which records of its topics this pipeline takes, when several pipelines split a topic.
    pub route: Option<Route>,
    /// How record values are encoded, and for registry formats their framing and registry.
    pub format: SourceFormat,
    pub table: TableSpec,
    pub dead_letter: TableName,
    /// Static tables the output SQL may join.
    pub references: Vec<Reference>,
    /// Derived tables (SQL transforms, deduplicated streams, window aggregates).
    pub outputs: Vec<Output>,
    /// A change stream (`source.changes`): records upsert and delete rows by primary key; `None` appends.
    pub changes: Option<Changes>,
    /// Where the pipeline file was loaded from (a directory path or an `s3://` prefix): relative reference-table
    /// locations resolve against it, so small tables can ship beside the pipeline file.
    pub base: Option<String>,
    /// The file as read, for error positions found after parsing (see [`Pipeline::resolve`]).
    source: Arc<Source>,
    /// Where the keys [`check_routes`] reports on are in the file.
    spans: routing::RouteSpans,
}

/// The text of a pipeline file and the name errors give it.
#[derive(Debug)]
struct Source {
    file: String,
    text: String,
}

/// Table property naming the Parquet codec (Iceberg's standard key).
pub const COMPRESSION_CODEC_PROPERTY: &str = "write.parquet.compression-codec";
/// Table-maintenance properties floe reads (see the compactor's expiry and metadata cleanup), checked here so a
/// bad value fails validation instead of a compactor run.
pub const MAINTENANCE_PROPERTIES: [(&str, &str); 9] = [
    ("history.expire.max-snapshot-age-ms", "a positive number of milliseconds"),
    ("history.expire.min-snapshots-to-keep", "a positive count"),
    ("write.metadata.previous-versions-max", "a positive count"),
    ("write.metadata.delete-after-commit.enabled", "true or false"),
    ("commit.manifest-merge.enabled", "true or false"),
    ("commit.manifest.min-count-to-merge", "a positive count"),
    ("commit.manifest.target-size-bytes", "a positive number of bytes"),
    ("floe.rewrite.min-input-files", "a count (0 turns rewrites off)"),
    ("floe.orphans.older-than-ms", "a number of milliseconds of at least 3600000 (one hour)"),
];

/// The shortest safety window of orphan removal (`floe.orphans.older-than-ms`): well over the longest Lambda
/// invocation (15 minutes) that can sit between writing a file and referencing it.
pub const MIN_ORPHAN_AGE_MS: i64 = 60 * 60 * 1000;

fn maintenance_value_ok(key: &str, value: &str) -> bool {
    match key {
        "write.metadata.delete-after-commit.enabled" | "commit.manifest-merge.enabled" => {
            value == "true" || value == "false"
        }
        "floe.rewrite.min-input-files" => value.parse::<u64>().is_ok(),
        "floe.orphans.older-than-ms" => value.parse::<i64>().is_ok_and(|n| n >= MIN_ORPHAN_AGE_MS),
        _ => value.parse::<i64>().is_ok_and(|n| n > 0),
    }
}

/// Namespace and table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// The target table as declared.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: TableName,
    pub columns: Vec<Column>,
    pub partition: Vec<PartitionField>,
    pub target_file_size: usize,
    pub properties: BTreeMap<String, String>,
    /// Whether fields seen in records but not declared become columns (`table.evolve`).
    pub evolve: Evolve,
}

/// `table.evolve`: what happens to a field the records have and the table does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Evolve {
    /// `none` (the default): the table has the declared columns; other fields are not kept.
    #[default]
    Declared,
    /// `add-fields`: such fields are added to the table as optional columns with types inferred from their
    /// values (see [`crate::input::discover`]), at most `max_new_columns` of them (counted at any depth) beyond
    /// those the pipeline file declares.
    AddFields { max_new_columns: usize },
    /// `registry` (Avro and Protobuf): every field of the writer schemas the records name becomes an optional
    /// column ([`crate::input::writer_columns`]), so a new schema version evolves the table before its records
    /// are decoded; at most `max_new_columns` beyond the declared ones.
    Registry { max_new_columns: usize },
}

impl Evolve {
    /// How many columns (at any depth) the table may gain beyond the declared ones, when it evolves by itself.
    pub fn max_new_columns(self) -> Option<usize> {
        match self {
            Evolve::Declared => None,
            Evolve::AddFields { max_new_columns } | Evolve::Registry { max_new_columns } => Some(max_new_columns),
        }
    }
}

/// `table.max_new_columns` when not set.
pub const DEFAULT_MAX_NEW_COLUMNS: i64 = 100;

/// One column of the target table and where its values come from.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub required: bool,
    pub source: ColumnSource,
    pub doc: Option<String>,
    /// The name this column had in the table before a pipeline edit renamed it (`renamed_from`): the table's
    /// column of that name is renamed in place, keeping its field id and data. Renames are never guessed.
    pub renamed_from: Option<String>,
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// A path of object keys into the JSON value (`$.user.id`).
    Value {
        path: Vec<String>,
        format: TimestampFormat,
    },
    /// The Kafka record key (`@key`), as UTF-8 text or raw bytes.
    Key,
    /// A path into the decoded key (`@key.<path>`, with `source.key_format`).
    KeyPath {
        path: Vec<String>,
        format: TimestampFormat,
    },
    /// The record value as received (`@value`): raw bytes, or text when the column is a string (a JSON value is
    /// always UTF-8; one that is not is a `json` dead letter). Keeps the original event beside the parsed columns
    /// for reprocessing.
    RawValue,
    /// The Kafka record timestamp (`@timestamp`).
    Timestamp,
    /// `@topic`, `@partition`, `@offset`.
    Topic,
    Partition,
    Offset,
    /// One Kafka header by name (`@header.<name>`); the last value wins when a name repeats.
    Header(String),
}

/// How a JSON value is read into a timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    /// RFC 3339 / ISO 8601 strings (arrow-json's parser).
    #[default]
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    EpochMicros,
}

/// One field of the partition spec.
#[derive(Debug, Clone)]
pub struct PartitionField {
    pub column: String,
    pub transform: Transform,
    pub name: String,
}

/// Default target size of a data file.
pub const DEFAULT_TARGET_FILE_SIZE_MB: i64 = 128;

impl Pipeline {
    /// Read and validate a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config { file: path.display().to_string(), message: format!("cannot read: {e}") })?;
        let mut pipeline = Pipeline::parse(&text, &path.display().to_string())?;
        let dir = std::path::absolute(path).ok().and_then(|p| p.parent().map(|d| d.display().to_string()));
        pipeline.base = dir;
        Ok(pipeline)
    }

    /// Validate pipeline text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Pipeline> {
        let raw: RawPipeline = toml::from_str(text).map_err(|e| Error::Config {
            file: file.to_string(),
            message: match e.span() {
                Some(span) => format!("{}: {}", position(text, &span), e.message()),
                None => e.message().to_string(),
            },
        })?;
        Validator { text, file }.pipeline(raw)
    }

    /// The file name errors use.
    pub fn file(&self) -> &str {
        &self.source.file
    }

    /// A stable hash of everything planning the outputs' SQL reads: the raw table's columns (names, types,
    /// nullability), the reference tables' columns, and each output's table, SQL and dedup key. Equal
    /// fingerprints plan to the same columns, whatever else differs (comments, partitioning, file sizes).
    pub fn plan_fingerprint(&self) -> u64 {
        use std::fmt::Write;
        let mut canonical = String::new();
        for c in &self.table.columns {
            let _ = writeln!(canonical, "column\t{}\t{}\t{}", c.name, c.ty, c.required);
        }
        for r in &self.references {
            let columns: Vec<String> = r.columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
            let _ = writeln!(canonical, "reference\t{}\t{}", r.name, columns.join(", "));
        }
        for o in &self.outputs {
            let key = o.dedup.as_ref().map_or("", |d| d.key.as_str());
            let _ = writeln!(canonical, "output\t{}\t{:?}\t{key:?}", o.table, o.sql);
        }
        crate::hash::hash64(canonical.as_bytes())
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.table.columns.iter().find(|c| c.name == name)
    }
}

/// "line L, column C" of a byte offset.
fn position(text: &str, span: &Range<usize>) -> String {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, span: Range<usize>, field: &str, message: impl std::fmt::Display) -> Result<T> {
        Err(Error::Config {
            file: self.file.to_string(),
            message: format!("{}: `{field}`: {message}", position(self.text, &span)),
        })
    }

    fn identifier(&self, value: &Spanned<String>, field: &str) -> Result<String> {
        let v = value.get_ref();
        let ok = !v.is_empty()
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !v.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return self.err(
                value.span(),
                field,
                format!("`{v}` must be a non-empty name of letters, digits and `_`, not starting with a digit"),
            );
        }
        Ok(v.clone())
    }

    fn pipeline(&self, raw: RawPipeline) -> Result<Pipeline> {
        let name = raw.name.get_ref().clone();
        let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return self.err(raw.name.span(), "name", "must be non-empty letters, digits, `_` or `-`");
        }

        let format = self.source_format(&raw)?;
        let (topics, topic_spans) = self.topics(&raw.source)?;
        let route = self.route(&raw.source, format.value)?;

        let table_name = TableName {
            namespace: self.identifier(&raw.table.namespace, "table.namespace")?,
            name: self.identifier(&raw.table.name, "table.name")?,
        };
        let target_file_size = match &raw.table.target_file_size_mb {
            Some(v) if !(1..=4096).contains(v.get_ref()) => {
                return self.err(v.span(), "table.target_file_size_mb", "must be between 1 and 4096");
            }
            Some(v) => *v.get_ref(),
            None => DEFAULT_TARGET_FILE_SIZE_MB,
        } as usize
            * 1024
            * 1024;

        if let Some(codec) = raw.table.properties.get(COMPRESSION_CODEC_PROPERTY)
            && !["zstd", "uncompressed"].contains(&codec.as_str())
        {
            return self.err(
                raw.table.name.span(),
                &format!("table.properties.\"{}\"", COMPRESSION_CODEC_PROPERTY),
                format!("codec `{codec}` is not supported: use zstd or uncompressed"),
            );
        }
        for (key, want) in MAINTENANCE_PROPERTIES {
            if let Some(value) = raw.table.properties.get(key)
                && !maintenance_value_ok(key, value)
            {
                return self.err(
                    raw.table.name.span(),
                    &format!("table.properties.\"{key}\""),
                    format!("`{value}` is not {want}"),
                );
            }
        }
        let evolve = self.evolve(&raw.table)?;
        let mut columns: Vec<Column> = Vec::new();
        for (i, c) in raw.table.columns.get_ref().iter().enumerate() {
            let column = self.column(i, c)?;
            if columns.iter().any(|x| x.name == column.name) {
                return self.err(c.name.span(), &format!("table.columns[{i}].name"), "column name appears twice");
            }
            columns.push(column);
        }
        if columns.is_empty() && !matches!(evolve, Evolve::Registry { .. }) {
            return self.err(
                raw.table.columns.span(),
                "table.columns",
                "declare at least one column (only `evolve = \"registry\"` takes them all from the writer schemas)",
            );
        }
        self.check_paths_disjoint(&raw.table.columns, &columns)?;
        self.check_renames(&raw.table.columns, &columns)?;

        let changes = self.changes(&raw, &columns, evolve)?;
        self.check_registry_columns(&raw, &format, &columns, evolve)?;

        let typed: Vec<(String, ColumnType)> = columns.iter().map(|c| (c.name.clone(), c.ty.clone())).collect();
        let partition = self.partition(&raw.table.partition, "table.partition", &typed)?;

        let dead_letter = match &raw.dead_letter {
            None => {
                TableName { namespace: table_name.namespace.clone(), name: format!("{}_dead_letters", table_name.name) }
            }
            Some(d) => TableName {
                namespace: match &d.namespace {
                    Some(n) => self.identifier(n, "dead_letter.namespace")?,
                    None => table_name.namespace.clone(),
                },
                name: match &d.table {
                    Some(n) => self.identifier(n, "dead_letter.table")?,
                    None => format!("{}_dead_letters", table_name.name),
                },
            },
        };
        if dead_letter == table_name {
            let span = raw.dead_letter.as_ref().and_then(|d| d.table.as_ref()).map_or(0..0, |t| t.span());
            return self.err(span, "dead_letter.table", "must differ from the target table");
        }

        let mut used = vec![table_name.clone(), dead_letter.clone()];
        let references = self.references(&raw.reference)?;
        let outputs = self.outputs(&raw.output, &table_name.namespace, &mut used)?;
        let spans = routing::RouteSpans { name: raw.name.span(), topics: topic_spans };
        Ok(Pipeline {
            name,
            topics,
            route,
            format,
            table: TableSpec {
                name: table_name,
                columns,
                partition,
                target_file_size,
                properties: raw.table.properties,
                evolve,
            },
            dead_letter,
            references,
            outputs,
            changes,
            base: None,
            source: Arc::new(Source { file: self.file.to_string(), text: self.text.to_string() }),
            spans,
        })
    }

    /// Partition fields over `columns` (name, type), validated; `field` names the list in errors.
    fn partition(
        &self,
        raw: &[RawPartitionField],
        field: &str,
        columns: &[(String, ColumnType)],
    ) -> Result<Vec<PartitionField>> {
        let mut partition = Vec::new();
        let mut partition_names = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let Some((column_name, column_ty)) = columns.iter().find(|(n, _)| n == p.column.get_ref()) else {
                return self.err(p.column.span(), &format!("{field}.column"), "no such column");
            };
            let transform = match Transform::from_str(p.transform.get_ref()) {
                Ok(
                    t @ (Transform::Identity
                    | Transform::Year
                    | Transform::Month
                    | Transform::Day
                    | Transform::Hour
                    | Transform::Bucket(_)
                    | Transform::Truncate(_)),
                ) => t,
                _ => {
                    return self.err(
                        p.transform.span(),
                        &format!("{field}.transform"),
                        "must be identity, year, month, day, hour, bucket[N] or truncate[W]",
                    );
                }
            };
            if let Err(msg) = transform_accepts(&transform, column_ty) {
                return self.err(p.transform.span(), &format!("{field}.transform"), msg);
            }
            let name = match &p.name {
                Some(n) => self.identifier(n, &format!("{field}.name"))?,
                None => default_partition_name(column_name, &transform),
            };
            if !partition_names.insert(name.clone()) || columns.iter().any(|(c, _)| *c == name && c != column_name) {
                let span = p.name.as_ref().map_or(p.column.span(), |n| n.span());
                return self.err(span, &format!("{field}.name"), format!("partition name `{name}` is already used"));
            }
            partition.push(PartitionField { column: column_name.clone(), transform, name });
        }
        Ok(partition)
    }

    fn evolve(&self, t: &RawTable) -> Result<Evolve> {
        let mode = match &t.evolve {
            None => "none",
            Some(v) => match v.get_ref().as_str() {
                m @ ("none" | "add-fields" | "registry") => m,
                other => {
                    return self.err(
                        v.span(),
                        "table.evolve",
                        format!("`{other}` is not `none`, `add-fields` or `registry`"),
                    );
                }
            },
        };
        let max = match (&t.max_new_columns, mode) {
            (Some(m), "none") => {
                return self.err(
                    m.span(),
                    "table.max_new_columns",
                    "applies only with evolve = \"add-fields\" or \"registry\"",
                );
            }
            (Some(m), _) if !(1..=1000).contains(m.get_ref()) => {
                return self.err(m.span(), "table.max_new_columns", "must be between 1 and 1000");
            }
            (m, _) => m.as_ref().map_or(DEFAULT_MAX_NEW_COLUMNS, |m| *m.get_ref()) as usize,
        };
        Ok(match mode {
            "add-fields" => Evolve::AddFields { max_new_columns: max },
            "registry" => Evolve::Registry { max_new_columns: max },
            _ => Evolve::Declared,
        })
    }
}

fn transform_accepts(transform: &Transform, ty: &ColumnType) -> Result<(), String> {
    use ColumnType as T;
    let ok = match transform {
        Transform::Identity => !matches!(ty, T::Struct(_) | T::List { .. } | T::Map { .. } | T::Float | T::Double),
        Transform::Year | Transform::Month | Transform::Day => {
            matches!(ty, T::Date | T::Timestamp | T::Timestamptz)
        }
        Transform::Hour => matches!(ty, T::Timestamp | T::Timestamptz),
        Transform::Bucket(n) => {
            *n > 0
                && matches!(
                    ty,
                    T::Int
                        | T::Long
                        | T::Decimal { .. }
                        | T::Date
                        | T::Timestamp
                        | T::Timestamptz
                        | T::String
                        | T::Binary
                )
        }
        Transform::Truncate(w) => *w > 0 && matches!(ty, T::Int | T::Long | T::Decimal { .. } | T::String | T::Binary),
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("transform `{transform}` cannot be applied to a column of type `{ty}`")) }
}

fn default_partition_name(column: &str, transform: &Transform) -> String {
    match transform {
        Transform::Identity => column.to_string(),
        Transform::Bucket(_) => format!("{column}_bucket"),
        Transform::Truncate(_) => format!("{column}_trunc"),
        other => format!("{column}_{other}"),
    }
}

#[cfg(test)]
mod tests;
