//! Change streams (`source.changes`, `table.primary_key`, `table.order_by`): records that insert, replace or
//! delete rows identified by a primary key, instead of appending rows. Validated here; decoded in
//! [`crate::input::changes`], committed as position deletes by the compactor.

use std::ops::Range;

use toml::Spanned;

use super::raw::{RawOutput, RawPipeline};
use super::{Column, ColumnSource, ColumnType, Evolve, Validator};
use crate::error::Result;

/// The first path segment of Debezium envelope fields in `from` (`@change.source.lsn`, `@change.ts_ms`): the
/// decoder puts the envelope (without `before`/`after`) under this key beside the row image.
pub const CHANGE_ENVELOPE: &str = "@change";

/// How records carry changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeFormat {
    /// The record value is the row's new image; a record with a null value (a tombstone) deletes the row its
    /// Kafka key names.
    Upsert,
    /// The Debezium JSON envelope (with or without the schema wrapper): `op` c / r / u upsert `after`, d deletes
    /// by `before` (or by the Kafka key); the tombstone Debezium sends after a delete is skipped.
    Debezium,
    /// The value holds the row and an operation field: values in `upsert` replace the row, values in `delete`
    /// delete it (the value needs only the primary-key fields); any other value is a dead letter.
    OpField { path: Vec<String>, upsert: Vec<String>, delete: Vec<String> },
}

impl std::fmt::Display for ChangeFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeFormat::Upsert => write!(f, "upsert"),
            ChangeFormat::Debezium => write!(f, "debezium"),
            ChangeFormat::OpField { path, upsert, delete } => {
                write!(f, "op_field $.{} (upsert {upsert:?}, delete {delete:?})", path.join("."))
            }
        }
    }
}

/// The change stream of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub format: ChangeFormat,
    /// Top-level, required, primitive columns identifying a row.
    pub primary_key: Vec<String>,
    /// A column ordering the changes of one key across topic-partitions (e.g. a log sequence number); changes
    /// within one topic-partition are always applied in offset order.
    pub order_by: Option<String>,
}

/// Operation values of `op_field` when the pipeline does not list them (Debezium's codes).
pub const DEFAULT_UPSERT_OPS: [&str; 3] = ["c", "r", "u"];
pub const DEFAULT_DELETE_OPS: [&str; 1] = ["d"];

