//! The columns a registered writer schema has, for tables with `evolve = "registry"`: every field of the record
//! (Avro) or message (Protobuf) the values were written with becomes an optional column, typed as the README's
//! mapping tables say, so a new schema version adds its fields to the table before its records are decoded
//! (through the same evolution as `add-fields`, [`crate::input::discover::merged`]). Fields that map to no column
//! type (a union of several non-null types, a recursive type, a name Athena cannot take) are skipped and
//! reported.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use crate::input::avro_refs::self_contained;
use crate::input::discover::valid_name;
use crate::input::event::SourceRecord;
use crate::input::framing::unframe;
use crate::input::protobuf::Compiled;
use crate::input::registry::{RegisteredSchema, Resolved, SchemaKind};
use crate::pipeline::{ColumnType, Framing, StructField, ValueFormat};

/// Top-level columns (name, type), and the fields skipped as `path: reason`.
pub(crate) type Columns = (Vec<(String, ColumnType)>, Vec<String>);

/// The writer schemas a process has merged into its table, and their columns (computed once per schema).
#[derive(Debug, Default)]
pub(crate) struct WriterColumns {
    /// (schema's process-local id, message name; empty for Avro) already merged into the table.
    merged: Mutex<HashSet<(u32, String)>>,
    compiled: Mutex<HashMap<u32, Option<Arc<Compiled>>>>,
}

impl WriterColumns {
    /// The columns of the writer schemas `records`' values name that this process has not merged yet, with the
    /// keys to pass to [`WriterColumns::merged`] once the table has them. Values that do not unframe or name an
    /// unknown schema are left to the decoder, which dead-letters them.
    pub(crate) fn unmerged(
        &self,
        format: ValueFormat,
        framing: Framing,
        records: &[SourceRecord],
        resolved: &Resolved,
    ) -> (Columns, Vec<(u32, String)>) {
        let mut keys: Vec<(u32, String)> = Vec::new();
        let (mut columns, mut skipped) = (Vec::new(), Vec::new());
        let done = self.merged.lock().expect("merged lock");
        for value in records.iter().filter(|r| r.problem.is_none()).filter_map(|r| r.value.as_deref()) {
            let Ok(framed) = unframe(framing, value) else { continue };
            let Some(Some(known)) = resolved.get(&framed.schema) else { continue };
            let found = match (format, known.schema.kind) {
                (ValueFormat::Avro, SchemaKind::Avro) => {
                    let key = (known.local, String::new());
                    if done.contains(&key) || keys.contains(&key) {
                        continue;
                    }
                    keys.push(key);
                    self_contained(&known.schema).map_err(|e| e.to_string()).and_then(|text| avro_columns(&text))
                }
                (ValueFormat::Protobuf, SchemaKind::Protobuf) => {
                    let Some(compiled) = self.compiled(known.local, &known.schema) else { continue };
                    let Ok((message, _)) = compiled.select(framing, &framed.body) else { continue };
                    let key = (known.local, message.full_name().to_string());
                    if done.contains(&key) || keys.contains(&key) {
                        continue;
                    }
                    keys.push(key);
                    Ok(protobuf_columns(&message))
                }
                _ => continue,
            };
            match found {
                Ok((c, s)) => {
                    for (name, ty) in c {
                        if !columns.iter().any(|(n, _)| *n == name) {
                            columns.push((name, ty));
                        }
                    }
                    skipped.extend(s);
                }
                Err(reason) => skipped.push(format!("{}: {reason}", known.id)),
            }
        }
        ((columns, skipped), keys)
    }

    /// Record that the table has the columns of `keys`' schemas.
    pub(crate) fn merged(&self, keys: Vec<(u32, String)>) {
        self.merged.lock().expect("merged lock").extend(keys);
    }

    fn compiled(&self, local: u32, schema: &RegisteredSchema) -> Option<Arc<Compiled>> {
        let mut cache = self.compiled.lock().expect("compiled lock");
        cache.entry(local).or_insert_with(|| Compiled::from_schema(schema).ok().map(Arc::new)).clone()
    }
}

/// The columns of an Avro record schema (JSON text).
pub(crate) fn avro_columns(text: &str) -> Result<Columns, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not an Avro schema: {e}"))?;
    let mut avro = Avro::default();
    let mut skipped = Vec::new();
    let fields = avro.record_fields(&schema, None, "$", &mut skipped)?;
    Ok((fields.into_iter().map(|f| (f.name, f.ty)).collect(), skipped))
}

#[derive(Default)]
struct Avro<'a> {
    /// Named types by full name, as defined so far.
    named: HashMap<String, &'a Value>,
    /// Records being mapped (a reference to one of these is recursive).
    open: Vec<String>,
}

