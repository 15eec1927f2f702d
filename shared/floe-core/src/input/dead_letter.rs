//! Rejected records → rows of the dead-letter table (raw key/value bytes, headers, position and reason).
//!
//! Rows hold nothing that differs between deliveries (no processing time), so a retried invocation writes a
//! byte-identical dead-letter file under the same deterministic name.

use std::sync::Arc;

use arrow_array::builder::{LargeBinaryBuilder, ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::DataType;

use crate::error::Result;
use crate::input::event::{Problem, SourcePartition, SourceRecord};
use crate::table::layout::TableLayout;

/// Build the dead-letter rows for `rejects` (record index into `records`, problem).
pub fn dead_letter_batch(
    layout: &TableLayout,
    pipeline: &str,
    source: &SourcePartition,
    records: &[SourceRecord],
    rejects: &[(usize, Problem)],
) -> Result<RecordBatch> {
    let schema = layout.input.clone();
    let rows = || rejects.iter().map(|(i, p)| (&records[*i], p));
    let n = rejects.len();

    let tz = match schema.field_with_name(crate::table::layout::dead_letter_columns::KAFKA_TIMESTAMP)?.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => unreachable!("dead-letter timestamp column is {other}"),
    };
    let timestamps: TimestampMicrosecondArray =
        rows().map(|(r, _)| r.timestamp_ms.and_then(|m| m.checked_mul(1000))).collect();

    // Iceberg `binary` is Arrow `LargeBinary`.
    let mut keys = LargeBinaryBuilder::new();
    let mut values = LargeBinaryBuilder::new();
    rows().for_each(|(r, _)| {
        keys.append_option(r.key.as_deref());
        values.append_option(r.value.as_deref());
    });

    // list<struct<name: string not null, value: binary>>: the builder must carry the schema's exact fields.
    let headers_field = schema.field_with_name(crate::table::layout::dead_letter_columns::HEADERS)?;
    let DataType::List(element) = headers_field.data_type() else { unreachable!("headers is a list") };
    let DataType::Struct(struct_fields) = element.data_type() else { unreachable!("header is a struct") };
    let mut headers =
        ListBuilder::new(StructBuilder::from_fields(struct_fields.clone(), n)).with_field(element.clone());
    for (r, _) in rows() {
        let s = headers.values();
        for (name, value) in &r.headers {
            s.field_builder::<StringBuilder>(0).expect("name").append_value(name);
            s.field_builder::<LargeBinaryBuilder>(1).expect("value").append_value(value);
            s.append(true);
        }
        headers.append(true);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows().map(|_| pipeline))),
        Arc::new(StringArray::from_iter_values(rows().map(|_| &source.topic))),
        Arc::new(Int32Array::from_value(source.partition, n)),
        Arc::new(Int64Array::from_iter_values(rows().map(|(r, _)| r.offset))),
        Arc::new(timestamps.with_timezone_opt(tz)),
        Arc::new(keys.finish()),
        Arc::new(values.finish()),
        Arc::new(headers.finish()),
        Arc::new(StringArray::from_iter_values(rows().map(|(_, p)| p.kind))),
        Arc::new(StringArray::from_iter_values(rows().map(|(_, p)| &p.reason))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    use super::*;
    use crate::pipeline::Pipeline;

    #[test]
    fn builds_rows_with_raw_bytes_headers_and_reasons() {
        let p = Pipeline::parse(include_str!("../../../../examples/pipeline.toml"), "pipeline.toml").unwrap();
        let layout = TableLayout::dead_letter(&p, "file:///wh").unwrap();
        let records = vec![
            SourceRecord {
                offset: 7,
                timestamp_ms: Some(1_700_000_000_123),
                key: None,
                value: Some(b"{oops".to_vec()),
                headers: vec![("a".into(), vec![1, 2]), ("b".into(), vec![])],
                problem: None,
            },
            SourceRecord {
                offset: 9,
                timestamp_ms: None,
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![],
                problem: None,
            },
        ];
        let rejects = vec![
            (0, Problem { kind: "json", reason: "invalid JSON".into() }),
            (1, Problem { kind: "null_value", reason: "tombstone".into() }),
        ];
        let source = SourcePartition { topic: "t".into(), partition: 2 };
        let b = dead_letter_batch(&layout, "clickstream", &source, &records, &rejects).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            b.column_by_name("offset").unwrap().as_primitive::<arrow_array::types::Int64Type>().values(),
            &[7, 9]
        );
        assert_eq!(b.column_by_name("value").unwrap().as_binary::<i64>().value(0), b"{oops");
        assert!(b.column_by_name("key").unwrap().is_null(0));
        let headers = b.column_by_name("headers").unwrap().as_list::<i32>();
        assert_eq!(headers.value(0).len(), 2);
        assert_eq!(headers.value(1).len(), 0);
        assert_eq!(b.column_by_name("reason").unwrap().as_string::<i32>().value(1), "tombstone");
        assert!(b.column_by_name("kafka_timestamp").unwrap().is_null(1));
    }
}
