//! Schema evolution: what a table must become so that the files of a layout (the pipeline file as it is now)
//! can be written into it, decided on Iceberg's rules and never guessed.
//!
//! The table is the authority on field ids: a column keeps its id for life, and a new one gets the next id
//! after the table's `last-column-id`. [`plan`] matches the layout's declared columns to the table's by name
//! (or by `renamed_from`, for a rename the pipeline file spells out) and allows exactly the changes Iceberg
//! readers handle without rewriting data: new optional columns at any depth (struct fields, list elements, map
//! values), `int` → `long`, `float` → `double`, `decimal(P,S)` → `decimal(P',S)` with P' > P, required →
//! optional, docs, renames, and table properties the pipeline file sets. A pipeline that declares *less* than
//! the table (an older file during a rolling deployment, a narrower type, a dropped optional column) is
//! compatible as it is: its files leave the other columns null, and narrower values are widened when written;
//! a column it names by a name the table had before a rename is that column (the table's older schemas say
//! which field id the name had). Everything else is a problem, named with the column and both types; partition
//! spec changes are refused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PartitionSpec, PrimitiveType, Schema, StructType, TableMetadata,
    Type, UnboundPartitionSpec,
};

use crate::error::{Error, Result};
use crate::pipeline::type_name;

/// What a table needs before a layout's files can be committed into it; empty if nothing.
#[derive(Debug, Clone, Default)]
pub struct Evolution {
    /// The table's new current schema: existing fields keep their ids, new ones follow `last-column-id`.
    pub schema: Option<Schema>,
    /// Table properties the pipeline file sets to other values than the table has.
    pub properties: HashMap<String, String>,
    /// Each change, for logs and `floe validate` (e.g. ``column `quantity`: int → long``).
    pub changes: Vec<String>,
}

impl Evolution {
    pub fn is_empty(&self) -> bool {
        self.schema.is_none() && self.properties.is_empty()
    }
}

/// What the pipeline file wants of a table: its declared schema (ids as on create), partition spec,
/// properties, and the top-level renames (`(new name, old name)`).
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub schema: &'a Schema,
    pub spec: &'a UnboundPartitionSpec,
    pub properties: &'a HashMap<String, String>,
    pub renames: &'a [(String, String)],
}

/// The evolution `table` needs for `desired`, or an [`Error::Schema`] listing every change Iceberg does
/// not allow (``column `quantity`: the table has `int`, the pipeline file declares `string` ``).
pub fn plan(table_name: &str, table: &TableMetadata, desired: Desired<'_>) -> Result<Evolution> {
    let current = table.current_schema();
    let mut walk = Walk {
        next_id: table.last_column_id() + 1,
        has_rows: has_rows(table),
        renames: desired.renames.iter().map(|(new, old)| (new.as_str(), old.as_str())).collect(),
        former: former_names(table),
        problems: Vec::new(),
        changes: Vec::new(),
    };
    let fields = walk.structure("", current.as_struct(), desired.schema.as_struct(), true);
    let schema = if walk.changes.is_empty() {
        None
    } else {
        let schema =
            Schema::builder().with_fields(fields).with_identifier_field_ids(current.identifier_field_ids()).build()?;
        Some(schema)
    };
    let evolved = schema.as_ref().unwrap_or(current.as_ref());
    walk.partition(table.default_partition_spec(), current, evolved, desired);
    if !walk.problems.is_empty() {
        return Err(Error::Schema { table: table_name.to_string(), problems: walk.problems });
    }
    let mut properties = HashMap::new();
    for (key, value) in desired.properties {
        if table.properties().get(key) != Some(value) {
            let was = table.properties().get(key).map_or("unset".to_string(), |v| format!("`{v}`"));
            walk.changes.push(format!("property `{key}`: {was} → `{value}`"));
            properties.insert(key.clone(), value.clone());
        }
    }
    Ok(Evolution { schema, properties, changes: walk.changes })
}

/// Top-level names the table's older schemas gave to columns that are named otherwise now (renamed since),
/// with their field ids.
pub(crate) fn former_names(table: &TableMetadata) -> HashMap<String, i32> {
    let current = table.current_schema();
    let mut former = HashMap::new();
    for schema in table.schemas_iter() {
        for f in schema.as_struct().fields() {
            if current.as_struct().field_by_name(&f.name).is_none() && current.as_struct().field_by_id(f.id).is_some() {
                former.insert(f.name.clone(), f.id);
            }
        }
    }
    former
}

/// Whether the table holds rows (a required column cannot be added to rows written without it).
fn has_rows(table: &TableMetadata) -> bool {
    table.current_snapshot().is_some_and(|s| {
        s.summary().additional_properties.get("total-records").is_none_or(|n| n.parse::<u64>().map_or(true, |n| n > 0))
    })
}

