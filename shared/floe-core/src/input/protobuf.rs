//! Registry-framed Protobuf values → Arrow rows. Each value is unframed ([`crate::input::framing`]), its message
//! type found in its registered schema (compiled once per process by protox, a Protobuf compiler in Rust, with
//! the well-known types built in), decoded by prost-reflect, then converted ([`crate::input::protobuf_arrow`])
//! and shaped ([`crate::input::shape`]) into the rows the pipeline's columns read.
//!
//! Which message of the schema a value holds is part of the wire format:
//! - Confluent writes message indexes after the schema id: a zig-zag varint count, then that many zig-zag
//!   varints, the path from the file's top-level messages down the nested ones; a single `0` means `[0]`, the
//!   first message.
//! - Glue writes one unsigned varint: the message's position among all the schema's messages (nested ones
//!   too) sorted by full name.
//!
//! Registries return the schema as `.proto` text (Confluent also accepts, and some stores return, a base64
//! `FileDescriptorProto`: both are read).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use base64::Engine;
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::error::Result;
use crate::input::event::Problem;
use crate::input::framing::{Body, bodies};
use crate::input::protobuf_arrow::message_array;
use crate::input::registry::{KnownSchema, RegisteredSchema, Resolved, SchemaKind};
use crate::input::shape::{ValueRows, ValueShape};
use crate::pipeline::Framing;

/// Decodes Protobuf values into rows of a value schema (the tree of paths the columns read).
#[derive(Debug)]
pub(crate) struct ProtobufValues {
    framing: Framing,
    shape: ValueShape,
    /// Compiled schemas by process-local schema id: compiling is costly, so once per process.
    compiled: Mutex<HashMap<u32, std::result::Result<Arc<Compiled>, String>>>,
}

/// A registered schema, compiled.
#[derive(Debug)]
pub(crate) struct Compiled {
    file: FileDescriptor,
    /// Every message of the file, nested ones too, sorted by full name: Glue's message index.
    by_name: Vec<MessageDescriptor>,
}

/// Messages of one type, each with its record index.
type Group = (MessageDescriptor, Vec<(usize, DynamicMessage)>);

/// Nested messages deeper than this are not a real schema's (and a count that large is a corrupt value).
const MAX_INDEXES: u64 = 64;

impl ProtobufValues {
    pub(crate) fn new(framing: Framing, value_schema: SchemaRef) -> ProtobufValues {
        ProtobufValues { framing, shape: ValueShape::new(value_schema), compiled: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn relaxed_schema(&self) -> &SchemaRef {
        self.shape.relaxed_schema()
    }

    /// Decode `inputs` (record index, value) with the schemas `resolved` names.
    pub(crate) fn decode(&self, inputs: &[(usize, &[u8])], resolved: &Resolved, registry: &str) -> Result<ValueRows> {
        let mut out = ValueRows::default();
        let bodies = bodies(self.framing, inputs, resolved, registry, SchemaKind::Protobuf, &mut out.rejects);
        // Messages of one type are converted together; rows are put back in the records' order at the end.
        // Keyed by schema and message name: two versions of a schema define messages of the same name.
        let mut groups: BTreeMap<(u32, String), Group> = BTreeMap::new();
        for body in &bodies {
            match self.message(body) {
                Ok((desc, message)) => {
                    let key = (body.schema.local, desc.full_name().to_string());
                    groups.entry(key).or_insert_with(|| (desc, Vec::new())).1.push((body.index, message))
                }
                Err(problem) => out.rejects.push((body.index, problem)),
            }
        }
        for (desc, messages) in groups.values() {
            let records: Vec<usize> = messages.iter().map(|(i, _)| *i).collect();
            let rows: Vec<Option<&DynamicMessage>> = messages.iter().map(|(_, m)| Some(m)).collect();
            match message_array(&rows, desc, self.shape.loose(), "$") {
                Ok(values) => self.shape.push(&values, &records, &mut out)?,
                // Rare (a value out of range, a field the columns read as another type): row by row.
                Err(_) => {
                    for (row, &record) in rows.iter().zip(&records) {
                        match message_array(&[*row], desc, self.shape.loose(), "$") {
                            Ok(values) => self.shape.push(&values, &[record], &mut out)?,
                            Err(reason) => out.rejects.push((record, Problem { kind: "schema", reason })),
                        }
                    }
                }
            }
        }
        self.shape.finish(&mut out)?;
        Ok(out)
    }

    /// The message `body` holds, decoded.
    fn message(&self, body: &Body<'_>) -> std::result::Result<(MessageDescriptor, DynamicMessage), Problem> {
        let compiled = self.compiled(&body.schema).map_err(|reason| Problem { kind: "schema", reason })?;
        let (desc, bytes) = compiled
            .select(self.framing, &body.bytes)
            .map_err(|reason| Problem { kind: "framing", reason: format!("{}: {reason}", body.schema.id) })?;
        let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| Problem {
            kind: "protobuf",
            reason: format!("undecodable Protobuf value ({} of {}): {e}", desc.full_name(), body.schema.id),
        })?;
        Ok((desc, message))
    }

    fn compiled(&self, known: &KnownSchema) -> std::result::Result<Arc<Compiled>, String> {
        let mut cache = self.compiled.lock().expect("compiled schema cache lock");
        cache
            .entry(known.local)
            .or_insert_with(|| {
                Compiled::from_schema(&known.schema)
                    .map(Arc::new)
                    .map_err(|e| format!("{} cannot be compiled as Protobuf: {e}", known.id))
            })
            .clone()
    }
}

/// The name the registered file is compiled under when the registry gives `.proto` text (imports name others).
const SCHEMA_FILE: &str = "registered.proto";

impl Compiled {
    /// Compile a registered schema and the files it imports: the well-known types (`google/protobuf/*.proto`,
    /// built in) and its schema references (each served under the import path it is referenced by).
    pub(crate) fn from_schema(schema: &RegisteredSchema) -> std::result::Result<Compiled, String> {
        let file = registered_file(SCHEMA_FILE, &schema.text)?;
        let name = match file.name() {
            "" => SCHEMA_FILE.to_string(),
            name => name.to_string(),
        };
        let mut files = vec![(name.clone(), file)];
        for r in schema.dependencies() {
            if r.schema.text.is_empty() {
                return Err(format!("the imported schema `{}` is not in the registry", r.name));
            }
            let file = registered_file(&r.name, &r.schema.text).map_err(|e| format!("{}: {e}", r.name))?;
            files.push((r.name.clone(), file));
        }
        let mut resolver = ChainFileResolver::new();
        resolver.add(Registered { files });
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(&name).map_err(|e| {
            if e.is_file_not_found() || e.to_string().contains("not found") {
                format!("{e} (an import must be a well-known type or one of the schema's references)")
            } else {
                e.to_string()
            }
        })?;
        let file = compiler
            .descriptor_pool()
            .get_file_by_name(&name)
            .ok_or_else(|| format!("the compiled schema has no file {name}"))?;
        let mut by_name = Vec::new();
        let mut queue: Vec<MessageDescriptor> = file.messages().collect();
        while let Some(m) = queue.pop() {
            queue.extend(m.child_messages());
            by_name.push(m);
        }
        by_name.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        Ok(Compiled { file, by_name })
    }

