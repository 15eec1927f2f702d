//! The benchmark's records as Protobuf: each JSON value parsed into a message of [`PROTO`] (prost-reflect's
//! Protobuf JSON mapping) and re-encoded as a Confluent-framed Protobuf value (schema id [`crate::avro::SCHEMA_ID`],
//! message index `[0]`), in the same events. [`crate::avro::StaticRegistry`] serves the schema in process.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost_reflect::prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use crate::avro::SCHEMA_ID;
use crate::reencode::reencode_events;

/// The benchmark's records as a Protobuf schema: the fields of [`crate::generate::arrow_schema`], optional where
/// the columns are.
pub const PROTO: &str = r#"syntax = "proto3";
package bench;

import "google/protobuf/timestamp.proto";

message Event {
  string event_id = 1;
  string event_type = 2;
  google.protobuf.Timestamp ts = 3;
  google.protobuf.Timestamp received_at = 4;
  int64 seq = 5;
  User user = 6;
  optional string session_id = 7;
  Device device = 8;
  Page page = 9;
  Geo geo = 10;
  repeated Item items = 11;
  repeated string tags = 12;
  optional double amount = 13;
  optional string currency = 14;
  optional int32 latency_ms = 15;
  optional bool is_bot = 16;
  Experiment experiment = 17;
  optional string user_agent = 18;
  optional string ip = 19;
  Campaign campaign = 20;
  optional int32 payload_version = 21;
}
message User {
  int64 id = 1;
  optional string country = 2;
  optional string segment = 3;
  optional bool logged_in = 4;
  optional string email_hash = 5;
}
message Device {
  optional string os = 1;
  optional string os_version = 2;
  optional string browser = 3;
  optional string model = 4;
  Screen screen = 5;
}
message Screen { optional int32 w = 1; optional int32 h = 2; }
message Page { string url = 1; optional string referrer = 2; optional string title = 3; }
message Geo { optional double lat = 1; optional double lon = 2; optional string city = 3; }
message Item { string sku = 1; optional int32 qty = 2; optional double price = 3; optional string category = 4; }
message Experiment { optional string id = 1; optional string variant = 2; }
message Campaign { optional string source = 1; optional string medium = 2; optional string name = 3; }
"#;

struct Schema;

impl FileResolver for Schema {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match name {
            "bench.proto" => File::from_source(name, PROTO),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Write `<out>/events/*.json` (the events of `<data>` with Protobuf values), `<out>/schema.proto`,
/// `<out>/schema.arrow` and `<out>/pipeline.toml` (`format = "protobuf"`).
pub fn convert(data: &Path, out: &Path) -> anyhow::Result<usize> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Schema);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file("bench.proto")?;
    let event_type = compiler.descriptor_pool().get_message_by_name("bench.Event").context("bench.Event")?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let records = reencode_events(data, out, "protobuf", |list| {
        for r in list.iter_mut() {
            let json = STANDARD.decode(r["value"].as_str().context("a value")?)?;
            let mut de = serde_json::Deserializer::from_slice(&json);
            let message = DynamicMessage::deserialize_with_options(event_type.clone(), &mut de, &options)?;
            let mut value = vec![0];
            value.extend_from_slice(&SCHEMA_ID.to_be_bytes());
            value.push(0); // message indexes [0]: the file's first message
            message.encode(&mut value)?;
            r["value"] = Value::String(STANDARD.encode(value));
        }
        Ok(())
    })?;
    std::fs::write(out.join("schema.proto"), PROTO)?;
    Ok(records)
}
