//! The declared columns: each validated (name, type, where its values come from, rename), and the set checked
//! together (no two paths overlapping, renames that name a column once).

use toml::Spanned;

use super::raw::RawColumn;
use super::{CHANGE_ENVELOPE, Column, ColumnSource, ColumnType, TimestampFormat, Validator};
use crate::error::Result;

impl Validator<'_> {
    pub(super) fn column(&self, i: usize, c: &RawColumn) -> Result<Column> {
        let field = |f: &str| format!("table.columns[{i}].{f}");
        let name = self.identifier(&c.name, &field("name"))?;
        let ty = match ColumnType::parse(c.ty.get_ref()) {
            Ok(t) => t,
            Err(msg) => return self.err(c.ty.span(), &field("type"), msg),
        };
        let source = match &c.from {
            None => ColumnSource::Value { path: vec![name.clone()], format: TimestampFormat::default() },
            Some(from) => match parse_source(from.get_ref()) {
                Ok(s) => s,
                Err(msg) => return self.err(from.span(), &field("from"), msg),
            },
        };
        let allowed: &[&str] = match &source {
            ColumnSource::Value { .. } | ColumnSource::KeyPath { .. } => &[],
            ColumnSource::Key | ColumnSource::RawValue | ColumnSource::Header(_) => &["string", "binary"],
            ColumnSource::Timestamp => &["timestamp", "timestamptz", "long"],
            ColumnSource::Topic => &["string"],
            ColumnSource::Partition => &["int", "long"],
            ColumnSource::Offset => &["long"],
        };
        if !allowed.is_empty() && !allowed.contains(&ty.to_string().as_str()) {
            return self.err(
                c.ty.span(),
                &field("type"),
                format!(
                    "a column from `{}` must have type {}",
                    c.from.as_ref().map_or("", |f| f.get_ref()),
                    allowed.join(" or ")
                ),
            );
        }
        let source = match (source, &c.format) {
            (s, None) => s,
            (s @ (ColumnSource::Value { .. } | ColumnSource::KeyPath { .. }), Some(fmt)) => {
                if !ty.is_timestamp() {
                    return self.err(fmt.span(), &field("format"), "`format` applies to timestamp columns only");
                }
                let format = match fmt.get_ref().as_str() {
                    "rfc3339" => TimestampFormat::Rfc3339,
                    "epoch_seconds" => TimestampFormat::EpochSeconds,
                    "epoch_millis" => TimestampFormat::EpochMillis,
                    "epoch_micros" => TimestampFormat::EpochMicros,
                    other => {
                        return self.err(
                            fmt.span(),
                            &field("format"),
                            format!(
                                "unknown format `{other}`: use rfc3339, epoch_seconds, epoch_millis or epoch_micros"
                            ),
                        );
                    }
                };
                match s {
                    ColumnSource::KeyPath { path, .. } => ColumnSource::KeyPath { path, format },
                    ColumnSource::Value { path, .. } => ColumnSource::Value { path, format },
                    _ => unreachable!("matched above"),
                }
            }
            (_, Some(fmt)) => {
                return self.err(
                    fmt.span(),
                    &field("format"),
                    "`format` applies to columns read from the value or key",
                );
            }
        };
        let renamed_from = match &c.renamed_from {
            Some(old) => Some(self.identifier(old, &field("renamed_from"))?),
            None => None,
        };
        Ok(Column { name, ty, required: c.required, source, doc: c.doc.clone(), renamed_from })
    }

    /// A rename names an old column that is not also declared, once.
    pub(super) fn check_renames(&self, raw: &Spanned<Vec<RawColumn>>, columns: &[Column]) -> Result<()> {
        for (i, c) in columns.iter().enumerate() {
            let Some(old) = &c.renamed_from else { continue };
            let span = raw.get_ref()[i].renamed_from.as_ref().map_or(0..0, |r| r.span());
            let field = format!("table.columns[{i}].renamed_from");
            if *old == c.name {
                return self.err(span, &field, "names the column itself");
            }
            if columns.iter().any(|x| x.name == *old) {
                return self.err(
                    span,
                    &field,
                    format!("`{old}` is still declared as a column; drop it or rename both"),
                );
            }
            if columns[..i].iter().any(|x| x.renamed_from.as_deref() == Some(old.as_str())) {
                return self.err(span, &field, format!("two columns are renamed from `{old}`"));
            }
        }
        Ok(())
    }

    /// A JSON path may not be a prefix of another (`$.user` and `$.user.id`): each JSON field feeds one column.
    pub(super) fn check_paths_disjoint(&self, raw: &Spanned<Vec<RawColumn>>, columns: &[Column]) -> Result<()> {
        for (i, a) in columns.iter().enumerate() {
            let ColumnSource::Value { path: pa, .. } = &a.source else {
                continue;
            };
            for b in &columns[..i] {
                let ColumnSource::Value { path: pb, .. } = &b.source else {
                    continue;
                };
                if pa.starts_with(pb) || pb.starts_with(pa) {
                    let span = raw.get_ref()[i].from.as_ref().map_or(raw.get_ref()[i].name.span(), |f| f.span());
                    return self.err(
                        span,
                        &format!("table.columns[{i}].from"),
                        format!(
                            "path `$.{}` overlaps the path of column `{}`; map each JSON field once",
                            pa.join("."),
                            b.name
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// `$.a.b` → value path; `@value`, `@key`, `@timestamp`, `@topic`, `@partition`, `@offset`, `@header.<name>`.
fn parse_source(from: &str) -> Result<ColumnSource, String> {
    if let Some(path) = from.strip_prefix("$.") {
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("`{from}` has an empty path segment"));
        }
        return Ok(ColumnSource::Value { path: parts, format: TimestampFormat::default() });
    }
    if let Some(path) = from.strip_prefix("@change.") {
        // A field of the Debezium envelope (checked against source.changes by the validator).
        let parts: Vec<String> = std::iter::once(CHANGE_ENVELOPE).chain(path.split('.')).map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("`{from}` has an empty path segment"));
        }
        return Ok(ColumnSource::Value { path: parts, format: TimestampFormat::default() });
    }
    if let Some(path) = from.strip_prefix("@key.") {
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("`{from}` has an empty path segment"));
        }
        return Ok(ColumnSource::KeyPath { path: parts, format: TimestampFormat::default() });
    }
    Ok(match from {
        "@key" => ColumnSource::Key,
        "@value" => ColumnSource::RawValue,
        "@timestamp" => ColumnSource::Timestamp,
        "@topic" => ColumnSource::Topic,
        "@partition" => ColumnSource::Partition,
        "@offset" => ColumnSource::Offset,
        _ => match from.strip_prefix("@header.") {
            Some(h) if !h.is_empty() => ColumnSource::Header(h.to_string()),
            _ => {
                return Err(format!(
                    "`{from}` is not a source: use `$.path.in.value`, `@value`, `@key`, `@key.<path>`, `@timestamp`, `@topic`, \
                     `@partition`, `@offset`, `@header.<name>` or `@change.<path>` (Debezium)"
                ));
            }
        },
    })
}
