//! The event's records read leniently: each record on its own, fields borrowed from the event where JSON allows,
//! and a record that does not have the mapping's shape kept as a [`Malformed`] one (a dead letter to be) instead
//! of failing the event.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::{Malformed, MskRecord};

/// Read each record on its own, so that one malformed record becomes a [`Malformed`] record (a dead letter)
/// instead of failing the whole event.
pub(super) fn lenient_records<'de, D>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, Vec<MskRecord>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let groups = BTreeMap::<String, Vec<LenientRecord>>::deserialize(deserializer)?;
    Ok(groups.into_iter().map(|(key, records)| (key, records.into_iter().map(|r| r.0).collect())).collect())
}

/// One record read without failing. The hot path reads the record's fields straight from the event, borrowing
/// keys and strings from it (one allocation per string field kept, none per key or number); only a record that
/// does not have the mapping's shape is assembled into a `serde_json::Value` and read the strict way, which
/// names the problem.
struct LenientRecord(MskRecord);

impl<'de> Deserialize<'de> for LenientRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor)
    }
}

struct LenientVisitor;

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = LenientRecord;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an MSK record")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<LenientRecord, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Any<'de>)> = Vec::with_capacity(8);
        while let Some(key) = map.next_key::<Any<'de>>()? {
            let Any::Str(key) = key else { unreachable!("JSON object keys are strings") };
            let value = map.next_value::<Any<'de>>()?;
            // A repeated key: the last one wins, as in a `serde_json::Value`.
            fields.retain(|(k, _)| *k != key);
            fields.push((key, value));
        }
        Ok(LenientRecord(MskRecord::from_fields(fields)))
    }

    // Anything but an object is malformed: the strict path names it.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> std::result::Result<LenientRecord, A::Error> {
        Ok(strict(serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?))
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<LenientRecord, E> {
        Ok(strict(serde_json::Value::Null))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<LenientRecord, E> {
        Ok(strict(v.into()))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<LenientRecord, E> {
        Ok(strict(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<LenientRecord, E> {
        Ok(strict(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<LenientRecord, E> {
        Ok(strict(v.into()))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<LenientRecord, E> {
        Ok(strict(v.into()))
    }
}

/// A field of a record as the event holds it: strings borrowed from the event where JSON allows (no escapes),
/// numbers as they are; arrays and objects (headers, unknown fields) whole.
enum Any<'de> {
    Str(Cow<'de, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Null,
    Other(serde_json::Value),
}

impl Any<'_> {
    /// A field of type `Option<String>`: `None` when it is not one.
    fn optional_string(&self) -> Option<Option<String>> {
        match self {
            Any::Str(s) => Some(Some(s.to_string())),
            Any::Null => Some(None),
            _ => None,
        }
    }

    /// A field of type `i64`.
    fn int(&self) -> Option<i64> {
        match self {
            Any::Int(i) => Some(*i),
            Any::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    fn into_value(self) -> serde_json::Value {
        match self {
            Any::Str(s) => s.into_owned().into(),
            Any::Int(i) => i.into(),
            Any::UInt(u) => u.into(),
            Any::Float(f) => f.into(),
            Any::Bool(b) => b.into(),
            Any::Null => serde_json::Value::Null,
            Any::Other(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> serde::de::Visitor<'de> for AnyVisitor {
    type Value = Any<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Owned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Any<'de>, E> {
        Ok(Any::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Float(v))
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Bool(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Any<'de>, E> {
        Ok(Any::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> std::result::Result<Any<'de>, A::Error> {
        serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Any::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Any<'de>, A::Error> {
        serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Any::Other)
    }
}

/// A record that is not an object: always malformed, named by the strict path.
fn strict(value: serde_json::Value) -> LenientRecord {
    LenientRecord(MskRecord::from_value(value))
}

impl MskRecord {
    /// A record from its fields as they arrived. A record of the mapping's shape is read here, field by field,
    /// exactly as the derived deserializer would read it (unknown fields ignored); any other takes
    /// [`MskRecord::from_value`], which names the problem and keeps the JSON.
    fn from_fields(fields: Vec<(Cow<'_, str>, Any<'_>)>) -> MskRecord {
        match MskRecord::read_fields(&fields) {
            Some(record) => record,
            None => MskRecord::from_value(serde_json::Value::Object(
                fields.into_iter().map(|(k, v)| (k.into_owned(), v.into_value())).collect(),
            )),
        }
    }

    fn read_fields(fields: &[(Cow<'_, str>, Any<'_>)]) -> Option<MskRecord> {
        let mut record = MskRecord::default();
        let (mut partition, mut offset, mut timestamp) = (None, None, None);
        for (key, value) in fields {
            match key.as_ref() {
                "topic" => record.topic = value.optional_string()?,
                "partition" => partition = Some(value.int()?),
                "offset" => offset = Some(value.int()?),
                "timestamp" => timestamp = Some(value.int()?),
                "timestampType" => record.timestamp_type = value.optional_string()?,
                "key" => record.key = value.optional_string()?,
                "value" => record.value = value.optional_string()?,
                "headers" => match value {
                    Any::Other(headers) => record.headers = Deserialize::deserialize(headers).ok()?,
                    _ => return None,
                },
                _ => {}
            }
        }
        (record.partition, record.offset, record.timestamp) = (partition?, offset?, timestamp?);
        Some(record)
    }

    /// One record of an event; never fails (see [`Malformed`]). Position fields that cannot be read are set to
    /// -1, which [`super::group_records`] rejects for the whole event: without a position a record cannot be fenced.
    fn from_value(value: serde_json::Value) -> MskRecord {
        match MskRecord::deserialize(&value) {
            Ok(record) => record,
            Err(e) => {
                let int = |name: &str| value.get(name).and_then(serde_json::Value::as_i64);
                MskRecord {
                    topic: value.get("topic").and_then(serde_json::Value::as_str).map(str::to_string),
                    partition: int("partition").unwrap_or(-1),
                    offset: int("offset").unwrap_or(-1),
                    timestamp: int("timestamp").unwrap_or(0),
                    malformed: Some(Malformed { reason: e.to_string(), raw: value.to_string() }),
                    ..MskRecord::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_reads_records_exactly_as_the_strict_one() {
        let records = [
            r#"{"topic":"t","partition":3,"offset":9,"timestamp":1545084650987,"timestampType":"CREATE_TIME","key":"a2V5","value":"e30=","headers":[{"h":[104,-1]}],"extra":{"x":1}}"#,
            r#"{"partition":0,"offset":0,"timestamp":0,"key":null,"value":null}"#,
            r#"{"offset":1,"partition":2,"timestamp":3,"offset":4}"#,
            r#"{"t\u006fpic":"a\/b","partition":0,"offset":18446744073709551,"timestamp":-5,"value":"e3\u0030="}"#,
        ];
        for text in records {
            let fast = serde_json::from_str::<LenientRecord>(text).unwrap().0;
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let strict = MskRecord::deserialize(&value).unwrap();
            assert_eq!(fast, strict, "{text}");
            assert!(fast.malformed.is_none());
        }
        // Wrong shapes take the strict path, which names the problem and keeps the record's JSON.
        for (text, reason) in [
            (r#"{"partition":0,"offset":1,"timestamp":"x"}"#, "invalid type: string \"x\", expected i64"),
            (r#"{"partition":0,"offset":1}"#, "missing field `timestamp`"),
            (r#"{"partition":0,"offset":1,"timestamp":2,"headers":[{"h":"x"}]}"#, "expected a sequence"),
            (r#"{"partition":0,"offset":1,"timestamp":2,"value":[]}"#, "invalid type: sequence, expected a string"),
            (r#"{"partition":0,"offset":1,"timestamp":2,"headers":null}"#, "invalid type: null, expected a sequence"),
            (r#"{"partition":0,"offset":18446744073709551615,"timestamp":2}"#, "invalid value: integer"),
            (r#"{"partition":0,"offset":1,"timestamp":2,"key":true}"#, "invalid type: boolean `true`"),
            ("[1]", "invalid type: integer `1`, expected a string"), // read as a tuple, like the derive
            ("7", "expected struct MskRecord"),
        ] {
            let record = serde_json::from_str::<LenientRecord>(text).unwrap().0;
            let m = record.malformed.as_ref().unwrap_or_else(|| panic!("{text} is malformed"));
            assert!(m.reason.contains(reason), "{text}: {}", m.reason);
            let raw: serde_json::Value = serde_json::from_str(&m.raw).unwrap();
            assert_eq!(raw, serde_json::from_str::<serde_json::Value>(text).unwrap());
        }
    }
}
