//! Iceberg table layouts derived from the pipeline file: schema (with field ids), partition spec, location and
//! properties of the target table and of its dead-letter table.
//!
//! A layout starts from the pipeline file alone (fresh field ids, as the catalog numbers a new table), which is
//! what creates the table and what schema evolution compares the table with. Bound to the table
//! ([`TableLayout::bind`]) it writes files in the table's own schema and ids: the table is the authority on
//! field ids, so files written before and after an evolution read back correctly.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{
    FormatVersion, ListType, MapType, NestedField, NestedFieldRef, PartitionSpecRef, Schema, SchemaRef, StructType,
    TableMetadata, TableMetadataBuilder, Transform, Type, UnboundPartitionSpec,
};
use iceberg::{TableCreation, TableIdent};

use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, Output, Pipeline, TableName, field, late_columns};
use crate::table::evolve::{Desired, Evolution};

/// Everything needed to write files for, create, and check one table.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub name: TableName,
    pub location: String,
    pub schema: SchemaRef,
    pub spec: PartitionSpecRef,
    /// The spec's partition struct type (derived once: every data file handed over is encoded with it).
    pub partition_type: StructType,
    pub arrow_schema: arrow_schema::SchemaRef,
    /// The rows ingest produces for this table: the pipeline file's columns, in its order and with its types,
    /// carrying the table's field ids. Equal to `arrow_schema` until the table evolves past the pipeline file
    /// (new columns, wider types); the writer adapts such rows by field id ([`crate::table::adapt`]).
    pub input: arrow_schema::SchemaRef,
    pub target_file_size: usize,
    pub properties: HashMap<String, String>,
    unbound_spec: UnboundPartitionSpec,
    declared_schema: Schema,
    /// Top-level renames the pipeline file declares: (new name, old name).
    renames: Vec<(String, String)>,
    /// The UUID of the table this layout is on ([`TableLayout::on_table`]); `None` until then.
    pub table_uuid: Option<String>,
    /// The primary-key columns of a change stream's target table (empty: an append-only table).
    pub primary_key: Vec<String>,
    /// The column ordering one key's changes across topic-partitions, if declared.
    pub order_by: Option<String>,
}

/// Column names of the dead-letter table.
pub mod dead_letter_columns {
    pub const PIPELINE: &str = "pipeline";
    pub const TOPIC: &str = "topic";
    pub const PARTITION: &str = "partition";
    pub const OFFSET: &str = "offset";
    pub const KAFKA_TIMESTAMP: &str = "kafka_timestamp";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
    pub const HEADERS: &str = "headers";
    pub const ERROR_KIND: &str = "error_kind";
    pub const REASON: &str = "reason";
}

/// Where a table lives under the warehouse.
pub fn table_location(warehouse: &str, name: &TableName) -> String {
    format!("{}/{}/{}", warehouse.trim_end_matches('/'), name.namespace, name.name)
}

impl TableLayout {
    /// The target table of a pipeline.
    pub fn target(pipeline: &Pipeline, warehouse: &str) -> Result<TableLayout> {
        let mut ids = 0;
        let fields = pipeline
            .table
            .columns
            .iter()
            .map(|c| field(&mut ids, &c.name, &c.ty, c.required, c.doc.as_deref()))
            .collect::<Vec<_>>();
        let partition = pipeline.table.partition.iter().map(|p| (p.column.as_str(), p.name.as_str(), p.transform));
        let mut properties: HashMap<String, String> = pipeline.table.properties.clone().into_iter().collect();
        properties
            .entry("write.target-file-size-bytes".into())
            .or_insert_with(|| pipeline.table.target_file_size.to_string());
        let mut layout = Self::build(
            pipeline.table.name.clone(),
            warehouse,
            fields,
            partition,
            pipeline.table.target_file_size,
            properties,
        )?;
        layout.renames =
            pipeline.table.columns.iter().filter_map(|c| Some((c.name.clone(), c.renamed_from.clone()?))).collect();
        if let Some(changes) = &pipeline.changes {
            layout.primary_key = changes.primary_key.clone();
            layout.order_by = changes.order_by.clone();
        }
        Ok(layout)
    }