impl<'a> Avro<'a> {
    fn record_fields(
        &mut self,
        schema: &'a Value,
        ns: Option<&str>,
        path: &str,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<StructField>, String> {
        let Some("record" | "error") = schema.get("type").and_then(Value::as_str) else {
            return Err("the schema is not a record: declare the columns".into());
        };
        let name = self.define(schema, ns);
        let ns = name.rsplit_once('.').map(|(n, _)| n.to_string());
        self.open.push(name);
        let mut out = Vec::new();
        for field in schema.get("fields").and_then(Value::as_array).into_iter().flatten() {
            let Some(fname) = field.get("name").and_then(Value::as_str) else { continue };
            let at = format!("{path}.{fname}");
            if !valid_name(fname) {
                skipped.push(format!("{at}: not a name a column can take"));
                continue;
            }
            match field.get("type").map(|t| self.ty(t, ns.as_deref(), &at, skipped)) {
                Some(Ok(ty)) => out.push(StructField { name: fname.to_string(), ty, required: false }),
                Some(Err(reason)) => skipped.push(format!("{at}: {reason}")),
                None => skipped.push(format!("{at}: no type")),
            }
        }
        self.open.pop();
        Ok(out)
    }

    /// Register a named type under its full name; returns the full name.
    fn define(&mut self, schema: &'a Value, ns: Option<&str>) -> String {
        let name = schema.get("name").and_then(Value::as_str).unwrap_or_default();
        let ns = schema.get("namespace").and_then(Value::as_str).or(ns);
        let full = match (name.contains('.'), ns) {
            (false, Some(ns)) if !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        };
        self.named.insert(full.clone(), schema);
        full
    }

    fn ty(
        &mut self,
        schema: &'a Value,
        ns: Option<&str>,
        path: &str,
        skipped: &mut Vec<String>,
    ) -> Result<ColumnType, String> {
        match schema {
            Value::String(name) => self.named_or_primitive(name, ns, path, skipped),
            Value::Array(branches) => {
                let other: Vec<&Value> = branches.iter().filter(|b| b.as_str() != Some("null")).collect();
                match other[..] {
                    [one] => self.ty(one, ns, path, skipped),
                    _ => Err("a union of several non-null types has no column type (keep it with `@value`)".into()),
                }
            }
            Value::Object(o) => {
                let logical = o.get("logicalType").and_then(Value::as_str);
                let base = o.get("type").and_then(Value::as_str);
                match (logical, base) {
                    (Some("decimal"), Some("bytes" | "fixed")) => {
                        let int = |k: &str| o.get(k).and_then(Value::as_u64).map(|v| v as u32);
                        let (Some(precision), scale) = (int("precision"), int("scale").unwrap_or(0)) else {
                            return Err("a decimal without a precision".into());
                        };
                        if base == Some("fixed") {
                            self.define(schema, ns);
                        }
                        if precision > 38 {
                            return Err(format!("decimal({precision},{scale}) is wider than Iceberg's 38 digits"));
                        }
                        Ok(ColumnType::Decimal { precision, scale })
                    }
                    (Some("date"), Some("int")) => Ok(ColumnType::Date),
                    (Some("time-millis"), Some("int")) | (Some("time-micros"), Some("long")) => Ok(ColumnType::Long),
                    (Some("timestamp-millis" | "timestamp-micros"), Some("long")) => Ok(ColumnType::Timestamptz),
                    (Some("local-timestamp-millis" | "local-timestamp-micros"), Some("long")) => {
                        Ok(ColumnType::Timestamp)
                    }
                    (Some("uuid"), Some("string" | "fixed")) => {
                        if base == Some("fixed") {
                            self.define(schema, ns);
                        }
                        Ok(ColumnType::String)
                    }
                    (_, Some("record" | "error")) => match self.record_fields(schema, ns, path, skipped)? {
                        fields if fields.is_empty() => Err("a record without fields has no column type".into()),
                        fields => Ok(ColumnType::Struct(fields)),
                    },
                    (_, Some("enum")) => {
                        self.define(schema, ns);
                        Ok(ColumnType::String)
                    }
                    (_, Some("fixed")) => {
                        self.define(schema, ns);
                        Ok(ColumnType::Binary)
                    }
                    (_, Some("array")) => {
                        let items = o.get("items").ok_or("an array without items")?;
                        let element = self.ty(items, ns, &format!("{path}[]"), skipped)?;
                        Ok(ColumnType::List { element: Box::new(element), element_required: false })
                    }
                    (_, Some("map")) => {
                        let values = o.get("values").ok_or("a map without values")?;
                        let value = self.ty(values, ns, &format!("{path}{{}}"), skipped)?;
                        Ok(ColumnType::Map {
                            key: Box::new(ColumnType::String),
                            value: Box::new(value),
                            value_required: false,
                        })
                    }
                    (_, Some(primitive)) => self.named_or_primitive(primitive, ns, path, skipped),
                    (_, None) => match o.get("type") {
                        Some(inner) => self.ty(inner, ns, path, skipped),
                        None => Err("no type".into()),
                    },
                }
            }
            _ => Err(format!("`{schema}` is not an Avro type")),
        }
    }

    fn named_or_primitive(
        &mut self,
        name: &str,
        ns: Option<&str>,
        path: &str,
        skipped: &mut Vec<String>,
    ) -> Result<ColumnType, String> {
        Ok(match name {
            "boolean" => ColumnType::Boolean,
            "int" => ColumnType::Int,
            "long" => ColumnType::Long,
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "bytes" => ColumnType::Binary,
            "string" => ColumnType::String,
            "null" => return Err("always null".into()),
            _ => {
                let full = match ns {
                    Some(ns) if !name.contains('.') && self.named.contains_key(&format!("{ns}.{name}")) => {
                        format!("{ns}.{name}")
                    }
                    _ => name.to_string(),
                };
                if self.open.contains(&full) {
                    return Err(format!("a recursive reference to {full} has no column type"));
                }
                let schema = *self.named.get(&full).ok_or_else(|| format!("unknown type `{name}`"))?;
                return self.ty(schema, ns, path, skipped);
            }
        })
    }
}

/// The columns of a Protobuf message.
pub(crate) fn protobuf_columns(message: &MessageDescriptor) -> Columns {
    let mut skipped = Vec::new();
    let fields = message_fields(message, "$", &mut vec![message.full_name().to_string()], &mut skipped);
    (fields.into_iter().map(|f| (f.name, f.ty)).collect(), skipped)
}

fn message_fields(
    message: &MessageDescriptor,
    path: &str,
    open: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> Vec<StructField> {
    let mut out = Vec::new();
    for fd in message.fields() {
        let at = format!("{path}.{}", fd.name());
        if !valid_name(fd.name()) {
            skipped.push(format!("{at}: not a name a column can take"));
            continue;
        }
        match field_type(&fd, &at, open, skipped) {
            Ok(ty) => out.push(StructField { name: fd.name().to_string(), ty, required: false }),
            Err(reason) => skipped.push(format!("{at}: {reason}")),
        }
    }
    out
}

fn field_type(
    fd: &FieldDescriptor,
    path: &str,
    open: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> Result<ColumnType, String> {
    if fd.is_map() {
        let Kind::Message(entry) = fd.kind() else { return Err("a map without entries".into()) };
        let key = kind_type(&entry.map_entry_key_field().kind(), path, open, skipped)?;
        let value = kind_type(&entry.map_entry_value_field().kind(), &format!("{path}{{}}"), open, skipped)?;
        return Ok(ColumnType::Map { key: Box::new(key), value: Box::new(value), value_required: false });
    }
    let ty = kind_type(&fd.kind(), path, open, skipped)?;
    if fd.is_list() {
        return Ok(ColumnType::List { element: Box::new(ty), element_required: false });
    }
    Ok(ty)
}

fn kind_type(kind: &Kind, path: &str, open: &mut Vec<String>, skipped: &mut Vec<String>) -> Result<ColumnType, String> {
    Ok(match kind {
        Kind::Bool => ColumnType::Boolean,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => ColumnType::Int,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => ColumnType::Long,
        Kind::Uint64 | Kind::Fixed64 => ColumnType::Decimal { precision: 20, scale: 0 },
        Kind::Float => ColumnType::Float,
        Kind::Double => ColumnType::Double,
        Kind::String | Kind::Enum(_) => ColumnType::String,
        Kind::Bytes => ColumnType::Binary,
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => ColumnType::Timestamptz,
            "google.protobuf.Duration" => ColumnType::Long,
            "google.protobuf.DoubleValue" => ColumnType::Double,
            "google.protobuf.FloatValue" => ColumnType::Float,
            "google.protobuf.Int64Value" | "google.protobuf.UInt32Value" => ColumnType::Long,
            "google.protobuf.UInt64Value" => ColumnType::Decimal { precision: 20, scale: 0 },
            "google.protobuf.Int32Value" => ColumnType::Int,
            "google.protobuf.BoolValue" => ColumnType::Boolean,
            "google.protobuf.StringValue" => ColumnType::String,
            "google.protobuf.BytesValue" => ColumnType::Binary,
            name if name.starts_with("google.protobuf.") => ColumnType::String, // Struct, Value, Any…: JSON text
            name if open.iter().any(|o| o == name) => {
                return Err(format!("a recursive reference to {name} has no column type (declare it `string`)"));
            }
            name => {
                open.push(name.to_string());
                let fields = message_fields(m, path, open, skipped);
                open.pop();
                if fields.is_empty() {
                    return Err(format!("{name} has no fields a column can take"));
                }
                ColumnType::Struct(fields)
            }
        },
    })
}

#[cfg(test)]
#[path = "writer_columns_tests.rs"]
mod tests;