/// Iceberg's type promotions: `int` → `long`, `float` → `double`, `decimal(P,S)` → `decimal(P',S)`, P' > P.
fn promotes(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    match (from, to) {
        (PrimitiveType::Int, PrimitiveType::Long) | (PrimitiveType::Float, PrimitiveType::Double) => true,
        (PrimitiveType::Decimal { precision: p, scale: s }, PrimitiveType::Decimal { precision: q, scale: t }) => {
            s == t && q > p
        }
        _ => false,
    }
}

struct Walk<'a> {
    next_id: i32,
    has_rows: bool,
    /// Top-level renames, new name → old name.
    renames: HashMap<&'a str, &'a str>,
    /// Top-level names the table had before renames, with their field ids (see [`former_names`]).
    former: HashMap<String, i32>,
    problems: Vec<String>,
    changes: Vec<String>,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

impl Walk<'_> {
    /// The fields of a struct that has `current`'s fields and takes `desired`'s: current fields in their order
    /// (evolved where matched), then the new ones. `top` allows renames (top-level columns only).
    fn structure(&mut self, path: &str, current: &StructType, desired: &StructType, top: bool) -> Vec<NestedFieldRef> {
        let mut out = Vec::new();
        let mut matched: HashSet<&str> = HashSet::new();
        for c in current.fields() {
            let renamed = || {
                let (new, _) = self.renames.iter().find(|(_, old)| **old == c.name.as_str())?;
                desired.field_by_name(new).filter(|d| current.field_by_name(&d.name).is_none())
            };
            // A pipeline file from before the table renamed this column names it by its former name.
            let former = || {
                desired
                    .fields()
                    .iter()
                    .find(|d| self.former.get(&d.name) == Some(&c.id) && current.field_by_name(&d.name).is_none())
            };
            let by_name = desired.field_by_name(&c.name).or_else(|| if top { renamed() } else { None });
            let found = by_name.map(|d| (d, false)).or_else(|| if top { former().map(|d| (d, true)) } else { None });
            match found {
                Some((d, older)) => {
                    matched.insert(d.name.as_str());
                    let mut evolved = self.field(path, c, d, older);
                    if older {
                        evolved.name = c.name.clone();
                    }
                    out.push(Arc::new(evolved));
                }
                None => {
                    if c.required {
                        self.problems.push(format!(
                            "column `{}` is required in the table and the pipeline file no longer declares it: \
                             declare it again (it may be optional)",
                            join(path, &c.name)
                        ));
                    }
                    out.push(c.clone());
                }
            }
        }
        for d in desired.fields() {
            if !matched.contains(d.name.as_str()) {
                out.push(Arc::new(self.add(path, d)));
            }
        }
        out
    }

    /// An existing field `c` as the pipeline declares it (`d`): same id, the pipeline's name, doc, optionality
    /// and (wider) type.
    fn field(&mut self, path: &str, c: &NestedField, d: &NestedField, former_name: bool) -> NestedField {
        let name = join(path, if former_name { &c.name } else { &d.name });
        if c.name != d.name && !former_name {
            self.changes.push(format!("column `{}` renamed to `{name}`", join(path, &c.name)));
        }
        let field_type = self.ty(&name, &c.field_type, &d.field_type);
        let required = c.required && d.required;
        if c.required && !d.required {
            self.changes.push(format!("column `{name}` is now optional"));
        }
        let doc = match &d.doc {
            Some(doc) if c.doc.as_ref() != Some(doc) => {
                self.changes.push(format!("column `{name}`: doc changed"));
                Some(doc.clone())
            }
            _ => c.doc.clone(),
        };
        NestedField { id: c.id, name: d.name.clone(), required, field_type: Box::new(field_type), doc, ..c.clone() }
    }

    /// The type of an existing field: `current` evolved to take `desired`.
    fn ty(&mut self, name: &str, current: &Type, desired: &Type) -> Type {
        match (current, desired) {
            (Type::Primitive(c), Type::Primitive(d)) => {
                if c == d || promotes(d, c) {
                    // Equal, or the pipeline's narrower type: its values widen into the table's column.
                    current.clone()
                } else if promotes(c, d) {
                    self.changes.push(format!("column `{name}`: {} → {}", type_name(current), type_name(desired)));
                    desired.clone()
                } else {
                    self.incompatible(name, current, desired);
                    current.clone()
                }
            }
            (Type::Struct(c), Type::Struct(d)) => Type::Struct(StructType::new(self.structure(name, c, d, false))),
            (Type::List(c), Type::List(d)) => {
                let element = self.element(&format!("{name}.element"), &c.element_field, &d.element_field);
                Type::List(ListType::new(Arc::new(element)))
            }
            (Type::Map(c), Type::Map(d)) => {
                if c.key_field.field_type != d.key_field.field_type {
                    self.incompatible(&format!("{name}.key"), &c.key_field.field_type, &d.key_field.field_type);
                }
                let value = self.element(&format!("{name}.value"), &c.value_field, &d.value_field);
                Type::Map(MapType::new(c.key_field.clone(), Arc::new(value)))
            }
            _ => {
                self.incompatible(name, current, desired);
                current.clone()
            }
        }
    }

    /// A list element or map value: its id and name kept, its type and optionality evolved.
    fn element(&mut self, name: &str, c: &NestedField, d: &NestedField) -> NestedField {
        let field_type = self.ty(name, &c.field_type, &d.field_type);
        if c.required && !d.required {
            self.changes.push(format!("`{name}` is now optional"));
        }
        NestedField { required: c.required && d.required, field_type: Box::new(field_type), ..c.clone() }
    }

    fn incompatible(&mut self, name: &str, current: &Type, desired: &Type) {
        self.problems.push(format!(
            "column `{name}`: the table has `{}`, the pipeline file declares `{}` (Iceberg widens only int → long, \
             float → double and decimal(P,S) → decimal(P',S) with P' > P)",
            type_name(current),
            type_name(desired)
        ));
    }

    /// A field the table does not have: added with new ids. Required only on a table without rows.
    fn add(&mut self, path: &str, d: &NestedField) -> NestedField {
        let name = join(path, &d.name);
        if d.required && self.has_rows {
            self.problems.push(format!(
                "new column `{name}` is declared not null, but the table already has rows without it: declare it \
                 optional"
            ));
        }
        self.changes.push(format!("column `{name}` added: {}", type_name(&d.field_type)));
        self.fresh(d)
    }

    /// `d` with new ids, depth first in declaration order (as the catalog numbers a new table).
    fn fresh(&mut self, d: &NestedField) -> NestedField {
        let id = self.next_id;
        self.next_id += 1;
        let field_type = match d.field_type.as_ref() {
            Type::Primitive(_) => d.field_type.as_ref().clone(),
            Type::Struct(s) => {
                Type::Struct(StructType::new(s.fields().iter().map(|f| Arc::new(self.fresh(f))).collect()))
            }
            Type::List(l) => Type::List(ListType::new(Arc::new(self.fresh(&l.element_field)))),
            Type::Map(m) => {
                let key = self.fresh(&m.key_field);
                let value = self.fresh(&m.value_field);
                Type::Map(MapType::new(Arc::new(key), Arc::new(value)))
            }
        };
        NestedField { id, field_type: Box::new(field_type), ..d.clone() }
    }

    /// The table's partition spec must be the one the pipeline declares, over the same (renamed) columns, and
    /// its source columns keep their types (partition values are computed from them).
    fn partition(&mut self, spec: &PartitionSpec, current: &Schema, evolved: &Schema, desired: Desired<'_>) {
        let describe = |fields: Vec<(String, String, String)>| {
            if fields.is_empty() {
                return "unpartitioned".to_string();
            }
            let parts: Vec<String> = fields.iter().map(|(c, t, n)| format!("{t}({c}) as {n}")).collect();
            parts.join(", ")
        };
        let table: Vec<(String, String, String)> = spec
            .fields()
            .iter()
            .map(|f| {
                let column = evolved.name_by_field_id(f.source_id).unwrap_or("?").to_string();
                (column, f.transform.to_string(), f.name.clone())
            })
            .collect();
        let wanted: Vec<(String, String, String)> = desired
            .spec
            .fields()
            .iter()
            .map(|f| {
                let column = desired.schema.name_by_field_id(f.source_id).unwrap_or("?").to_string();
                (column, f.transform.to_string(), f.name.clone())
            })
            .collect();
        if table != wanted {
            self.problems.push(format!(
                "partition spec: the table is partitioned by {}, the pipeline file declares {} (partition spec \
                 changes are not supported: keep the table's spec, or write to a new table)",
                describe(table),
                describe(wanted)
            ));
        }
        for f in spec.fields() {
            let (before, after) = (current.field_by_id(f.source_id), evolved.field_by_id(f.source_id));
            if let (Some(before), Some(after)) = (before, after)
                && before.field_type != after.field_type
            {
                self.problems.push(format!(
                    "column `{}` is the source of partition field `{}`: its type cannot change ({} → {})",
                    after.name,
                    f.name,
                    type_name(&before.field_type),
                    type_name(&after.field_type)
                ));
            }
        }
    }
}
