//! The pipeline file exactly as written (TOML), with source spans kept for error messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    pub name: Spanned<String>,
    pub source: RawSource,
    pub table: RawTable,
    #[serde(default)]
    pub dead_letter: Option<RawDeadLetter>,
    #[serde(default)]
    pub reference: Vec<RawReference>,
    #[serde(default)]
    pub output: Vec<RawOutput>,
}

/// A static table the SQL transforms may join (CSV with a header row, or Parquet), with its declared columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReference {
    pub name: Spanned<String>,
    pub location: Spanned<String>,
    pub format: Spanned<String>,
    pub columns: Spanned<Vec<RawReferenceColumn>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReferenceColumn {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
}

/// A derived table: SQL over each micro-batch, optionally deduplicated by key or aggregated in windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub name: Spanned<String>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub sql: Option<Spanned<String>>,
    #[serde(default)]
    pub partition: Vec<RawPartitionField>,
    #[serde(default)]
    pub dedup: Option<RawDedup>,
    #[serde(default)]
    pub window: Option<RawWindow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDedup {
    pub key: Spanned<String>,
    pub horizon: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub kind: Spanned<String>,
    pub time_column: Spanned<String>,
    #[serde(default)]
    pub size: Option<Spanned<String>>,
    #[serde(default)]
    pub hop: Option<Spanned<String>>,
    #[serde(default)]
    pub gap: Option<Spanned<String>>,
    #[serde(default)]
    pub group_by: Vec<Spanned<String>>,
    pub aggregates: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub max_out_of_orderness: Option<Spanned<String>>,
    #[serde(default)]
    pub idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_lateness: Option<Spanned<String>>,
    #[serde(default)]
    pub late_table: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub topics: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// `"upsert"`, `"debezium"` or `{ op_field = "…", upsert = [..], delete = [..] }`.
    #[serde(default)]
    pub changes: Option<Spanned<toml::Value>>,
    /// `"json"`, `"avro"`, `"protobuf"` or `"json-schema"`: keys decoded for `@key.<path>` columns.
    #[serde(default)]
    pub key_format: Option<Spanned<String>>,
    /// `"confluent"` (the default for registry formats) or `"glue"`.
    #[serde(default)]
    pub framing: Option<Spanned<String>>,
    #[serde(default)]
    pub registry: Option<Spanned<RawRegistry>>,
    /// `{ field = "$.type" | header = "type", values = [...] }`: the records of the topics this pipeline takes.
    #[serde(default)]
    pub route: Option<Spanned<RawRoute>>,
}

/// `source.route`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    pub values: Spanned<Vec<Spanned<toml::Value>>>,
}

/// `source.registry`: where framed records' schemas are fetched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    /// A Confluent-compatible registry's base URL.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// An AWS Glue Schema Registry name (framing = "glue"); schemas are fetched by version id.
    #[serde(default)]
    pub glue: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTable {
    pub namespace: Spanned<String>,
    pub name: Spanned<String>,
    #[serde(default)]
    pub target_file_size_mb: Option<Spanned<i64>>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub columns: Spanned<Vec<RawColumn>>,
    #[serde(default)]
    pub partition: Vec<RawPartitionField>,
    /// `none` (declared columns only) or `add-fields` (fields seen in records become optional columns).
    #[serde(default)]
    pub evolve: Option<Spanned<String>>,
    #[serde(default)]
    pub max_new_columns: Option<Spanned<i64>>,
    /// The columns identifying a row of a change stream.
    #[serde(default)]
    pub primary_key: Option<Spanned<Vec<Spanned<String>>>>,
    /// A column ordering one key's changes across topic-partitions.
    #[serde(default)]
    pub order_by: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawColumn {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    #[serde(default)]
    pub doc: Option<String>,
    /// The column's previous name, when a pipeline edit renames it (the table keeps its data and field id).
    #[serde(default)]
    pub renamed_from: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartitionField {
    pub column: Spanned<String>,
    pub transform: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub table: Option<Spanned<String>>,
}
