//! The wire formats that put a registered schema's name before each value: Confluent's (magic byte 0, 4-byte
//! big-endian schema id) and the AWS Glue Schema Registry's (header version 3, compression 0 = none or 5 = zlib,
//! 16-byte schema version UUID). Pure functions over bytes: a value that does not parse is a dead letter with
//! the reason, never a panic (fuzzed in `fuzz/`).

use std::borrow::Cow;
use std::io::Read;

use std::sync::Arc;

use crate::input::event::Problem;
use crate::input::registry::{KnownSchema, Resolved, SchemaId, SchemaKind};
use crate::pipeline::Framing;

const CONFLUENT_MAGIC: u8 = 0;
const GLUE_HEADER_VERSION: u8 = 3;
const GLUE_COMPRESSION_NONE: u8 = 0;
const GLUE_COMPRESSION_ZLIB: u8 = 5;
/// A zlib-compressed Glue body may inflate to at most this many bytes (Kafka's own record limit is far below):
/// a small record cannot expand into gigabytes of memory.
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

/// A framed value: the schema that wrote it and its body (inflated if it was compressed).
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub schema: SchemaId,
    pub body: Cow<'a, [u8]>,
}

/// Split `value` into its schema name and body, or say why it is not framed as `framing` says.
pub fn unframe(framing: Framing, value: &[u8]) -> Result<Framed<'_>, String> {
    match framing {
        Framing::Confluent => confluent(value),
        Framing::Glue => glue(value),
    }
}

/// A value's body with the registered schema that wrote it.
pub(crate) struct Body<'a> {
    /// The record's index in its batch.
    pub index: usize,
    pub schema: Arc<KnownSchema>,
    pub bytes: Cow<'a, [u8]>,
}

/// Unframe `inputs` (record index, value) and find each one's schema in `resolved`. A value without the framing, or
/// naming a schema the registry (`registry`) does not have or of another kind than `kind`, is rejected.
pub(crate) fn bodies<'a>(
    framing: Framing,
    inputs: &[(usize, &'a [u8])],
    resolved: &Resolved,
    registry: &str,
    kind: SchemaKind,
    rejects: &mut Vec<(usize, Problem)>,
) -> Vec<Body<'a>> {
    let mut out = Vec::with_capacity(inputs.len());
    for &(index, value) in inputs {
        let framed = match unframe(framing, value) {
            Ok(f) => f,
            Err(reason) => {
                rejects.push((index, Problem { kind: "framing", reason }));
                continue;
            }
        };
        match resolved.get(&framed.schema).and_then(Option::as_ref) {
            None => {
                let reason = format!("{} is not in the schema registry ({registry})", framed.schema);
                rejects.push((index, Problem { kind: "unknown_schema", reason }));
            }
            Some(known) if known.schema.kind != kind => {
                let (found, wanted) = (known.schema.kind.name(), kind.name());
                let reason = format!("{} is registered as {found}; this pipeline reads {wanted}", framed.schema);
                rejects.push((index, Problem { kind: "unknown_schema", reason }));
            }
            Some(known) => out.push(Body { index, schema: known.clone(), bytes: framed.body }),
        }
    }
    out
}

/// The schema a value names, reading only its header (no inflating); `None` if it is not framed.
pub fn schema_of(framing: Framing, value: &[u8]) -> Option<SchemaId> {
    match (framing, value) {
        (Framing::Confluent, [CONFLUENT_MAGIC, a, b, c, d, ..]) => {
            Some(SchemaId::Confluent(u32::from_be_bytes([*a, *b, *c, *d])))
        }
        (Framing::Glue, [GLUE_HEADER_VERSION, _, rest @ ..]) => rest.first_chunk::<16>().map(|u| SchemaId::Glue(*u)),
        _ => None,
    }
}

fn confluent(value: &[u8]) -> Result<Framed<'_>, String> {
    match value {
        [CONFLUENT_MAGIC, a, b, c, d, body @ ..] => {
            Ok(Framed { schema: SchemaId::Confluent(u32::from_be_bytes([*a, *b, *c, *d])), body: Cow::Borrowed(body) })
        }
        [CONFLUENT_MAGIC, ..] => Err(format!(
            "value is {} bytes, shorter than Confluent's 5-byte header (magic byte 0, 4-byte schema id)",
            value.len()
        )),
        [] => Err("value is empty, expected Confluent's magic byte 0 and a schema id".into()),
        [first, ..] => Err(format!(
            "first byte is {first:#04x}, not Confluent's magic byte 0x00: the value was not written by a \
             schema-registry serializer{}",
            if *first == GLUE_HEADER_VERSION { " (it looks Glue-framed: set framing = \"glue\")" } else { "" }
        )),
    }
}