    /// The dead-letter table of a pipeline: raw key/value bytes, source position and the reason.
    pub fn dead_letter(pipeline: &Pipeline, warehouse: &str) -> Result<TableLayout> {
        use dead_letter_columns as c;
        let mut ids = 0;
        let headers = ColumnType::List {
            element: Box::new(ColumnType::Struct(vec![
                crate::pipeline::StructField { name: "name".into(), ty: ColumnType::String, required: true },
                crate::pipeline::StructField { name: "value".into(), ty: ColumnType::Binary, required: false },
            ])),
            element_required: true,
        };
        let cols: [(&str, ColumnType, bool, &str); 10] = [
            (c::PIPELINE, ColumnType::String, true, "pipeline that rejected the record"),
            (c::TOPIC, ColumnType::String, true, "source topic"),
            (c::PARTITION, ColumnType::Int, true, "source partition"),
            (c::OFFSET, ColumnType::Long, true, "source offset"),
            (c::KAFKA_TIMESTAMP, ColumnType::Timestamptz, false, "Kafka record timestamp"),
            (c::KEY, ColumnType::Binary, false, "raw record key"),
            (c::VALUE, ColumnType::Binary, false, "raw record value"),
            (c::HEADERS, headers, false, "record headers"),
            (
                c::ERROR_KIND,
                ColumnType::String,
                true,
                "class of failure: base64, json, schema, null_value, key, header, topic, change, transform, record",
            ),
            (c::REASON, ColumnType::String, true, "why the record was rejected"),
        ];
        let fields = cols.iter().map(|(n, t, r, d)| field(&mut ids, n, t, *r, Some(d))).collect();
        let partition = [(c::KAFKA_TIMESTAMP, "kafka_timestamp_day", Transform::Day)];
        Self::build(
            pipeline.dead_letter.clone(),
            warehouse,
            fields,
            partition.into_iter(),
            pipeline.table.target_file_size,
            HashMap::new(),
        )
    }

    /// The table a derived output writes (its SQL rows, or its window aggregates). Columns are optional: SQL
    /// results carry no reliable nullability.
    pub fn output(pipeline: &Pipeline, output: &Output, warehouse: &str) -> Result<TableLayout> {
        let mut ids = 0;
        let fields = output.table_columns().iter().map(|(n, t)| field(&mut ids, n, t, false, None)).collect();
        let partition = output.partition.iter().map(|p| (p.column.as_str(), p.name.as_str(), p.transform));
        Self::build(output.table.clone(), warehouse, fields, partition, pipeline.table.target_file_size, HashMap::new())
    }

    /// The table ingest stages files for on behalf of `output`: its rows, or its late records if it is windowed
    /// (the compactor emits the windows themselves).
    pub fn staged_for(pipeline: &Pipeline, output: &Output, warehouse: &str) -> Result<TableLayout> {
        match output.window {
            None => Self::output(pipeline, output, warehouse),
            Some(_) => Self::late(pipeline, output, warehouse),
        }
    }

    /// The late-records table of a windowed output: the SQL row, its source position and why it was late.
    pub fn late(pipeline: &Pipeline, output: &Output, warehouse: &str) -> Result<TableLayout> {
        let window = output.window.as_ref().ok_or_else(|| Error::TableMismatch {
            table: output.table.to_string(),
            message: "only windowed outputs have a late-records table".into(),
        })?;
        let mut ids = 0;
        let mut fields: Vec<NestedFieldRef> =
            output.sql_columns.iter().map(|(n, t)| field(&mut ids, n, t, false, None)).collect();
        for (name, ty, doc) in late_columns() {
            fields.push(field(&mut ids, name, &ty, true, Some(doc)));
        }
        Self::build(
            window.late_table.clone(),
            warehouse,
            fields,
            std::iter::empty(),
            pipeline.table.target_file_size,
            HashMap::new(),
        )
    }

