//! Arrow arrays decoded from a registry format (their writer schema's shape) → the shape the pipeline's columns
//! read: struct fields matched by name (a field the writer schema lacks is null), lists and maps element by
//! element, leaves cast to the column's type. A value that cannot be cast (a string that is not a number, a
//! decimal that overflows) rejects its row with the field's path; every other row loads.
//!
//! Beyond arrow-cast: a 16-byte fixed (Avro's `uuid`) becomes its canonical text, and times become microseconds
//! since midnight (Iceberg has no `time` that Athena reads).

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, ListArray, MapArray, StructArray, new_null_array};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, TimeUnit};
use arrow_select::concat::concat;

use crate::input::registry::uuid_text;

/// `array` in `target`'s type (every field nullable: see [`relaxed`]), and the rows that could not be converted,
/// each with the reason naming the path below `path`.
pub(crate) fn conform(array: &ArrayRef, target: &DataType, path: &str) -> (ArrayRef, Vec<(usize, String)>) {
    match convert(array, target, path) {
        Ok(a) => (a, Vec::new()),
        // Rare (bad data): find the rows at fault one by one; the others convert as before.
        Err(_) => {
            let mut parts = Vec::with_capacity(array.len());
            let mut rejects = Vec::new();
            for row in 0..array.len() {
                match convert(&array.slice(row, 1), target, path) {
                    Ok(a) => parts.push(a),
                    Err(e) => {
                        rejects.push((row, e.to_string()));
                        parts.push(new_null_array(target, 1));
                    }
                }
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            (concat(&refs).expect("parts share the target type"), rejects)
        }
    }
}

/// `ty` with every nested field nullable: decoded values are assembled in this shape, then rows with nulls
/// where the table requires values are rejected by [`required_violation`].
pub(crate) fn relaxed(ty: &DataType) -> DataType {
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(relaxed(f.data_type())).with_nullable(true));
    match ty {
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::List(f) => DataType::List(field(f)),
        DataType::Map(f, sorted) => {
            // The key stays required (Arrow and Iceberg maps have no null keys).
            let DataType::Struct(kv) = f.data_type() else { return ty.clone() };
            let entries = Fields::from(vec![kv[0].clone(), field(&kv[1])]);
            DataType::Map(Arc::new(f.as_ref().clone().with_data_type(DataType::Struct(entries))), *sorted)
        }
        other => other.clone(),
    }
}

/// `array` (in [`relaxed`] shape, checked by [`required_violation`]) in the exact type `strict`, whose nested
/// fields may be required: the same buffers, re-labelled.
pub(crate) fn retype(array: &ArrayRef, strict: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == strict {
        return Ok(array.clone());
    }
    Ok(match strict {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let columns =
                fields.iter().zip(s.columns()).map(|(f, c)| retype(c, f.data_type())).collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(fields.clone(), columns, s.nulls().cloned())?)
        }
        DataType::List(f) => {
            let l = array.as_list::<i32>();
            let values = retype(l.values(), f.data_type())?;
            Arc::new(ListArray::try_new(f.clone(), l.offsets().clone(), values, l.nulls().cloned())?)
        }
        DataType::Map(entries, sorted) => {
            let m = array.as_map();
            let DataType::Struct(kv) = entries.data_type() else { return Ok(array.clone()) };
            let values = retype(m.values(), kv[1].data_type())?;
            let entries_array = StructArray::try_new(kv.clone(), vec![m.keys().clone(), values], None)?;
            Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                entries_array,
                m.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => array.clone(),
    })
}

