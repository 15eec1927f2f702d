//! Step 1 of the flow, what arrives: the MSK event as the event source mapping delivers it, grouped per
//! topic-partition ([`event`]); each record's value decoded into Arrow rows of the target table ([`decode`]):
//! JSON with the guard against inputs the decoder would misread, or Avro written with a registered schema
//! ([`framing`] names the schema, [`registry`] fetches it once per process, `avro` decodes, `conform` shapes);
//! and every record that cannot be used turned into a dead-letter row that keeps its bytes, its position and
//! the reason ([`dead_letter`]).

pub(crate) mod avro;
mod avro_refs;
pub(crate) mod changes;
pub(crate) mod conform;
pub(crate) mod dead_letter;
pub(crate) mod decode;
pub(crate) mod discover;
pub(crate) mod event;
pub mod framing;
pub(crate) mod protobuf;
mod protobuf_arrow;
pub mod registry;
#[cfg(test)]
mod registry_fixtures;
pub(crate) mod shape;
pub(crate) mod writer_columns;

pub use decode::{Decoded, RecordDecoder};
pub use event::{
    MskEvent, MskRecord, PartitionRecords, Problem, SourcePartition, SourceRecord, group_body, group_records,
};
pub use registry::{
    KnownSchema, RegisteredSchema, Resolved, SchemaId, SchemaKind, SchemaReference, SchemaRegistry, Schemas, uuid_text,
};
