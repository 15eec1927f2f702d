//! Avro schemas with references (Confluent schema references: a record using `shop.Address`, registered under
//! its own subject) made self-contained for the decoder: the first use of each referenced named type is replaced
//! by its definition, as Avro allows a named type to be defined where it is first used; later uses keep the name.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::input::registry::RegisteredSchema;

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// `schema`'s text, with its referenced named types defined inline (as is when it has no references).
pub(crate) fn self_contained(schema: &RegisteredSchema) -> Result<Cow<'_, str>, String> {
    if schema.references.is_empty() {
        return Ok(Cow::Borrowed(&schema.text));
    }
    let mut definitions: HashMap<String, Value> = HashMap::new();
    for r in schema.dependencies() {
        if r.schema.text.is_empty() {
            return Err(format!("the referenced schema `{}` is not in the registry", r.name));
        }
        let def: Value = serde_json::from_str(&r.schema.text)
            .map_err(|e| format!("the referenced schema `{}` is not Avro JSON: {e}", r.name))?;
        definitions.insert(full_name(&def, None).unwrap_or_else(|| r.name.clone()), def);
    }
    let mut main: Value = serde_json::from_str(&schema.text).map_err(|e| format!("not Avro JSON: {e}"))?;
    let mut inliner = Inliner { definitions, defined: HashSet::new() };
    inliner.walk(&mut main, None)?;
    Ok(Cow::Owned(main.to_string()))
}

/// The full name a named type's definition gives it.
fn full_name(def: &Value, ns: Option<&str>) -> Option<String> {
    let name = def.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_string());
    }
    match def.get("namespace").and_then(Value::as_str).or(ns) {
        Some(ns) if !ns.is_empty() => Some(format!("{ns}.{name}")),
        _ => Some(name.to_string()),
    }
}

struct Inliner {
    definitions: HashMap<String, Value>,
    defined: HashSet<String>,
}

impl Inliner {
    fn walk(&mut self, schema: &mut Value, ns: Option<&str>) -> Result<(), String> {
        match schema {
            Value::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
                let candidates = match ns {
                    Some(ns) if !name.contains('.') => vec![format!("{ns}.{name}"), name.clone()],
                    _ => vec![name.clone()],
                };
                if candidates.iter().any(|c| self.defined.contains(c)) {
                    return Ok(());
                }
                if let Some(full) = candidates.into_iter().find(|c| self.definitions.contains_key(c)) {
                    let mut def = self.definitions[&full].clone();
                    // Defined here under its full name, whatever namespace encloses it: an explicit namespace (the
                    // empty one for a name without), which readers that do not take dotted names also follow.
                    if let Value::Object(o) = &mut def {
                        let (namespace, name) = full.rsplit_once('.').unwrap_or(("", &full));
                        o.insert("name".into(), Value::String(name.to_string()));
                        o.insert("namespace".into(), Value::String(namespace.to_string()));
                    }
                    self.walk(&mut def, None)?;
                    *schema = def;
                }
                Ok(())
            }
            Value::Array(branches) => branches.iter_mut().try_for_each(|b| self.walk(b, ns)),
            Value::Object(o) => {
                let kind = o.get("type").and_then(Value::as_str).map(str::to_string);
                match kind.as_deref() {
                    Some("record" | "error" | "enum" | "fixed") => {
                        let def = Value::Object(o.clone());
                        let full = full_name(&def, ns).ok_or("a named type without a name")?;
                        self.defined.insert(full.clone());
                        let inner = full.rsplit_once('.').map(|(n, _)| n.to_string());
                        if let Some(Value::Array(fields)) = o.get_mut("fields") {
                            for f in fields {
                                if let Some(t) = f.get_mut("type") {
                                    self.walk(t, inner.as_deref())?;
                                }
                            }
                        }
                        Ok(())
                    }
                    Some("array") => o.get_mut("items").map_or(Ok(()), |t| self.walk(t, ns)),
                    Some("map") => o.get_mut("values").map_or(Ok(()), |t| self.walk(t, ns)),
                    _ => o.get_mut("type").map_or(Ok(()), |t| self.walk(t, ns)),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::input::registry::{SchemaKind, SchemaReference};

    fn avro(text: &str) -> RegisteredSchema {
        RegisteredSchema::new(SchemaKind::Avro, text.into())
    }

    #[test]
    fn referenced_types_are_defined_at_their_first_use() {
        let address = r#"{"type": "record", "name": "Address", "namespace": "common",
            "fields": [{"name": "city", "type": "string"}, {"name": "country", "type": "common.Country"}]}"#;
        let country = r#"{"type": "enum", "name": "Country", "namespace": "common", "symbols": ["NO", "SE"]}"#;
        let order = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
            {"name": "id", "type": "long"},
            {"name": "ship_to", "type": ["null", "common.Address"]},
            {"name": "bill_to", "type": "common.Address"},
            {"name": "origin", "type": "common.Country"}]}"#;
        let mut with_refs = avro(order);
        let mut addr = avro(address);
        addr.references.push(SchemaReference { name: "common.Country".into(), schema: avro(country) });
        with_refs.references.push(SchemaReference { name: "common.Address".into(), schema: addr });
        let text = self_contained(&with_refs).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let ship_to = &v["fields"][1]["type"][1];
        assert_eq!((&ship_to["namespace"], &ship_to["name"]), (&json!("common"), &json!("Address")), "{text}");
        assert_eq!(ship_to["fields"][1]["type"]["name"], "Country", "{text}");
        assert_eq!(v["fields"][2]["type"], "common.Address", "a later use keeps the name");
        assert_eq!(v["fields"][3]["type"], "common.Country");
        // arrow-avro reads the result as one schema.
        use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(Fingerprint::Id(1), AvroSchema::new(text.to_string())).unwrap();
        arrow_avro::reader::ReaderBuilder::new().with_writer_schema_store(store).build_decoder().unwrap();

        let missing = {
            let mut s = avro(order);
            s.references.push(SchemaReference { name: "common.Address".into(), schema: avro("") });
            s
        };
        assert!(self_contained(&missing).unwrap_err().contains("`common.Address` is not in the registry"));
        assert_eq!(self_contained(&avro(order)).unwrap(), order, "no references: the text as it is");
    }
}
