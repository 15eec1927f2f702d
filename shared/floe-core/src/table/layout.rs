//! Iceberg table layouts derived from the pipeline file: schema (with field ids), partition spec, location and
//! properties of the target table and of its dead-letter table.
//!
//! Ingest derives the layout itself (no catalog round trip on the hot path, and it works before the table
//! exists); the compactor creates tables from the same layout and refuses to commit into a table whose schema or
//! partition spec differ from it, so files written by ingest always match the table they are committed to.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{
    FormatVersion, NestedFieldRef, PartitionSpecRef, Schema, SchemaRef, StructType, TableMetadata,
    TableMetadataBuilder, Transform, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};

use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, Output, Pipeline, TableName, field, late_columns};

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
    pub target_file_size: usize,
    pub properties: HashMap<String, String>,
    unbound_spec: UnboundPartitionSpec,
    declared_schema: Schema,
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
        Self::build(
            pipeline.table.name.clone(),
            warehouse,
            fields,
            partition,
            pipeline.table.target_file_size,
            properties,
        )
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
                "class of failure: base64, json, schema, null_value, key, header, topic",
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
            arrow_schema,
            target_file_size,
            properties,
            unbound_spec,
            declared_schema,
        })
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

    /// Refuse to commit into a table whose schema or partition spec is not what ingest writes.
    pub fn check_matches(&self, table: &Table) -> Result<()> {
        let metadata: &TableMetadata = table.metadata();
        let mismatch = |message: String| Error::TableMismatch { table: self.name.to_string(), message };
        let current = metadata.current_schema();
        if current.as_struct() != self.schema.as_struct() {
            return Err(mismatch(format!(
                "schema in the catalog is {} but the pipeline file declares {}",
                current.as_struct(),
                self.schema.as_struct()
            )));
        }
        let spec = metadata.default_partition_spec();
        if spec.fields() != self.spec.fields() {
            return Err(mismatch(format!(
                "partition spec in the catalog is {:?} but the pipeline file declares {:?}",
                spec.fields(),
                self.spec.fields()
            )));
        }
        Ok(())
    }
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
