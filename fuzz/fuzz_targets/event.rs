//! The event parser: arbitrary bytes as the Lambda payload → records grouped per partition (read in place, as
//! the function reads its invocation body) → decoded. Every stage may reject the input with an error; none may
//! panic. Whenever the bytes also deserialize as an `MskEvent`, grouping them that way gives the same records.
#![no_main]

mod common;

use floe_core::{MskEvent, group_body, group_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = common::fixture();
    let topics = &fixture.pipeline.topics;
    let grouped = group_body(data, topics);
    if let Ok(event) = serde_json::from_slice::<MskEvent>(data) {
        let expected = group_records(&event, topics);
        let (got, want) = (grouped.as_ref().map_err(ToString::to_string), expected.as_ref().map_err(ToString::to_string));
        assert_eq!(got, want, "the body reader and MskEvent agree");
    }
    let Ok(groups) = grouped else { return };
    for group in groups {
        if let Ok(decoded) = fixture.decoder.decode(&group.source, &group.records) {
            let rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
            assert_eq!(rows + decoded.rejects.len(), group.records.len(), "every record is a row or a reject");
        }
    }
});
