//! Decoded Protobuf messages (prost-reflect's `DynamicMessage`) → Arrow arrays, column by column, guided by the
//! type the pipeline's columns read: only the fields a column reads are visited (so recursive message types
//! end where the columns end), and each leaf is built in its Protobuf type's Arrow type, to be cast to the
//! column's type by [`crate::input::conform`].
//!
//! Mapping: messages → structs (fields matched by name, then by JSON name), `repeated` → lists, `map` → maps
//! (entries in key order), enums → their symbol name (or number, read into an integer column), `oneof` members →
//! nullable fields (at most one set). Fields with presence (messages, `optional`, proto2, `oneof` members) are
//! null when absent; proto3 scalars without presence hold their default, as Protobuf defines. Well-known types:
//! `Timestamp` → timestamp (UTC, microseconds), `Duration` → microseconds, the wrappers (`Int64Value`, …) →
//! their nullable value; any message read into a string column becomes its canonical Protobuf JSON (`Struct`,
//! `Any`, or a nested message kept whole).

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, MapArray,
    StringArray, StructArray, TimestampMicrosecondArray, UInt32Array, UInt64Array, new_null_array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, SerializeOptions, Value};

/// Arrow values of (or castable to) `target`, one per row of `rows`, each a message of type `desc` (`None` is
/// null). `Err` names the field (below `path`) that cannot be read as the column declares.
pub(crate) fn message_array(
    rows: &[Option<&DynamicMessage>],
    desc: &MessageDescriptor,
    target: &DataType,
    path: &str,
) -> Result<ArrayRef, String> {
    let nulls = nulls(rows.iter().map(Option::is_some));
    match (desc.full_name(), target) {
        ("google.protobuf.Timestamp", t) if !is_text(t) => return timestamps(rows, nulls, path),
        ("google.protobuf.Duration", t) if !is_text(t) => return durations(rows, path),
        (name, _) if is_wrapper(name) => {
            let value = desc.get_field(1).ok_or_else(|| format!("field `{path}`: {name} has no field 1"))?;
            return field_array(rows, &value, target, path);
        }
        _ => {}
    }
    match target {
        DataType::Struct(fields) => {
            let columns = fields
                .iter()
                .map(|f| match find_field(desc, f.name()) {
                    Some(fd) => field_array(rows, &fd, f.data_type(), &format!("{path}.{}", f.name())),
                    None => Ok(new_null_array(f.data_type(), rows.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let fields: Fields =
                fields.iter().zip(&columns).map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true)).collect();
            let array = if fields.is_empty() {
                StructArray::new_empty_fields(rows.len(), nulls)
            } else {
                StructArray::try_new(fields, columns, nulls).map_err(|e| format!("field `{path}`: {e}"))?
            };
            Ok(Arc::new(array))
        }
        t if is_text(t) => {
            let options = SerializeOptions::new().use_proto_field_name(true);
            let texts = rows
                .iter()
                .map(|m| {
                    m.map(|m| {
                        let mut out = serde_json::Serializer::new(Vec::new());
                        m.serialize_with_options(&mut out, &options)
                            .map_err(|e| format!("field `{path}`: {} cannot be written as JSON: {e}", desc.full_name()))
                            .map(|()| String::from_utf8(out.into_inner()).expect("serde_json writes UTF-8"))
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StringArray::from(texts)))
        }
        other => Err(format!("field `{path}`: the message {} cannot be read as {other}", desc.full_name())),
    }
}

/// The values of field `fd` of each row (a row that is `None`, or a field with presence that is absent, is null).
fn field_array(
    rows: &[Option<&DynamicMessage>],
    fd: &FieldDescriptor,
    target: &DataType,
    path: &str,
) -> Result<ArrayRef, String> {
    let present = |m: &&DynamicMessage| !fd.supports_presence() || m.has_field(fd);
    let values: Vec<Option<Cow<'_, Value>>> = rows.iter().map(|m| m.filter(present).map(|m| m.get_field(fd))).collect();
    let values: Vec<Option<&Value>> = values.iter().map(|v| v.as_deref()).collect();
    if fd.is_map() {
        return map_array(&values, fd, target, path);
    }
    if fd.is_list() {
        let DataType::List(element) = target else {
            return Err(format!("field `{path}`: a repeated field cannot be read as {target} (declare a list)"));
        };
        let mut offsets = Vec::with_capacity(values.len() + 1);
        offsets.push(0i32);
        let mut items: Vec<Option<&Value>> = Vec::new();
        for v in &values {
            items.extend(v.and_then(|v| v.as_list()).unwrap_or_default().iter().map(Some));
            offsets.push(i32::try_from(items.len()).map_err(|_| format!("field `{path}`: too many items"))?);
        }
        let items = value_array(&items, &fd.kind(), element.data_type(), &format!("{path}[]"))?;
        let field = Arc::new(Field::new(element.name(), items.data_type().clone(), true));
        let list = arrow_array::ListArray::try_new(
            field,
            OffsetBuffer::new(offsets.into()),
            items,
            nulls(values.iter().map(Option::is_some)),
        )
        .map_err(|e| format!("field `{path}`: {e}"))?;
        return Ok(Arc::new(list));
    }
    value_array(&values, &fd.kind(), target, path)
}

fn map_array(
    values: &[Option<&Value>],
    fd: &FieldDescriptor,
    target: &DataType,
    path: &str,
) -> Result<ArrayRef, String> {
    let (DataType::Map(entries, _), Kind::Message(entry)) = (target, fd.kind()) else {
        return Err(format!("field `{path}`: a map field cannot be read as {target} (declare a map)"));
    };
    let DataType::Struct(kv) = entries.data_type() else {
        return Err(format!("field `{path}`: a map's entries are not a struct"));
    };
    let mut offsets = Vec::with_capacity(values.len() + 1);
    offsets.push(0i32);
    let (mut keys, mut items): (Vec<Value>, Vec<Option<&Value>>) = (Vec::new(), Vec::new());
    for v in values {
        if let Some(map) = v.and_then(|v| v.as_map()) {
            // Protobuf maps are unordered: key order makes the rows deterministic.
            let mut sorted: Vec<(&MapKey, &Value)> = map.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in sorted {
                keys.push(key_value(k));
                items.push(Some(v));
            }
        }
        offsets.push(i32::try_from(keys.len()).map_err(|_| format!("field `{path}`: too many entries"))?);
    }
    let keys: Vec<Option<&Value>> = keys.iter().map(Some).collect();
    let key_fd = entry.map_entry_key_field();
    let value_fd = entry.map_entry_value_field();
    let keys = value_array(&keys, &key_fd.kind(), kv[0].data_type(), &format!("{path}{{key}}"))?;
    let items = value_array(&items, &value_fd.kind(), kv[1].data_type(), &format!("{path}{{}}"))?;
    let kv = Fields::from(vec![
        Field::new(kv[0].name(), keys.data_type().clone(), false),
        Field::new(kv[1].name(), items.data_type().clone(), true),
    ]);
    let entries_field = Arc::new(Field::new(entries.name(), DataType::Struct(kv.clone()), false));
    let entries = StructArray::try_new(kv, vec![keys, items], None).map_err(|e| format!("field `{path}`: {e}"))?;
    let map = MapArray::try_new(
        entries_field,
        OffsetBuffer::new(offsets.into()),
        entries,
        nulls(values.iter().map(Option::is_some)),
        false,
    )
    .map_err(|e| format!("field `{path}`: {e}"))?;
    Ok(Arc::new(map))
}

/// Leaves in their Protobuf type's Arrow type; messages by [`message_array`].
fn value_array(values: &[Option<&Value>], kind: &Kind, target: &DataType, path: &str) -> Result<ArrayRef, String> {
    fn collect<'a, T>(values: &[Option<&'a Value>], get: impl Fn(&'a Value) -> Option<T>) -> Vec<Option<T>> {
        values.iter().map(|v| v.and_then(&get)).collect()
    }
    Ok(match kind {
        Kind::Message(desc) => {
            let rows: Vec<Option<&DynamicMessage>> = collect(values, Value::as_message);
            return message_array(&rows, desc, target, path);
        }
        Kind::Enum(_) if target.is_integer() => Arc::new(Int32Array::from(collect(values, Value::as_enum_number))),
        Kind::Enum(desc) => Arc::new(StringArray::from(collect(values, |v| {
            // An open enum may carry a number the schema does not name: keep the number.
            v.as_enum_number().map(|n| desc.get_value(n).map_or_else(|| n.to_string(), |e| e.name().to_string()))
        }))),
        Kind::Bool => Arc::new(BooleanArray::from(collect(values, Value::as_bool))),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Arc::new(Int32Array::from(collect(values, Value::as_i32))),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Arc::new(Int64Array::from(collect(values, Value::as_i64))),
        Kind::Uint32 | Kind::Fixed32 => Arc::new(UInt32Array::from(collect(values, Value::as_u32))),
        Kind::Uint64 | Kind::Fixed64 => Arc::new(UInt64Array::from(collect(values, Value::as_u64))),
        Kind::Float => Arc::new(Float32Array::from(collect(values, Value::as_f32))),
        Kind::Double => Arc::new(Float64Array::from(collect(values, Value::as_f64))),
        Kind::String => Arc::new(StringArray::from(collect(values, Value::as_str))),
        Kind::Bytes => Arc::new(BinaryArray::from(collect(values, |v| v.as_bytes().map(|b| b.as_ref())))),
    })
}

/// Protobuf's timestamp range (years 1–9999), as its definition requires of valid values.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

fn timestamps(rows: &[Option<&DynamicMessage>], nulls: Option<NullBuffer>, path: &str) -> Result<ArrayRef, String> {
    let micros = rows
        .iter()
        .map(|m| {
            let Some(m) = m else { return Ok(0) };
            let (seconds, nanos) = seconds_nanos(m);
            if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
                return Err(format!(
                    "field `{path}`: google.protobuf.Timestamp {seconds} s {nanos} ns is outside the valid range"
                ));
            }
            Ok(seconds * 1_000_000 + i64::from(nanos) / 1_000)
        })
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(Arc::new(TimestampMicrosecondArray::new(micros.into(), nulls).with_timezone("+00:00")))
}

fn durations(rows: &[Option<&DynamicMessage>], path: &str) -> Result<ArrayRef, String> {
    let micros = rows
        .iter()
        .map(|m| {
            m.map(|m| {
                let (seconds, nanos) = seconds_nanos(m);
                seconds
                    .checked_mul(1_000_000)
                    .and_then(|s| s.checked_add(i64::from(nanos) / 1_000))
                    .ok_or_else(|| format!("field `{path}`: google.protobuf.Duration of {seconds} s overflows"))
            })
            .transpose()
        })
        .collect::<Result<Vec<Option<i64>>, _>>()?;
    Ok(Arc::new(Int64Array::from(micros)))
}

fn seconds_nanos(m: &DynamicMessage) -> (i64, i32) {
    let seconds = m.get_field_by_number(1).and_then(|v| v.as_i64()).unwrap_or(0);
    let nanos = m.get_field_by_number(2).and_then(|v| v.as_i32()).unwrap_or(0);
    (seconds, nanos)
}

fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn find_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name))
}

fn key_value(k: &MapKey) -> Value {
    match k {
        MapKey::Bool(b) => Value::Bool(*b),
        MapKey::I32(n) => Value::I32(*n),
        MapKey::I64(n) => Value::I64(*n),
        MapKey::U32(n) => Value::U32(*n),
        MapKey::U64(n) => Value::U64(*n),
        MapKey::String(s) => Value::String(s.clone()),
    }
}

/// A validity buffer, or none when every row is valid.
fn nulls(valid: impl Iterator<Item = bool>) -> Option<NullBuffer> {
    let buffer = NullBuffer::from_iter(valid);
    (buffer.null_count() > 0).then_some(buffer)
}
