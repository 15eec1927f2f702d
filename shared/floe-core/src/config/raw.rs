//! The pipeline file exactly as written (TOML), with source spans kept for error messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    pub name: Spanned<String>,
    pub source: RawSource,
    pub table: RawTable,
    #[serde(default)]
    pub dead_letter: Option<RawDeadLetter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub topics: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartitionField {
    pub column: Spanned<String>,
    pub transform: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub table: Option<Spanned<String>>,
}
