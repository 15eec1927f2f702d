//! The Iceberg and Arrow forms of the pipeline's column types. Field ids are assigned depth-first in declaration
//! order, the way the catalog assigns them on create, so a layout derived here matches the created table.

use std::sync::Arc;

use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type};

use super::ColumnType;
use crate::error::Result;

/// Arrow schema (with Iceberg field ids) of flat (name, type) columns, all optional.
pub fn arrow_schema_of(columns: &[(String, ColumnType)]) -> Result<arrow_schema::SchemaRef> {
    let mut ids = 0;
    let fields = columns.iter().map(|(n, t)| field(&mut ids, n, t, false, None)).collect::<Vec<_>>();
    let schema = Schema::builder().with_fields(fields).build()?;
    Ok(Arc::new(schema_to_arrow_schema(&schema)?))
}

pub(crate) fn field(ids: &mut i32, name: &str, ty: &ColumnType, required: bool, doc: Option<&str>) -> NestedFieldRef {
    *ids += 1;
    let id = *ids;
    let ty = iceberg_type(ids, ty);
    let f = if required { NestedField::required(id, name, ty) } else { NestedField::optional(id, name, ty) };
    Arc::new(match doc {
        Some(d) => f.with_doc(d),
        None => f,
    })
}

fn iceberg_type(ids: &mut i32, ty: &ColumnType) -> Type {
    match ty {
        ColumnType::Boolean => Type::Primitive(PrimitiveType::Boolean),
        ColumnType::Int => Type::Primitive(PrimitiveType::Int),
        ColumnType::Long => Type::Primitive(PrimitiveType::Long),
        ColumnType::Float => Type::Primitive(PrimitiveType::Float),
        ColumnType::Double => Type::Primitive(PrimitiveType::Double),
        ColumnType::Decimal { precision, scale } => {
            Type::Primitive(PrimitiveType::Decimal { precision: *precision, scale: *scale })
        }
        ColumnType::Date => Type::Primitive(PrimitiveType::Date),
        ColumnType::Timestamp => Type::Primitive(PrimitiveType::Timestamp),
        ColumnType::Timestamptz => Type::Primitive(PrimitiveType::Timestamptz),
        ColumnType::String => Type::Primitive(PrimitiveType::String),
        ColumnType::Binary => Type::Primitive(PrimitiveType::Binary),
        ColumnType::Struct(fields) => {
            Type::Struct(StructType::new(fields.iter().map(|f| field(ids, &f.name, &f.ty, f.required, None)).collect()))
        }
        ColumnType::List { element, element_required } => {
            *ids += 1;
            let id = *ids;
            let inner = iceberg_type(ids, element);
            Type::List(ListType::new(Arc::new(if *element_required {
                NestedField::list_element(id, inner, true)
            } else {
                NestedField::list_element(id, inner, false)
            })))
        }
        ColumnType::Map { key, value, value_required } => {
            *ids += 1;
            let key_id = *ids;
            let key = iceberg_type(ids, key);
            *ids += 1;
            let value_id = *ids;
            let value = iceberg_type(ids, value);
            Type::Map(MapType::new(
                Arc::new(NestedField::map_key_element(key_id, key)),
                Arc::new(NestedField::map_value_element(value_id, value, *value_required)),
            ))
        }
    }
}

/// An Iceberg type the way the pipeline file spells it (`long`, `decimal(12,2)`, `struct<sku: string not null>`),
/// for messages that compare a table with a pipeline file. Types floe never declares keep Iceberg's own name.
pub fn type_name(ty: &Type) -> String {
    let nn = |required: bool| if required { " not null" } else { "" };
    match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "long".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp => "timestamp".into(),
            PrimitiveType::Timestamptz => "timestamptz".into(),
            PrimitiveType::String => "string".into(),
            PrimitiveType::Binary => "binary".into(),
            other => other.to_string(),
        },
        Type::Struct(s) => {
            let fields: Vec<String> = s
                .fields()
                .iter()
                .map(|f| format!("{}: {}{}", f.name, type_name(&f.field_type), nn(f.required)))
                .collect();
            format!("struct<{}>", fields.join(", "))
        }
        Type::List(l) => format!("list<{}{}>", type_name(&l.element_field.field_type), nn(l.element_field.required)),
        Type::Map(m) => format!(
            "map<{}, {}{}>",
            type_name(&m.key_field.field_type),
            type_name(&m.value_field.field_type),
            nn(m.value_field.required)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iceberg_types_read_as_the_pipeline_file_writes_them() {
        for text in ["long", "decimal(12,2)", "list<struct<sku: string not null, qty: int>>", "map<string, double>"] {
            let ty = ColumnType::parse(text).unwrap();
            assert_eq!(type_name(&iceberg_type(&mut 0, &ty)), text);
        }
    }
}
