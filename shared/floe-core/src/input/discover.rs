//! Fields the records have and the table lacks, for tables with `evolve = "add-fields"`: each JSON value is
//! walked along the columns' types, and every object key that is not a column (at the top level), or not a field
//! of a `struct` column (at any depth, inside lists and map values too), is collected with a type inferred from
//! its values. The result is the pipeline's columns as they must become: the struct types with the new fields
//! appended, and the new top-level columns after the declared ones. Ingest evolves the table to that before it
//! decodes the records, so their new fields are kept from the first record on.
//!
//! Inference: `true`/`false` → `boolean`; an integer that fits 64 bits → `long`; any other number → `double` (and
//! a field seen as both → `double`); a string → `string` (timestamps too: a string is never guessed to be a
//! date); an object → `struct` of its fields; an array → `list` of its elements' type. `null`, `{}` and `[]`
//! say nothing about a type: such a field is added once a value shows one. When records disagree on a new
//! field's type, the first record decides, and the others become dead letters when decoded, like any record
//! whose value does not fit its column.
//!
//! Names: a field becomes a column only if its name is letters, digits and `_` (not starting with a digit, at most
//! [`MAX_NAME_LEN`] characters) and differs from every sibling name by more than letter case (Athena and Glue do
//! not tell `Id` from `id`). Other fields are not kept and are reported by path. Map keys are data, not fields.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::input::event::SourceRecord;
use crate::pipeline::{Column, ColumnSource, ColumnType, Pipeline, StructField, TimestampFormat, type_name};

/// Longest name a discovered field may have.
pub const MAX_NAME_LEN: usize = 128;

/// What discovery found in a batch of records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Discovered {
    /// Columns whose type gains fields: (index into the columns, the type with the new fields appended).
    pub extended: Vec<(usize, ColumnType)>,
    /// New top-level columns, in the order their fields were first seen (within a record, by name).
    pub columns: Vec<(String, ColumnType)>,
    /// Fields found that cannot become columns, as `$.path: reason`.
    pub skipped: Vec<String>,
}

impl Discovered {
    pub fn is_empty(&self) -> bool {
        self.extended.is_empty() && self.columns.is_empty()
    }
}

/// Named fields inside a type (struct fields at any depth, through lists and maps); a primitive has none.
pub fn named_fields(ty: &ColumnType) -> usize {
    match ty {
        ColumnType::Struct(fields) => fields.iter().map(|f| 1 + named_fields(&f.ty)).sum(),
        ColumnType::List { element, .. } => named_fields(element),
        ColumnType::Map { value, .. } => named_fields(value),
        _ => 0,
    }
}

/// Whether `name` may become a column or struct field name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The fields of `records`' JSON values that `columns` do not have, at most `budget` of them (a new struct
/// counts itself and each of its fields); fields over the budget are skipped and reported. Values that are not JSON
/// objects are left to the decoder, which explains them.
pub fn discover(columns: &[Column], records: &[SourceRecord], budget: usize) -> Discovered {
    let guide = Guide::root(columns);
    let mut seen = Seen::default();
    for value in records.iter().filter(|r| r.problem.is_none()).filter_map(|r| r.value.as_deref()) {
        if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(value) {
            guide.absorb_object(&mut seen, &object);
        }
    }
    let mut out = Discovered::default();
    let mut budget = budget;
    guide.diff(&seen, "$", &mut budget, &mut out);
    out
}

/// What `schema` (the table's current schema) has beyond `columns`: struct fields other containers (or earlier
/// runs) added to declared columns, and columns the pipeline file does not declare, each read from the value
/// field of its name. A table column whose name another column's `$.path` uses, that differs from a column name
/// only in letter case, or that is in `claimed` (a declared column's under a newer name: an older file during a
/// rolling deployment), is left alone.
pub fn from_table(columns: &[Column], schema: &iceberg::spec::Schema, claimed: &[String]) -> Discovered {
    // Every type floe writes reads back as the pipeline file spells it; others are not floe's to extend.
    let theirs: Vec<(String, ColumnType)> = schema
        .as_struct()
        .fields()
        .iter()
        .filter(|f| !claimed.contains(&f.name))
        .filter_map(|f| Some((f.name.clone(), ColumnType::parse(&type_name(&f.field_type)).ok()?)))
        .collect();
    merged(columns, &theirs)
}