/// The first nested field of `row` that `field` requires and `array` (in [`relaxed`] shape) leaves null, as a
/// path below `path`; top-level nullability is the caller's.
pub(crate) fn required_violation(array: &dyn Array, field: &Field, row: usize, path: &str) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    let child = |a: &dyn Array, f: &Field, r: usize, p: String| -> Option<String> {
        if !f.is_nullable() && a.is_null(r) {
            return Some(p);
        }
        required_violation(a, f, r, &p)
    };
    match (field.data_type(), array.data_type()) {
        (DataType::Struct(fields), DataType::Struct(_)) => {
            let s = array.as_struct();
            fields.iter().zip(s.columns()).find_map(|(f, a)| child(a.as_ref(), f, row, format!("{path}.{}", f.name())))
        }
        (DataType::List(f), DataType::List(_)) => {
            let l = array.as_list::<i32>();
            let (start, end) = (l.value_offsets()[row] as usize, l.value_offsets()[row + 1] as usize);
            (start..end).find_map(|i| child(l.values().as_ref(), f, i, format!("{path}[]")))
        }
        (DataType::Map(entries, _), DataType::Map(_, _)) => {
            let m = array.as_map();
            let DataType::Struct(kv) = entries.data_type() else { return None };
            let (start, end) = (m.value_offsets()[row] as usize, m.value_offsets()[row + 1] as usize);
            (start..end).find_map(|i| child(m.values().as_ref(), &kv[1], i, format!("{path}{{}}")))
        }
        _ => None,
    }
}

fn convert(array: &ArrayRef, target: &DataType, path: &str) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    let fail = |why: String| ArrowError::CastError(format!("field `{path}`: {why}"));
    match (array.data_type(), target) {
        (DataType::Null, _) => Ok(new_null_array(target, array.len())),
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let s = array.as_struct();
            let columns = fields
                .iter()
                .map(|f| match s.column_by_name(f.name()) {
                    Some(c) => convert(c, f.data_type(), &format!("{path}.{}", f.name())),
                    None => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(fields.clone(), columns, s.nulls().cloned())?))
        }
        (DataType::List(_) | DataType::LargeList(_), DataType::List(f)) => {
            let list = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().clone(),
                _ => cast_with_options(array, &DataType::List(f.clone()), &strict())?.as_list::<i32>().clone(),
            };
            let values = convert(list.values(), f.data_type(), &format!("{path}[]"))?;
            Ok(Arc::new(ListArray::try_new(f.clone(), list.offsets().clone(), values, list.nulls().cloned())?))
        }
        (DataType::Map(_, _), DataType::Map(entries, sorted)) => {
            let m = array.as_map();
            let DataType::Struct(kv) = entries.data_type() else { return Err(fail("not a map".into())) };
            let keys = convert(m.keys(), kv[0].data_type(), &format!("{path}{{key}}"))?;
            let values = convert(m.values(), kv[1].data_type(), &format!("{path}{{}}"))?;
            if keys.null_count() > 0 {
                return Err(fail("a map key is null".into()));
            }
            let entries_array = StructArray::try_new(kv.clone(), vec![keys, values], None)?;
            Ok(Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                entries_array,
                m.nulls().cloned(),
                *sorted,
            )?))
        }
        (DataType::FixedSizeBinary(16), DataType::Utf8) => Ok(uuid_texts(array)),
        (DataType::Time32(_) | DataType::Time64(_), DataType::Int64) => {
            let micros = cast_with_options(array, &DataType::Time64(TimeUnit::Microsecond), &strict())?;
            cast_with_options(&micros, &DataType::Int64, &strict())
        }
        (DataType::Union(_, _), to) => Err(fail(format!(
            "a union of several non-null types cannot be read as {to} (keep such values with `@value`)"
        ))),
        (from, to) if can_cast_types(from, to) => {
            cast_with_options(array, to, &strict()).map_err(|e| fail(e.to_string()))
        }
        (from, to) => Err(fail(format!("{from} values cannot be read as {to}"))),
    }
}

/// Casts that fail on a value they cannot represent instead of writing null.
fn strict() -> CastOptions<'static> {
    CastOptions { safe: false, ..Default::default() }
}

fn uuid_texts(array: &ArrayRef) -> ArrayRef {
    let bytes = array.as_fixed_size_binary();
    let mut b = StringBuilder::with_capacity(bytes.len(), bytes.len() * 36);
    for v in bytes.iter() {
        match v {
            None => b.append_null(),
            Some(v) => b.append_value(uuid_text(v.try_into().expect("FixedSizeBinary(16) values are 16 bytes"))),
        }
    }
    Arc::new(b.finish())
}

