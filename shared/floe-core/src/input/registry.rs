//! Registered schemas: the [`SchemaRegistry`] trait the adapters implement (a Confluent-compatible REST client
//! in `floe-backends`, the AWS Glue Schema Registry in `floe-aws`), and the per-container cache in front of it
//! ([`Schemas`]): each schema is fetched once per process, the first time a record names it.
//!
//! A registry that does not answer fails the invocation (retryable: the event source mapping redelivers the
//! same records); a schema the registry says does not exist makes its records dead letters.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::error::Result;

/// The name a framed value gives its writer schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaId {
    /// A Confluent schema id.
    Confluent(u32),
    /// A Glue schema version id (a UUID).
    Glue([u8; 16]),
}

impl std::fmt::Display for SchemaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaId::Confluent(id) => write!(f, "schema id {id}"),
            SchemaId::Glue(b) => write!(f, "schema version {}", uuid_text(b)),
        }
    }
}

/// The canonical text of a UUID's 16 bytes (lowercase, hyphenated 8-4-4-4-12).
pub fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The kind of a registered schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Avro,
    Protobuf,
    JsonSchema,
}

impl SchemaKind {
    pub fn name(self) -> &'static str {
        match self {
            SchemaKind::Avro => "Avro",
            SchemaKind::Protobuf => "Protobuf",
            SchemaKind::JsonSchema => "JSON Schema",
        }
    }
}

/// A schema as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub kind: SchemaKind,
    /// The schema text (Avro JSON, `.proto` source or JSON Schema).
    pub text: String,
    /// The schemas it references (Confluent schema references), resolved by the registry client: each under the
    /// name the schema uses for it (an Avro type's full name, a Protobuf import path), dependencies first.
    pub references: Vec<SchemaReference>,
}

/// A referenced schema, under the name the referencing schema uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    pub name: String,
    pub schema: RegisteredSchema,
}

impl RegisteredSchema {
    /// A schema without references.
    pub fn new(kind: SchemaKind, text: String) -> RegisteredSchema {
        RegisteredSchema { kind, text, references: Vec::new() }
    }

    /// Every schema it references, transitively, each once, dependencies before the schemas using them.
    pub fn dependencies(&self) -> Vec<&SchemaReference> {
        fn walk<'a>(schema: &'a RegisteredSchema, out: &mut Vec<&'a SchemaReference>) {
            for r in &schema.references {
                walk(&r.schema, out);
                if !out.iter().any(|o| o.name == r.name) {
                    out.push(r);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }
}

/// A schema registry client. Implementations bound each call with timeouts and retries and map errors
/// deliberately: `Ok(None)` only when the registry says the schema does not exist; a registry that cannot be
/// reached or answers 5xx is a retryable [`crate::Error::Registry`].
#[async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// The schema `id` names, or `None` if the registry has no such schema.
    async fn schema(&self, id: SchemaId) -> Result<Option<RegisteredSchema>>;
    /// Where the registry is, for logs and errors.
    fn describe(&self) -> String;
}

/// A schema known to this process, with the small dense id the decoders key it by.
#[derive(Debug)]
pub struct KnownSchema {
    pub id: SchemaId,
    pub local: u32,
    pub schema: RegisteredSchema,
}

/// The per-process cache of registered schemas. Missing schemas are not cached: a producer may register one
/// between two deliveries, and a bad id costs one lookup per batch.
pub struct Schemas {
    registry: Arc<dyn SchemaRegistry>,
    known: RwLock<HashMap<SchemaId, Arc<KnownSchema>>>,
}

/// The schemas a batch of records names: each id maps to the schema, or `None` if the registry has none.
pub type Resolved = HashMap<SchemaId, Option<Arc<KnownSchema>>>;

impl Schemas {
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Schemas {
        Schemas { registry, known: RwLock::new(HashMap::new()) }
    }

    pub fn describe(&self) -> String {
        self.registry.describe()
    }

    /// Resolve `ids`, fetching those not yet known (one request per id, ever, per process).
    pub async fn resolve(&self, ids: impl IntoIterator<Item = SchemaId>) -> Result<Resolved> {
        let mut out = Resolved::new();
        for id in ids {
            if out.contains_key(&id) {
                continue;
            }
            let known = self.known.read().expect("schema cache lock").get(&id).cloned();
            let found = match known {
                Some(k) => Some(k),
                None => match self.registry.schema(id).await? {
                    None => None,
                    Some(schema) => {
                        let mut cache = self.known.write().expect("schema cache lock");
                        let local = u32::try_from(cache.len()).expect("fewer than 2^32 schemas");
                        Some(cache.entry(id).or_insert_with(|| Arc::new(KnownSchema { id, local, schema })).clone())
                    }
                },
            };
            out.insert(id, found);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl SchemaRegistry for Counting {
        async fn schema(&self, id: SchemaId) -> Result<Option<RegisteredSchema>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(match id {
                SchemaId::Confluent(n) if n < 10 => {
                    Some(RegisteredSchema::new(SchemaKind::Avro, format!("\"long\" /* {n} */")))
                }
                _ => None,
            })
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[tokio::test]
    async fn each_schema_is_fetched_once_and_missing_ones_are_asked_again() {
        let registry = Arc::new(Counting { calls: AtomicUsize::new(0) });
        let schemas = Schemas::new(registry.clone());
        let ids = [SchemaId::Confluent(1), SchemaId::Confluent(2), SchemaId::Confluent(1), SchemaId::Confluent(42)];
        let first = schemas.resolve(ids).await.unwrap();
        assert_eq!(registry.calls.load(Ordering::SeqCst), 3);
        assert!(first[&SchemaId::Confluent(42)].is_none());
        let (a, b) = (first[&SchemaId::Confluent(1)].clone().unwrap(), first[&SchemaId::Confluent(2)].clone().unwrap());
        assert_ne!(a.local, b.local);
        assert_eq!(a.schema.text, "\"long\" /* 1 */");
        let again = schemas.resolve(ids).await.unwrap();
        assert_eq!(registry.calls.load(Ordering::SeqCst), 4, "only the missing id is asked again");
        assert_eq!(again[&SchemaId::Confluent(1)].as_ref().unwrap().local, a.local);
    }

    #[test]
    fn glue_ids_print_as_uuids() {
        let id = SchemaId::Glue(*b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x01\x23\x45\x67\x89\xab\xcd\xef");
        assert_eq!(id.to_string(), "schema version 12345678-9abc-def0-0123-456789abcdef");
    }
}