/// What `theirs` (named column types) has beyond `columns`, by name, with the rules of [`from_table`].
pub fn merged(columns: &[Column], theirs: &[(String, ColumnType)]) -> Discovered {
    let guide = Guide::root(columns);
    let mut out = Discovered::default();
    for (name, ty) in theirs {
        match columns.iter().position(|c| c.name == *name) {
            Some(i) if matches!(columns[i].source, ColumnSource::Value { .. }) => {
                let mut extended = columns[i].ty.clone();
                if merge(&mut extended, ty) {
                    out.extended.push((i, extended));
                }
            }
            Some(_) => {}
            None if guide.keys.contains_key(name.as_str()) => {}
            None if refused(name, guide.taken.iter().copied().chain(out.columns.iter().map(|(n, _)| n.as_str())))
                .is_some() => {}
            None => out.columns.push((name.clone(), ty.clone())),
        }
    }
    out
}

/// Named fields of all columns (each column, and its struct fields at any depth).
pub fn column_count(columns: &[Column]) -> usize {
    columns.iter().map(|c| 1 + named_fields(&c.ty)).sum()
}

/// Append to `ty` the struct fields `table` has and it lacks (at any depth); true if it changed.
fn merge(ty: &mut ColumnType, table: &ColumnType) -> bool {
    match (ty, table) {
        (ColumnType::Struct(fields), ColumnType::Struct(theirs)) => {
            let mut changed = false;
            for t in theirs {
                match fields.iter_mut().find(|f| f.name == t.name) {
                    Some(f) => changed |= merge(&mut f.ty, &t.ty),
                    None => {
                        fields.push(t.clone());
                        changed = true;
                    }
                }
            }
            changed
        }
        (ColumnType::List { element, .. }, ColumnType::List { element: theirs, .. }) => merge(element, theirs),
        (ColumnType::Map { value, .. }, ColumnType::Map { value: theirs, .. }) => merge(value, theirs),
        _ => false,
    }
}

/// `pipeline` with what was discovered: struct columns extended, new optional columns after the declared ones,
/// each read from the value field of its name.
pub fn apply(pipeline: &Pipeline, discovered: &Discovered) -> Pipeline {
    let mut pipeline = pipeline.clone();
    for (i, ty) in &discovered.extended {
        pipeline.table.columns[*i].ty = ty.clone();
    }
    for (name, ty) in &discovered.columns {
        pipeline.table.columns.push(Column {
            name: name.clone(),
            ty: ty.clone(),
            required: false,
            source: ColumnSource::Value { path: vec![name.clone()], format: TimestampFormat::default() },
            doc: None,
            renamed_from: None,
        });
    }
    pipeline
}

/// How the columns read a JSON object: known keys lead to a column's type or further down a `$.a.b` path.
#[derive(Debug, Default)]
struct Guide<'a> {
    /// Keys that lead somewhere: a column read from `$.key` (its index), or a path to deeper columns.
    keys: BTreeMap<&'a str, Step<'a>>,
    /// Only the top level takes new columns; objects along `$.a.b` paths are not columns.
    open: bool,
    /// Names new columns must not take (every column name, whatever its source).
    taken: Vec<&'a str>,
}