#[cfg(test)]
mod tests {
    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{FixedSizeBinaryArray, Int32Array, StringArray};

    use super::*;

    fn strukt(fields: Vec<(&str, ArrayRef)>) -> ArrayRef {
        let fields: Vec<(Arc<Field>, ArrayRef)> =
            fields.into_iter().map(|(n, a)| (Arc::new(Field::new(n, a.data_type().clone(), true)), a)).collect();
        Arc::new(StructArray::from(fields))
    }

    #[test]
    fn structs_match_by_name_and_missing_fields_are_null() {
        let source = strukt(vec![
            ("b", Arc::new(StringArray::from(vec!["x", "y"]))),
            ("a", Arc::new(Int32Array::from(vec![1, 2]))),
        ]);
        let target = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("c", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let (out, rejects) = conform(&source, &target, "$");
        assert!(rejects.is_empty());
        let s = out.as_struct();
        assert_eq!(s.column(0).as_primitive::<arrow_array::types::Int64Type>().values(), &[1, 2]);
        assert_eq!(s.column(1).null_count(), 2);
        assert_eq!(s.column(2).as_string::<i32>().value(1), "y");
    }

    #[test]
    fn a_value_that_cannot_be_cast_rejects_its_row_only() {
        let source = strukt(vec![("n", Arc::new(StringArray::from(vec![Some("1"), Some("two"), None, Some("3")])))]);
        let target = DataType::Struct(Fields::from(vec![Field::new("n", DataType::Int64, true)]));
        let (out, rejects) = conform(&source, &target, "$");
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].0, 1);
        assert!(rejects[0].1.contains("field `$.n`"), "{}", rejects[0].1);
        let n = out.as_struct().column(0).as_primitive::<arrow_array::types::Int64Type>().clone();
        assert_eq!(n.iter().collect::<Vec<_>>(), vec![Some(1), None, None, Some(3)]);
    }

    #[test]
    fn lists_convert_their_elements_and_uuids_become_text() {
        let mut lb = ListBuilder::new(Int64Builder::new());
        lb.values().append_value(7);
        lb.append(true);
        lb.append(false);
        let list: ArrayRef = Arc::new(lb.finish());
        let target = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
        let (out, rejects) = conform(&list, &target, "$.l");
        assert!(rejects.is_empty());
        let l = out.as_list::<i32>();
        assert_eq!(l.value(0).as_string::<i32>().value(0), "7");
        assert!(l.is_null(1));

        let uuid: ArrayRef = Arc::new(FixedSizeBinaryArray::try_from_iter([[0xab_u8; 16]].into_iter()).unwrap());
        let (out, _) = conform(&uuid, &DataType::Utf8, "$.u");
        assert_eq!(out.as_string::<i32>().value(0), "abababab-abab-abab-abab-abababababab");
    }

    #[test]
    fn times_become_microseconds_and_timestamps_take_the_column_unit() {
        let millis: ArrayRef = Arc::new(arrow_array::Time32MillisecondArray::from(vec![1_500]));
        let (out, _) = conform(&millis, &DataType::Int64, "$.t");
        assert_eq!(out.as_primitive::<arrow_array::types::Int64Type>().value(0), 1_500_000);
        let ts: ArrayRef =
            Arc::new(arrow_array::TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("+00:00"));
        let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let (out, rejects) = conform(&ts, &target, "$.ts");
        assert!(rejects.is_empty());
        assert_eq!(out.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0), 1_700_000_000_123_000);
    }

    #[test]
    fn nested_required_fields_are_checked_per_row() {
        let inner = Field::new("sku", DataType::Utf8, false);
        let field = Field::new("item", DataType::Struct(Fields::from(vec![inner])), true);
        let array = strukt(vec![("sku", Arc::new(StringArray::from(vec![Some("a"), None])))]);
        assert_eq!(required_violation(array.as_ref(), &field, 0, "$.item"), None);
        assert_eq!(required_violation(array.as_ref(), &field, 1, "$.item").as_deref(), Some("$.item.sku"));
    }
}
