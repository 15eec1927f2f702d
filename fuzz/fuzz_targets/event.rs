//! The event parser: arbitrary bytes as the Lambda payload → `MskEvent` → records grouped per partition →
//! decoded. Every stage may reject the input with an error; none may panic.
#![no_main]

mod common;

use floe_core::{MskEvent, group_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<MskEvent>(data) else { return };
    let fixture = common::fixture();
    let Ok(groups) = group_records(&event, &fixture.pipeline.topics) else { return };
    for group in groups {
        if let Ok(decoded) = fixture.decoder.decode(&group.source, &group.records) {
            let rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
            assert_eq!(rows + decoded.rejects.len(), group.records.len(), "every record is a row or a reject");
        }
    }
});