fn glue(value: &[u8]) -> Result<Framed<'_>, String> {
    let Some((&[version, compression], rest)) = value.split_first_chunk::<2>() else {
        return Err(format!("value is {} bytes, shorter than the Glue header (18 bytes)", value.len()));
    };
    if version != GLUE_HEADER_VERSION {
        return Err(format!(
            "header version byte is {version:#04x}, not the Glue Schema Registry's 0x03{}",
            if version == CONFLUENT_MAGIC { " (it looks Confluent-framed: set framing = \"confluent\")" } else { "" }
        ));
    }
    let Some((uuid, body)) = rest.split_first_chunk::<16>() else {
        return Err(format!("value is {} bytes, shorter than the Glue header (18 bytes)", value.len()));
    };
    let schema = SchemaId::Glue(*uuid);
    match compression {
        GLUE_COMPRESSION_NONE => Ok(Framed { schema, body: Cow::Borrowed(body) }),
        GLUE_COMPRESSION_ZLIB => {
            let mut inflated = Vec::new();
            let mut reader = flate2::read::ZlibDecoder::new(body).take(MAX_INFLATED_BYTES + 1);
            reader.read_to_end(&mut inflated).map_err(|e| format!("zlib-compressed body does not inflate: {e}"))?;
            if inflated.len() as u64 > MAX_INFLATED_BYTES {
                return Err(format!("zlib-compressed body inflates to more than {MAX_INFLATED_BYTES} bytes"));
            }
            Ok(Framed { schema, body: Cow::Owned(inflated) })
        }
        other => Err(format!("compression byte is {other:#04x}: the Glue format has 0x00 (none) and 0x05 (zlib)")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn confluent_frames_name_their_schema_id() {
        // Bytes confluent-kafka's AvroSerializer wrote for {"id": 1, "item": "a"} under schema id 1.
        let value = [0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x02, 0x61];
        let framed = unframe(Framing::Confluent, &value).unwrap();
        assert_eq!(framed.schema, SchemaId::Confluent(1));
        assert_eq!(&*framed.body, &[0x02, 0x02, 0x61]);
        let big = [0x00, 0x01, 0x02, 0x03, 0x04];
        assert_eq!(unframe(Framing::Confluent, &big).unwrap().schema, SchemaId::Confluent(0x0102_0304));
    }

    #[test]
    fn bad_confluent_frames_are_explained() {
        let err = |v: &[u8]| unframe(Framing::Confluent, v).unwrap_err();
        assert!(err(b"").contains("empty"));
        assert!(err(&[0, 0, 1]).contains("shorter than Confluent's 5-byte header"));
        assert!(err(b"{\"id\":1}").contains("0x7b, not Confluent's magic byte"));
        assert!(err(&[3, 0, 1, 2, 3, 4]).contains("looks Glue-framed"));
    }

    fn glue_frame(compression: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![3, compression];
        v.extend(0x10u8..0x20);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn glue_frames_name_their_schema_version_and_inflate_zlib() {
        let plain = glue_frame(0, b"\x02\x02a");
        let framed = unframe(Framing::Glue, &plain).unwrap();
        let mut uuid = [0u8; 16];
        uuid.iter_mut().zip(0x10u8..).for_each(|(b, v)| *b = v);
        assert_eq!(framed.schema, SchemaId::Glue(uuid));
        assert_eq!(&*framed.body, b"\x02\x02a");

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&b"\x02\x02a".repeat(100)).unwrap();
        let compressed = glue_frame(5, &z.finish().unwrap());
        let framed = unframe(Framing::Glue, &compressed).unwrap();
        assert_eq!(&*framed.body, &b"\x02\x02a".repeat(100)[..]);
    }

    #[test]
    fn bad_glue_frames_are_explained() {
        let err = |v: &[u8]| unframe(Framing::Glue, v).unwrap_err();
        assert!(err(&[3]).contains("shorter than the Glue header"));
        assert!(err(&glue_frame(0, b"")[..10]).contains("shorter than the Glue header"));
        assert!(err(&[0, 0, 0, 0, 1, 2]).contains("looks Confluent-framed"));
        assert!(err(&glue_frame(7, b"x")).contains("compression byte is 0x07"));
        assert!(err(&glue_frame(5, b"not zlib")).contains("does not inflate"));
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 1 {
            z.write_all(&zeros).unwrap();
        }
        let bomb = glue_frame(5, &z.finish().unwrap());
        assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
        assert!(unframe(Framing::Glue, &bomb).unwrap_err().contains("inflates to more than"));
    }
}