#[derive(Debug)]
enum Step<'a> {
    Column(usize, &'a ColumnType),
    Path(Guide<'a>),
}

impl<'a> Guide<'a> {
    fn root(columns: &'a [Column]) -> Guide<'a> {
        let mut root =
            Guide { open: true, taken: columns.iter().map(|c| c.name.as_str()).collect(), ..Default::default() };
        'columns: for (i, column) in columns.iter().enumerate() {
            let ColumnSource::Value { path, .. } = &column.source else { continue };
            let Some((last, prefix)) = path.split_last() else { continue };
            let mut guide = &mut root;
            for segment in prefix {
                let step = guide.keys.entry(segment).or_insert_with(|| Step::Path(Guide::default()));
                guide = match step {
                    Step::Path(g) => g,
                    // Validation keeps column paths disjoint; a column under another is not walked into.
                    Step::Column(..) => continue 'columns,
                };
            }
            guide.keys.insert(last, Step::Column(i, &column.ty));
        }
        root
    }

    fn absorb_object(&self, seen: &mut Seen, object: &serde_json::Map<String, Value>) {
        for (key, value) in object {
            match self.keys.get(key.as_str()) {
                Some(Step::Column(_, ty)) => seen.child(key).absorb_known(ty, value),
                Some(Step::Path(guide)) => {
                    if let Value::Object(inner) = value {
                        guide.absorb_object(seen.child(key), inner);
                    }
                }
                None if self.open => seen.child(key).absorb(value),
                None => {}
            }
        }
    }

    fn diff(&self, seen: &Seen, at: &str, budget: &mut usize, out: &mut Discovered) {
        for (key, child) in &seen.fields {
            let path = format!("{at}.{key}");
            match self.keys.get(key.as_str()) {
                Some(Step::Column(i, ty)) => {
                    let mut ty = (*ty).clone();
                    if extend(&mut ty, child, &path, budget, &mut out.skipped) {
                        out.extended.push((*i, ty));
                    }
                }
                Some(Step::Path(guide)) => guide.diff(child, &path, budget, out),
                None => {
                    let Some(ty) = child.ty(&path, &mut out.skipped) else { continue };
                    let siblings = self.taken.iter().copied().chain(out.columns.iter().map(|(n, _)| n.as_str()));
                    if let Some(reason) = refused(key, siblings) {
                        out.skipped.push(format!("{path}: {reason}"));
                    } else if fits(&ty, budget) {
                        out.columns.push((key.clone(), ty));
                    } else {
                        out.skipped.push(format!("{path}: over table.max_new_columns"));
                    }
                }
            }
        }
    }
}

/// Why `name` cannot join `siblings`, if it cannot.
fn refused<'n>(name: &str, mut siblings: impl Iterator<Item = &'n str>) -> Option<String> {
    if !valid_name(name) {
        return Some(format!(
            "not a column name (letters, digits and `_`, not starting with a digit, at most {MAX_NAME_LEN} characters)"
        ));
    }
    siblings.find(|s| s.eq_ignore_ascii_case(name)).map(|s| match s == name {
        true => format!("`{s}` is a column that reads another source"),
        false => format!("differs from `{s}` only in letter case"),
    })
}

/// Spend the budget on a new field of type `ty`, if it has enough.
fn fits(ty: &ColumnType, budget: &mut usize) -> bool {
    let cost = 1 + named_fields(ty);
    if cost > *budget {
        return false;
    }
    *budget -= cost;
    true
}

/// Append to `ty` the fields `seen` has and it lacks; true if it changed.
fn extend(ty: &mut ColumnType, seen: &Seen, at: &str, budget: &mut usize, skipped: &mut Vec<String>) -> bool {
    match ty {
        ColumnType::Struct(fields) => {
            let mut changed = false;
            for (key, child) in &seen.fields {
                let path = format!("{at}.{key}");
                if let Some(field) = fields.iter_mut().find(|f| f.name == *key) {
                    changed |= extend(&mut field.ty, child, &path, budget, skipped);
                    continue;
                }
                let Some(new) = child.ty(&path, skipped) else { continue };
                if let Some(reason) = refused(key, fields.iter().map(|f| f.name.as_str())) {
                    skipped.push(format!("{path}: {reason}"));
                } else if fits(&new, budget) {
                    fields.push(StructField { name: key.clone(), ty: new, required: false });
                    changed = true;
                } else {
                    skipped.push(format!("{path}: over table.max_new_columns"));
                }
            }
            changed
        }
        ColumnType::List { element, .. } => {
            seen.element.as_deref().is_some_and(|e| extend(element, e, &format!("{at}[]"), budget, skipped))
        }
        ColumnType::Map { value, .. } => {
            seen.element.as_deref().is_some_and(|e| extend(value, e, &format!("{at}{{}}"), budget, skipped))
        }
        _ => false,
    }
}