impl Validator<'_> {
    /// `source.changes` with `table.primary_key` and `table.order_by`, checked against the columns and the
    /// outputs; `None` for an append-only pipeline.
    pub(super) fn changes(&self, raw: &RawPipeline, columns: &[Column], evolve: Evolve) -> Result<Option<Changes>> {
        let key_span = raw.table.primary_key.as_ref().map(|k| k.span());
        let Some(declared) = &raw.source.changes else {
            if let Some(span) = key_span {
                return self.err(span, "table.primary_key", "applies only with source.changes (a change stream)");
            }
            if let Some(o) = &raw.table.order_by {
                return self.err(o.span(), "table.order_by", "applies only with source.changes (a change stream)");
            }
            for c in columns {
                self.no_envelope(raw, c, "applies only with source.changes = \"debezium\"")?;
            }
            return Ok(None);
        };
        let format = self.change_format(declared)?;
        let Some(keys) = &raw.table.primary_key else {
            return self.err(
                declared.span(),
                "source.changes",
                "needs table.primary_key, the columns identifying a row",
            );
        };
        let mut primary_key = Vec::new();
        for (i, k) in keys.get_ref().iter().enumerate() {
            let field = format!("table.primary_key[{i}]");
            let Some(column) = columns.iter().find(|c| c.name == *k.get_ref()) else {
                return self.err(k.span(), &field, format!("`{}` is not a column", k.get_ref()));
            };
            if primary_key.contains(&column.name) {
                return self.err(k.span(), &field, format!("`{}` is listed twice", column.name));
            }
            if !key_type(&column.ty) {
                return self.err(
                    k.span(),
                    &field,
                    format!(
                        "column `{}` has type `{}`: a key column is int, long, decimal, date, timestamp, timestamptz, \
                         string or binary",
                        column.name, column.ty
                    ),
                );
            }
            if !column.required {
                return self.err(
                    k.span(),
                    &field,
                    format!("column `{}` must be `required = true` to be part of the primary key", column.name),
                );
            }
            primary_key.push(column.name.clone());
        }
        if primary_key.is_empty() {
            return self.err(keys.span(), "table.primary_key", "name at least one column");
        }
        let order_by = match &raw.table.order_by {
            None => None,
            Some(o) => {
                let Some(column) = columns.iter().find(|c| c.name == *o.get_ref()) else {
                    return self.err(o.span(), "table.order_by", format!("`{}` is not a column", o.get_ref()));
                };
                if !order_type(&column.ty) {
                    return self.err(
                        o.span(),
                        "table.order_by",
                        format!(
                            "column `{}` has type `{}`: order by an int, long, decimal, date, timestamp or \
                             timestamptz column",
                            column.name, column.ty
                        ),
                    );
                }
                if primary_key.contains(&column.name) {
                    return self.err(o.span(), "table.order_by", "is part of the primary key; it cannot order it");
                }
                Some(column.name.clone())
            }
        };
        for c in columns {
            if format != ChangeFormat::Debezium {
                self.no_envelope(raw, c, "applies only with source.changes = \"debezium\"")?;
            }
        }
        if let ChangeFormat::OpField { path, .. } = &format {
            for c in columns {
                let ColumnSource::Value { path: p, .. } = &c.source else { continue };
                if p != path && (p.starts_with(path) || path.starts_with(p)) {
                    return self.err(
                        declared.span(),
                        "source.changes.op_field",
                        format!("path `$.{}` overlaps the path of column `{}`", path.join("."), c.name),
                    );
                }
                if p == path && c.ty != ColumnType::String {
                    return self.err(
                        declared.span(),
                        "source.changes.op_field",
                        format!("column `{}` reads the operation field: it must have type string", c.name),
                    );
                }
            }
        }
        if format == ChangeFormat::Debezium && evolve != Evolve::Declared {
            return self.err(
                raw.table.evolve.as_ref().map_or(declared.span(), |e| e.span()),
                "table.evolve",
                "automatic evolution reads record values as rows, and a Debezium value is an envelope: declare \
                 the columns",
            );
        }
        for (i, o) in raw.output.iter().enumerate() {
            self.output_on_changes(i, o)?;
        }
        Ok(Some(Changes { format, primary_key, order_by }))
    }

    fn change_format(&self, declared: &Spanned<toml::Value>) -> Result<ChangeFormat> {
        let span = declared.span();
        let field = "source.changes";
        match declared.get_ref() {
            toml::Value::String(s) if s == "upsert" => Ok(ChangeFormat::Upsert),
            toml::Value::String(s) if s == "debezium" => Ok(ChangeFormat::Debezium),
            toml::Value::String(s) => self.err(
                span,
                field,
                format!("`{s}` is not a change format: use \"upsert\", \"debezium\" or {{ op_field = \"…\" }}"),
            ),
            toml::Value::Table(t) => {
                for key in t.keys() {
                    if !["op_field", "upsert", "delete"].contains(&key.as_str()) {
                        return self.err(span, &format!("{field}.{key}"), "unknown key: use op_field, upsert, delete");
                    }
                }
                let Some(toml::Value::String(op)) = t.get("op_field") else {
                    return self.err(span, &format!("{field}.op_field"), "name the field holding the operation");
                };
                let path: Vec<String> = op.strip_prefix("$.").unwrap_or(op).split('.').map(str::to_string).collect();
                if path.iter().any(|p| p.is_empty() || p.starts_with('@')) {
                    return self.err(span, &format!("{field}.op_field"), format!("`{op}` is not a path in the value"));
                }
                let list = |key: &str, default: &[&str]| -> Result<Vec<String>> {
                    match t.get(key) {
                        None => Ok(default.iter().map(|s| s.to_string()).collect()),
                        Some(toml::Value::Array(a)) if !a.is_empty() => a
                            .iter()
                            .map(|v| match v {
                                toml::Value::String(s) => Ok(s.clone()),
                                _ => self.err(
                                    span.clone(),
                                    &format!("{field}.{key}"),
                                    "list operation values as strings",
                                ),
                            })
                            .collect(),
                        Some(_) => self.err(span.clone(), &format!("{field}.{key}"), "a non-empty list of strings"),
                    }
                };
                let upsert = list("upsert", &DEFAULT_UPSERT_OPS)?;
                let delete = list("delete", &DEFAULT_DELETE_OPS)?;
                if let Some(both) = upsert.iter().find(|u| delete.contains(u)) {
                    return self.err(span, field, format!("operation `{both}` is listed as upsert and as delete"));
                }
                Ok(ChangeFormat::OpField { path, upsert, delete })
            }
            _ => self.err(
                span,
                field,
                "use \"upsert\", \"debezium\" or { op_field = \"…\", upsert = [..], delete = [..] }",
            ),
        }
    }

    /// A column may read the Debezium envelope only on a Debezium pipeline.
    fn no_envelope(&self, raw: &RawPipeline, c: &Column, message: &str) -> Result<()> {
        let ColumnSource::Value { path, .. } = &c.source else { return Ok(()) };
        if path[0] != CHANGE_ENVELOPE {
            return Ok(());
        }
        let i = raw.table.columns.get_ref().iter().position(|r| *r.name.get_ref() == c.name).unwrap_or(0);
        let span: Range<usize> =
            raw.table.columns.get_ref().get(i).and_then(|r| r.from.as_ref()).map_or(0..0, |f| f.span());
        self.err(span, &format!("table.columns[{i}].from"), format!("`{CHANGE_ENVELOPE}.…` {message}"))
    }

    /// Outputs that see a change stream as appends: dedup and windows would count replaced and deleted rows.
    fn output_on_changes(&self, i: usize, o: &RawOutput) -> Result<()> {
        if let Some(d) = &o.dedup {
            return self.err(
                d.key.span(),
                &format!("output[{i}].dedup"),
                "a change stream already keeps one row per primary key; dedup would drop its updates",
            );
        }
        if let Some(w) = &o.window {
            return self.err(
                w.kind.span(),
                &format!("output[{i}].window"),
                "windows aggregate appended records; on a change stream they would count replaced and deleted \
                 rows (SQL outputs without windows see each change's new row)",
            );
        }
        Ok(())
    }
}

fn key_type(ty: &ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Int
            | ColumnType::Long
            | ColumnType::Decimal { .. }
            | ColumnType::Date
            | ColumnType::Timestamp
            | ColumnType::Timestamptz
            | ColumnType::String
            | ColumnType::Binary
    )
}

fn order_type(ty: &ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Int
            | ColumnType::Long
            | ColumnType::Decimal { .. }
            | ColumnType::Date
            | ColumnType::Timestamp
            | ColumnType::Timestamptz
    )
}