    /// The message type a body names and the message's bytes after the index.
    pub(crate) fn select<'b>(
        &self,
        framing: Framing,
        body: &'b [u8],
    ) -> std::result::Result<(MessageDescriptor, &'b [u8]), String> {
        match framing {
            Framing::Confluent => {
                let (indexes, rest) = confluent_indexes(body)?;
                let mut level: Vec<MessageDescriptor> = self.file.messages().collect();
                let mut found = None;
                for &i in &indexes {
                    let m = usize::try_from(i)
                        .ok()
                        .and_then(|i| level.get(i))
                        .cloned()
                        .ok_or_else(|| format!("message indexes {indexes:?} name no message of the schema"))?;
                    level = m.child_messages().collect();
                    found = Some(m);
                }
                Ok((found.expect("at least one index"), rest))
            }
            Framing::Glue => {
                let (index, rest) = varint(body).ok_or("the message index (a varint) is missing or malformed")?;
                let m = usize::try_from(index).ok().and_then(|i| self.by_name.get(i)).cloned().ok_or_else(|| {
                    format!("message index {index} names no message of the schema ({} messages)", self.by_name.len())
                })?;
                Ok((m, rest))
            }
        }
    }
}

/// Confluent's message indexes and the bytes after them.
fn confluent_indexes(body: &[u8]) -> std::result::Result<(Vec<i64>, &[u8]), String> {
    let bad = "the message indexes after the schema id are missing or malformed";
    let (count, mut rest) = varint(body).map(|(n, r)| (unzigzag(n), r)).ok_or(bad)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if count < 0 || count as u64 > MAX_INDEXES {
        return Err(format!("{bad} (a count of {count})"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (i, r) = varint(rest).ok_or(bad)?;
        indexes.push(unzigzag(i));
        rest = r;
    }
    Ok((indexes, rest))
}

/// An unsigned LEB128 varint (at most 10 bytes) and the bytes after it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// A registered schema's file: a base64 `FileDescriptorProto`, or `.proto` text parsed under `name`.
fn registered_file(name: &str, text: &str) -> std::result::Result<File, String> {
    match descriptor_proto(text) {
        Some(file) => Ok(file),
        None => File::from_source(name, text).map_err(|e| e.to_string()),
    }
}

/// A schema registered as a base64 `FileDescriptorProto` (what confluent-kafka's Python serializer registers):
/// `.proto` text always has characters outside base64's alphabet (spaces, `;`).
fn descriptor_proto(text: &str) -> Option<File> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    File::decode_file_descriptor_proto(bytes.as_slice()).ok()
}

/// Serves the registered file and its references to the compiler, each under its name.
struct Registered {
    files: Vec<(String, File)>,
}

impl FileResolver for Registered {
    fn open_file(&self, name: &str) -> std::result::Result<File, protox::Error> {
        match self.files.iter().find(|(n, _)| n == name) {
            Some((_, file)) => Ok(file.clone()),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[cfg(test)]
impl Compiled {
    /// Compile registered schema text without references: `.proto` text, or a base64 `FileDescriptorProto`.
    pub(crate) fn new(text: &str) -> std::result::Result<Compiled, String> {
        Self::from_schema(&RegisteredSchema::new(SchemaKind::Protobuf, text.to_string()))
    }

    pub(crate) fn message_names(&self) -> Vec<String> {
        self.by_name.iter().map(|m| m.full_name().to_string()).collect()
    }
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