/// What the values seen at one place looked like.
#[derive(Debug, Default)]
struct Seen {
    kind: Kind,
    /// Object keys in the order first seen, by name within a record (a known map's values go to `element` instead), and where each is.
    fields: Vec<(String, Seen)>,
    index: HashMap<String, usize>,
    /// Array elements, or a known map's values.
    element: Option<Box<Seen>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only nulls, or nothing, so far.
    #[default]
    Unknown,
    Boolean,
    Long,
    Double,
    String,
    Object,
    Array,
}

impl Seen {
    fn child(&mut self, key: &str) -> &mut Seen {
        let i = match self.index.get(key) {
            Some(i) => *i,
            None => {
                self.index.insert(key.to_string(), self.fields.len());
                self.fields.push((key.to_string(), Seen::default()));
                self.fields.len() - 1
            }
        };
        &mut self.fields[i].1
    }

    fn element(&mut self) -> &mut Seen {
        self.element.get_or_insert_with(Default::default)
    }

    /// A value of a field the columns know: only struct fields can be new, so descend along the type.
    fn absorb_known(&mut self, ty: &ColumnType, value: &Value) {
        match (ty, value) {
            (ColumnType::Struct(fields), Value::Object(object)) => {
                for (key, v) in object {
                    match fields.iter().find(|f| f.name == *key) {
                        Some(f) => self.child(key).absorb_known(&f.ty, v),
                        None => self.child(key).absorb(v),
                    }
                }
            }
            (ColumnType::List { element, .. }, Value::Array(items)) => {
                items.iter().for_each(|v| self.element().absorb_known(element, v))
            }
            (ColumnType::Map { value: ty, .. }, Value::Object(object)) => {
                object.values().for_each(|v| self.element().absorb_known(ty, v))
            }
            _ => {}
        }
    }

    /// A value of a field the columns do not know: infer.
    fn absorb(&mut self, value: &Value) {
        let kind = match value {
            Value::Null => return,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(n) if n.is_i64() => Kind::Long,
            Value::Number(_) => Kind::Double,
            Value::String(_) => Kind::String,
            Value::Object(_) => Kind::Object,
            Value::Array(_) => Kind::Array,
        };
        self.kind = match (self.kind, kind) {
            (Kind::Unknown, k) => k,
            (Kind::Long, Kind::Double) | (Kind::Double, Kind::Long) => Kind::Double,
            (first, _) => first,
        };
        match (self.kind, value) {
            (Kind::Object, Value::Object(object)) => object.iter().for_each(|(k, v)| self.child(k).absorb(v)),
            (Kind::Array, Value::Array(items)) => items.iter().for_each(|v| self.element().absorb(v)),
            _ => {}
        }
    }

    /// The inferred type, if the values showed one; fields whose names cannot be columns are skipped.
    fn ty(&self, at: &str, skipped: &mut Vec<String>) -> Option<ColumnType> {
        Some(match self.kind {
            Kind::Unknown => return None,
            Kind::Boolean => ColumnType::Boolean,
            Kind::Long => ColumnType::Long,
            Kind::Double => ColumnType::Double,
            Kind::String => ColumnType::String,
            Kind::Array => ColumnType::List {
                element: Box::new(self.element.as_ref()?.ty(&format!("{at}[]"), skipped)?),
                element_required: false,
            },
            Kind::Object => {
                let mut fields: Vec<StructField> = Vec::new();
                for (key, child) in &self.fields {
                    let path = format!("{at}.{key}");
                    let Some(ty) = child.ty(&path, skipped) else { continue };
                    match refused(key, fields.iter().map(|f| f.name.as_str())) {
                        Some(reason) => skipped.push(format!("{path}: {reason}")),
                        None => fields.push(StructField { name: key.clone(), ty, required: false }),
                    }
                }
                if fields.is_empty() {
                    return None;
                }
                ColumnType::Struct(fields)
            }
        })
    }
}

#[cfg(test)]
#[path = "discover_tests.rs"]
mod tests;
