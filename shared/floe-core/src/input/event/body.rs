//! The invocation body read as it arrived, without building an [`super::MskEvent`]: records borrowed from the
//! body, key and value as their raw base64 text.
//!
//! Why: reading the event was the largest serial step of an invocation (on two vCPUs the partitions wait for
//! it). Measured on the lean workload, one 5,000-record event took 5.9 ms through [`super::MskEvent`] (a
//! `String` per text field, UTF-8 checks of every value) against 2.0 ms here: the base64 text is read as bytes
//! (serde_json then only looks for the closing quote), and base64 decoding rejects anything that is not base64
//! anyway, as a dead letter of its record.
//!
//! This reader takes only the mapping's exact shape and fails on anything else (a fractional timestamp, a
//! value that is not a string, a repeated field…); the caller then reads the body the lenient way, record by
//! record, so a malformed record is still kept as a dead letter and never fails its event. A well-formed event
//! is read once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::RecordRef;

/// The records of a body by group key (`"<topic>-<partition>"`), sorted as [`super::MskEvent`] sorts them.
pub(super) type Groups<'a> = BTreeMap<Str<'a>, Vec<RecordRef<'a>>>;

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    records: Groups<'a>,
}

/// Read `body` if every record has the mapping's exact shape; an error names the first that does not.
pub(super) fn read(body: &[u8]) -> serde_json::Result<Groups<'_>> {
    serde_json::from_slice::<Body>(body).map(|b| b.records)
}

/// A JSON string, borrowed from the body unless it has escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Visitor).map(Str)
    }
}

/// A JSON string's bytes, escapes expanded, without checking that they are UTF-8 (base64 text is ASCII, and
/// decoding it checks every byte): borrowed from the body unless it has escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, [u8]>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_vec()))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v.as_bytes()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.as_bytes().to_vec()))
            }
        }
        // serde_json reads a string asked for as bytes without the UTF-8 check; an array would be a sequence of
        // numbers, which the visitor refuses, as it refuses every other type.
        deserializer.deserialize_bytes(Visitor).map(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::event::{MskEvent, group_body, group_body_on, group_records};

    /// Grouping the body directly and through an `MskEvent` give the same records, problems included.
    fn same_both_ways(body: &str) -> Vec<crate::input::event::PartitionRecords> {
        let topics = ["t".to_string()];
        let event: MskEvent = serde_json::from_str(body).unwrap();
        let expected = group_records(&event, &topics).unwrap();
        for threads in [1, 3] {
            assert_eq!(group_body_on(body.as_bytes(), &topics, threads).unwrap(), expected, "{body}");
        }
        expected
    }

    #[test]
    fn the_fast_reader_takes_exactly_the_mappings_shape() {
        let good = [
            r#"{"eventSource":"aws:kafka","records":{"t-0":[{"topic":"t","partition":0,"offset":1,"timestamp":2,
               "timestampType":"CREATE_TIME","key":"a2V5","value":"e30=","headers":[{"h":[104,-1]}],"x":{"y":[1]}}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"key":null,"value":null,"topic":null}]}}"#,
            // Escapes in a field name, the topic and the base64 text (`\u0030` is `0`, `\/` is `/`).
            r#"{"records":{"t-0":[{"t\u006fpic":"\u0074","partition":0,"offset":1,"timestamp":2,"value":"e3\u0030="},
               {"topic":"t","partition":0,"offset":2,"timestamp":2,"value":"Pz8\/"}]}}"#,
            r#"{"records":{}}"#,
            r#"{}"#,
        ];
        for body in good {
            read(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            same_both_ways(body);
        }
        let escaped = same_both_ways(good[2]);
        let values: Vec<_> = escaped[0].records.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, [b"{}".to_vec(), b"???".to_vec()]);
        // Anything else is read record by record, and grouping gives what the MskEvent path gives.
        let other = [
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2.5,"value":"e30="}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"value":12}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"value":[101,51]}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"value":{"a":1}}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"key":true}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"headers":null}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"timestampType":3}]}}"#,
            r#"{"records":{"t-0":[{"partition":0,"offset":1,"offset":2,"timestamp":2,"value":"e30="}]}}"#,
        ];
        for (n, body) in other.iter().enumerate() {
            assert!(read(body.as_bytes()).is_err(), "{body}");
            let problems = same_both_ways(body)[0].records.iter().filter(|r| r.problem.is_some()).count();
            // A repeated field is not a problem: the last one counts, as in the lenient reader.
            assert_eq!(problems, usize::from(n != 7), "{body}");
        }
        // A record without a usable position fails the event either way, with the same error.
        let topics = ["t".to_string()];
        for body in [
            r#"{"records":{"t-0":[{"partition":0,"offset":18446744073709551615,"timestamp":2}],"t-1":[]}}"#,
            r#"{"records":{"t-0":[7,{"partition":0,"offset":3,"timestamp":2,"value":"e30="}]}}"#,
        ] {
            let event: MskEvent = serde_json::from_str(body).unwrap();
            let strict = group_records(&event, &topics).unwrap_err().to_string();
            assert_eq!(group_body(body.as_bytes(), &topics).unwrap_err().to_string(), strict);
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_is_a_dead_letter_not_a_failed_event() {
        // The body reader does not check the base64 text for UTF-8: the record's base64 decoding rejects it.
        let mut body = br#"{"records":{"t-0":[{"partition":0,"offset":1,"timestamp":2,"value":"e3"#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#"0="},{"partition":0,"offset":2,"timestamp":2,"value":"e30="}]}}"#);
        let groups = group_body(&body, &["t".to_string()]).unwrap();
        let problems: Vec<_> = groups[0].records.iter().map(|r| r.problem.as_ref().map(|p| p.kind)).collect();
        assert_eq!(problems, [Some("base64"), None]);
        assert_eq!(groups[0].records[0].value.as_deref(), Some(&b"e3\xff\xfe0="[..]), "the text as it arrived");
    }

    #[test]
    fn a_body_that_is_not_an_event_fails_with_a_clear_error() {
        for body in ["", "[1", "{\"records\":3}", "null"] {
            let err = group_body(body.as_bytes(), &["t".to_string()]).unwrap_err().to_string();
            assert!(err.contains("the invocation body is not an MSK event"), "{body}: {err}");
        }
    }
}