    fn build<'a>(
        name: TableName,
        warehouse: &str,
        fields: Vec<NestedFieldRef>,
        partition: impl Iterator<Item = (&'a str, &'a str, Transform)>,
        target_file_size: usize,
        properties: HashMap<String, String>,
    ) -> Result<TableLayout> {
        let declared_schema = Schema::builder().with_fields(fields).build()?;
        let mut spec = UnboundPartitionSpec::builder();
        for (column, pname, transform) in partition {
            let id = declared_schema.field_id_by_name(column).ok_or_else(|| Error::TableMismatch {
                table: name.to_string(),
                message: format!("no column {column}"),
            })?;
            spec = spec.add_partition_field(id, pname, transform)?;
        }
        let unbound_spec = spec.build();
        let location = table_location(warehouse, &name);
        // Same builder the catalog uses on create: field ids come out exactly as the created table's.
        let metadata = TableMetadataBuilder::new(
            declared_schema.clone(),
            unbound_spec.clone(),
            iceberg::spec::SortOrder::unsorted_order(),
            location.clone(),
            FormatVersion::V2,
            properties.clone(),
        )?
        .build()?
        .metadata;
        let schema = metadata.current_schema().clone();
        let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
        let spec = metadata.default_partition_spec().clone();
        let partition_type = spec.partition_type(&schema)?;
        Ok(TableLayout {
            name,
            location,
            spec,
            partition_type,
            schema,
            input: arrow_schema.clone(),
            arrow_schema,
            target_file_size,
            properties,
            unbound_spec,
            declared_schema,
            renames: Vec::new(),
            table_uuid: None,
            primary_key: Vec::new(),
            order_by: None,
        })
    }

    /// What `table` must become to take this layout's files ([`crate::table::evolve`]): nothing, an evolution,
    /// or an [`Error::Schema`] naming every change Iceberg does not allow.
    pub fn evolution_for(&self, table: &TableMetadata) -> Result<Evolution> {
        crate::table::evolve::plan(&self.name.to_string(), table, self.desired())
    }

    /// What the pipeline file wants of the table, for [`crate::table::evolve::plan`].
    pub fn desired(&self) -> Desired<'_> {
        Desired {
            schema: &self.declared_schema,
            spec: &self.unbound_spec,
            properties: &self.properties,
            renames: &self.renames,
        }
    }

    /// This layout on the table as it is in the catalog: files are written in the table's current schema and
    /// partition spec, with its field ids. What the compactor writes with (merged files, windows).
    pub fn on_table(&self, table: &TableMetadata) -> Result<TableLayout> {
        let schema = table.current_schema().clone();
        let spec = table.default_partition_spec().clone();
        let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
        Ok(TableLayout {
            partition_type: spec.partition_type(&schema)?,
            input: arrow_schema.clone(),
            arrow_schema,
            schema,
            spec,
            table_uuid: Some(table.uuid().to_string()),
            ..self.clone()
        })
    }

    /// [`TableLayout::on_table`] for ingest, on a table evolved to take the pipeline file (see
    /// [`crate::table::evolve`]): the rows ingest produces ([`TableLayout::input`]) keep the pipeline file's
    /// columns and types, with the table's field ids.
    pub fn bind(&self, table: &TableMetadata) -> Result<TableLayout> {
        let mut layout = self.on_table(table)?;
        let mismatch = |message: String| Error::TableMismatch { table: self.name.to_string(), message };
        let former = crate::table::evolve::former_names(table);
        let current = layout.schema.as_struct();
        let mut fields = Vec::new();
        for declared in self.declared_schema.as_struct().fields() {
            // By name, or by the name the column had before the table renamed it (an older pipeline file).
            let found = current
                .field_by_name(&declared.name)
                .or_else(|| former.get(&declared.name).and_then(|id| current.field_by_id(*id)));
            let Some(current) = found else {
                return Err(mismatch(format!("the table has no column `{}` (evolve it first)", declared.name)));
            };
            fields.push(Arc::new(with_ids_of(declared, current)));
        }
        let input = Schema::builder().with_fields(fields).build()?;
        let input = Arc::new(schema_to_arrow_schema(&input)?);
        if input.fields() != layout.arrow_schema.fields() {
            layout.input = input;
        }
        Ok(layout)
    }

    /// Catalog identifier.
    pub fn ident(&self) -> TableIdent {
        TableIdent::from_strs([self.name.namespace.as_str(), self.name.name.as_str()]).expect("validated names")
    }

    /// The creation request for the catalog (format v2: Athena reads v2 only).
    pub fn creation(&self) -> TableCreation {
        TableCreation::builder()
            .name(self.name.name.clone())
            .location(self.location.clone())
            .schema(self.declared_schema.clone())
            .partition_spec(self.unbound_spec.clone())
            .properties(self.properties.clone())
            .format_version(FormatVersion::V2)
            .build()
    }
}

/// `declared` (a column as the pipeline file declares it) with the field ids of `current`, the table's column
/// it maps to: struct fields by name, list elements and map keys and values as such. Declared fields the table
/// lacks cannot occur once the table is evolved; they keep their declared id, which the table does not use.
fn with_ids_of(declared: &NestedField, current: &NestedField) -> NestedField {
    let field_type = match (declared.field_type.as_ref(), current.field_type.as_ref()) {
        (Type::Struct(d), Type::Struct(c)) => Type::Struct(StructType::new(
            d.fields()
                .iter()
                .map(|f| Arc::new(c.field_by_name(&f.name).map_or_else(|| f.as_ref().clone(), |cf| with_ids_of(f, cf))))
                .collect(),
        )),
        (Type::List(d), Type::List(c)) => {
            Type::List(ListType::new(Arc::new(with_ids_of(&d.element_field, &c.element_field))))
        }
        (Type::Map(d), Type::Map(c)) => Type::Map(MapType::new(
            Arc::new(with_ids_of(&d.key_field, &c.key_field)),
            Arc::new(with_ids_of(&d.value_field, &c.value_field)),
        )),
        (t, _) => t.clone(),
    };
    NestedField { id: current.id, field_type: Box::new(field_type), ..declared.clone() }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{PrimitiveType, Type};

    use super::*;

    const EXAMPLE: &str = include_str!("../../../../examples/pipeline.toml");

    #[test]
    fn target_layout_has_field_ids_and_partition_spec() {
        let p = Pipeline::parse(EXAMPLE, "pipeline.toml").unwrap();
        let layout = TableLayout::target(&p, "file:///tmp/wh/").unwrap();
        assert_eq!(layout.location, "file:///tmp/wh/analytics/events");
        let event_time = layout.schema.field_by_name("event_time").unwrap();
        assert!(event_time.required);
        assert_eq!(*event_time.field_type, Type::Primitive(PrimitiveType::Timestamptz));
        let spec_fields = layout.spec.fields();
        assert_eq!(spec_fields.len(), 2);
        assert_eq!(spec_fields[0].source_id, event_time.id);
        assert_eq!(spec_fields[0].transform, Transform::Day);
        // Every arrow field carries its Iceberg field id, including nested ones.
        let items = layout.arrow_schema.field_with_name("items").unwrap();
        assert!(items.metadata().contains_key("PARQUET:field_id"));
        assert_eq!(layout.properties["write.target-file-size-bytes"], (128 * 1024 * 1024).to_string());
        // Creating the table from the layout yields the very same schema (ids are deterministic).
        let again = TableLayout::target(&p, "file:///tmp/wh").unwrap();
        assert_eq!(again.schema.as_struct(), layout.schema.as_struct());
    }

    #[test]
    fn dead_letter_layout() {
        let p = Pipeline::parse(EXAMPLE, "pipeline.toml").unwrap();
        let layout = TableLayout::dead_letter(&p, "file:///wh").unwrap();
        assert_eq!(layout.location, "file:///wh/analytics/events_dead_letters");
        assert!(layout.schema.field_by_name(dead_letter_columns::REASON).unwrap().required);
        assert_eq!(layout.spec.fields()[0].transform, Transform::Day);
    }
}

#[cfg(test)]
#[path = "layout_evolution_tests.rs"]
mod evolution_tests;
