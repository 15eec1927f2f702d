//! An Iceberg catalog on AWS Glue, built on iceberg-rust's public spec APIs and `aws-sdk-glue`.
//!
//! Why not `iceberg-catalog-glue` 0.10: it rejects `timestamptz` columns when converting the schema to Glue
//! columns, and rebuilds the Glue table input on every commit, dropping parameters other tools (or users) set.
//! Here Glue columns are informational (Athena reads the schema from the Iceberg metadata): `timestamptz` maps to
//! Glue's `timestamp`, and commits keep every existing table parameter, changing only `metadata_location` and
//! `previous_metadata_location`. Commits are optimistic: `UpdateTable` carries the `VersionId` read with the
//! current metadata, and `ConcurrentModificationException` becomes a retryable `CatalogCommitConflicts`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_glue::Client;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, TableInput};
use floe_core::MetadataSwap;
use iceberg::io::FileIO;
use iceberg::spec::{NestedFieldRef, PrimitiveType, TableMetadata, TableMetadataBuilder, Type};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, Runtime, TableCommit,
    TableCreation, TableIdent,
};

const METADATA_LOCATION: &str = "metadata_location";
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";
const TABLE_TYPE: &str = "table_type";
const ICEBERG: &str = "ICEBERG";

/// Iceberg catalog backed by the Glue Data Catalog (databases = namespaces).
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: Client,
    file_io: FileIO,
    /// Glue catalog id (account); `None` for the caller's account.
    catalog_id: Option<String>,
}

fn glue_error<E>(what: &str, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().unwrap_or_default().to_string();
    let (kind, retryable) = match code.as_str() {
        "EntityNotFoundException" => (ErrorKind::TableNotFound, false),
        "AlreadyExistsException" => (ErrorKind::TableAlreadyExists, false),
        "ConcurrentModificationException" => (ErrorKind::CatalogCommitConflicts, true),
        "ThrottlingException" | "InternalServiceException" | "OperationTimeoutException" => {
            (ErrorKind::Unexpected, true)
        }
        _ => (ErrorKind::Unexpected, matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))),
    };
    let message = e.message().map(str::to_string).unwrap_or_else(|| format!("{e:?}"));
    Error::new(kind, format!("glue {what}: {code} {message}")).with_retryable(retryable).with_source(e)
}

fn single_level(ns: &NamespaceIdent) -> Result<String> {
    match ns.as_ref().as_slice() {
        [name] => Ok(name.clone()),
        _ => Err(Error::new(ErrorKind::DataInvalid, format!("Glue databases are one level, got {ns:?}"))),
    }
}

/// Glue (Hive) type name of an Iceberg type. Informational: engines read the Iceberg schema.
fn glue_type(ty: &Type) -> String {
    match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Time => "string".into(),
            PrimitiveType::Timestamp
            | PrimitiveType::Timestamptz
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs => "timestamp".into(),
            PrimitiveType::String | PrimitiveType::Uuid => "string".into(),
            PrimitiveType::Fixed(_) | PrimitiveType::Binary => "binary".into(),
        },
        Type::Struct(s) => {
            let fields: Vec<String> =
                s.fields().iter().map(|f| format!("{}:{}", f.name, glue_type(&f.field_type))).collect();
            format!("struct<{}>", fields.join(","))
        }
        Type::List(l) => format!("array<{}>", glue_type(&l.element_field.field_type)),
        Type::Map(m) => format!("map<{},{}>", glue_type(&m.key_field.field_type), glue_type(&m.value_field.field_type)),
    }
}

fn glue_columns(fields: &[NestedFieldRef]) -> Vec<Column> {
    fields
        .iter()
        .map(|f| {
            Column::builder()
                .name(&f.name)
                .r#type(glue_type(&f.field_type))
                .set_comment(f.doc.clone())
                .parameters("iceberg.field.id", f.id.to_string())
                .parameters("iceberg.field.optional", (!f.required).to_string())
                .build()
                .expect("name is set")
        })
        .collect()
}

impl GlueCatalog {
    pub fn new(client: Client, file_io: FileIO, catalog_id: Option<String>) -> GlueCatalog {
        GlueCatalog { client, file_io, catalog_id }
    }

    fn table_input(
        &self,
        name: &str,
        metadata: &TableMetadata,
        mut parameters: HashMap<String, String>,
        location: &str,
        previous: Option<&str>,
    ) -> Result<TableInput> {
        parameters.insert(TABLE_TYPE.into(), ICEBERG.into());
        parameters.insert(METADATA_LOCATION.into(), location.into());
        match previous {
            Some(p) => parameters.insert(PREVIOUS_METADATA_LOCATION.into(), p.into()),
            None => parameters.remove(PREVIOUS_METADATA_LOCATION),
        };
        let descriptor = StorageDescriptor::builder()
            .location(metadata.location())
            .set_columns(Some(glue_columns(metadata.current_schema().as_struct().fields())))
            .build();
        TableInput::builder()
            .name(name)
            .table_type("EXTERNAL_TABLE")
            .set_parameters(Some(parameters))
            .storage_descriptor(descriptor)
            .build()
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("glue table input: {e}")))
    }

    /// The Glue table, its metadata location and version id.
    async fn glue_table(&self, ident: &TableIdent) -> Result<(aws_sdk_glue::types::Table, String, Option<String>)> {
        let db = single_level(ident.namespace())?;
        let out = self
            .client
            .get_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&db)
            .name(ident.name())
            .send()
            .await
            .map_err(|e| glue_error("GetTable", e))?;
        let table = out.table.ok_or_else(|| Error::new(ErrorKind::TableNotFound, format!("{ident} not found")))?;
        let params = table.parameters.clone().unwrap_or_default();
        if !params.get(TABLE_TYPE).is_some_and(|t| t.eq_ignore_ascii_case(ICEBERG)) {
            return Err(Error::new(ErrorKind::DataInvalid, format!("Glue table {ident} is not an Iceberg table")));
        }
        let location = params.get(METADATA_LOCATION).cloned().ok_or_else(|| {
            Error::new(ErrorKind::DataInvalid, format!("Glue table {ident} has no metadata_location"))
        })?;
        let version = table.version_id.clone();
        Ok((table, location, version))
    }

    fn build_table(&self, ident: TableIdent, metadata: TableMetadata, location: String) -> Result<Table> {
        Table::builder()
            .identifier(ident)
            .metadata(metadata)
            .metadata_location(location)
            .file_io(self.file_io.clone())
            .runtime(Runtime::current())
            .build()
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        if parent.is_some() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut pages = self.client.get_databases().set_catalog_id(self.catalog_id.clone()).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| glue_error("GetDatabases", e))?;
            out.extend(page.database_list.into_iter().map(|d| NamespaceIdent::new(d.name)));
        }
        Ok(out)
    }

    async fn create_namespace(&self, ns: &NamespaceIdent, properties: HashMap<String, String>) -> Result<Namespace> {
        let name = single_level(ns)?;
        let input = DatabaseInput::builder()
            .name(&name)
            .set_parameters(Some(properties.clone()))
            .build()
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("glue database input: {e}")))?;
        self.client
            .create_database()
            .set_catalog_id(self.catalog_id.clone())
            .database_input(input)
            .send()
            .await
            .map_err(|e| match glue_error("CreateDatabase", e) {
                err if err.kind() == ErrorKind::TableAlreadyExists => {
                    Error::new(ErrorKind::NamespaceAlreadyExists, format!("Glue database {name} exists"))
                }
                err => err,
            })?;
        Ok(Namespace::with_properties(ns.clone(), properties))
    }

    async fn get_namespace(&self, ns: &NamespaceIdent) -> Result<Namespace> {
        let name = single_level(ns)?;
        let out = self.client.get_database().set_catalog_id(self.catalog_id.clone()).name(&name).send().await.map_err(
            |e| match glue_error("GetDatabase", e) {
                err if err.kind() == ErrorKind::TableNotFound => {
                    Error::new(ErrorKind::NamespaceNotFound, format!("Glue database {name} not found"))
                }
                err => err,
            },
        )?;
        let properties = out.database.and_then(|d| d.parameters).unwrap_or_default();
        Ok(Namespace::with_properties(ns.clone(), properties))
    }

    async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool> {
        match self.get_namespace(ns).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NamespaceNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn update_namespace(&self, _ns: &NamespaceIdent, _properties: HashMap<String, String>) -> Result<()> {
        Err(Error::new(ErrorKind::FeatureUnsupported, "floe does not update Glue databases"))
    }

    async fn drop_namespace(&self, ns: &NamespaceIdent) -> Result<()> {
        let name = single_level(ns)?;
        self.client
            .delete_database()
            .set_catalog_id(self.catalog_id.clone())
            .name(name)
            .send()
            .await
            .map_err(|e| glue_error("DeleteDatabase", e))?;
        Ok(())
    }

    async fn list_tables(&self, ns: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        let db = single_level(ns)?;
        let mut out = Vec::new();
        let mut pages =
            self.client.get_tables().set_catalog_id(self.catalog_id.clone()).database_name(&db).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| glue_error("GetTables", e))?;
            out.extend(page.table_list.unwrap_or_default().into_iter().map(|t| TableIdent::new(ns.clone(), t.name)));
        }
        Ok(out)
    }

    async fn create_table(&self, ns: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        let db = single_level(ns)?;
        let name = creation.name.clone();
        let metadata = TableMetadataBuilder::from_table_creation(creation)?.build()?.metadata;
        let location = MetadataLocation::new_with_metadata(metadata.location(), &metadata);
        metadata.write_to(&self.file_io, &location).await?;
        let location = location.to_string();
        let input = self.table_input(&name, &metadata, HashMap::new(), &location, None)?;
        self.client
            .create_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&db)
            .table_input(input)
            .send()
            .await
            .map_err(|e| glue_error("CreateTable", e))?;
        self.build_table(TableIdent::new(ns.clone(), name), metadata, location)
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        let (_, location, _) = self.glue_table(ident).await?;
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        self.build_table(ident.clone(), metadata, location)
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        let db = single_level(ident.namespace())?;
        self.client
            .delete_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(db)
            .name(ident.name())
            .send()
            .await
            .map_err(|e| glue_error("DeleteTable", e))?;
        Ok(())
    }

    async fn purge_table(&self, _ident: &TableIdent) -> Result<()> {
        Err(Error::new(ErrorKind::FeatureUnsupported, "floe does not purge tables"))
    }

    async fn table_exists(&self, ident: &TableIdent) -> Result<bool> {
        match self.glue_table(ident).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> Result<()> {
        Err(Error::new(ErrorKind::FeatureUnsupported, "Glue cannot rename tables"))
    }

    async fn register_table(&self, _ident: &TableIdent, _metadata_location: String) -> Result<Table> {
        Err(Error::new(ErrorKind::FeatureUnsupported, "floe does not register existing tables"))
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let ident = commit.identifier().clone();
        let (glue, current_location, version) = self.glue_table(&ident).await?;
        let metadata = TableMetadata::read_from(&self.file_io, &current_location).await?;
        let current = self.build_table(ident.clone(), metadata, current_location.clone())?;
        // Checks the commit's requirements against the current metadata, then applies its updates.
        let staged = commit.apply(current)?;
        let new_location = staged
            .metadata_location()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "staged table has no metadata location"))?
            .to_string();
        let parsed: MetadataLocation = new_location.parse()?;
        staged.metadata().write_to(&self.file_io, &parsed).await?;

        // Between reading the current version and swapping: the window the VersionId check protects.
        floe_core::failpoint::hit(floe_core::failpoint::CATALOG_BEFORE_SWAP)
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?;
        self.update_pointer(&ident, glue, version, staged.metadata(), &new_location, &current_location).await?;
        Ok(staged)
    }
}

impl GlueCatalog {
    /// Point the Glue table at `new_location`, guarded by the Glue version read with `glue` (a concurrent
    /// update makes Glue answer `ConcurrentModificationException`, a conflict).
    async fn update_pointer(
        &self,
        ident: &TableIdent,
        glue: aws_sdk_glue::types::Table,
        version: Option<String>,
        metadata: &TableMetadata,
        new_location: &str,
        current_location: &str,
    ) -> Result<()> {
        let parameters = glue.parameters.clone().unwrap_or_default();
        let input = self.table_input(ident.name(), metadata, parameters, new_location, Some(current_location))?;
        self.client
            .update_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(single_level(ident.namespace())?)
            .table_input(input)
            .set_version_id(version)
            .send()
            .await
            .map_err(|e| glue_error("UpdateTable", e))?;
        Ok(())
    }
}

#[async_trait]
impl MetadataSwap for GlueCatalog {
    async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
        metadata: &TableMetadata,
    ) -> Result<()> {
        let (glue, current_location, version) = self.glue_table(ident).await?;
        if current_location != expected {
            let message = format!("{ident} points at {current_location}, not {expected}");
            return Err(Error::new(ErrorKind::CatalogCommitConflicts, message).with_retryable(true));
        }
        self.update_pointer(ident, glue, version, metadata, new_location, expected).await
    }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{ListType, NestedField, StructType};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn glue_types_cover_timestamptz_and_nesting() {
        let item = StructType::new(vec![
            Arc::new(NestedField::required(3, "sku", Type::Primitive(PrimitiveType::String))),
            Arc::new(NestedField::optional(4, "at", Type::Primitive(PrimitiveType::Timestamptz))),
        ]);
        let list = Type::List(ListType::new(Arc::new(NestedField::list_element(2, Type::Struct(item), false))));
        assert_eq!(glue_type(&list), "array<struct<sku:string,at:timestamp>>");
        assert_eq!(glue_type(&Type::Primitive(PrimitiveType::Decimal { precision: 12, scale: 2 })), "decimal(12,2)");
        assert_eq!(glue_type(&Type::Primitive(PrimitiveType::Long)), "bigint");
        let cols =
            glue_columns(&[Arc::new(NestedField::required(1, "ts", Type::Primitive(PrimitiveType::Timestamptz)))]);
        assert_eq!(cols[0].r#type(), Some("timestamp"));
        assert_eq!(cols[0].parameters().unwrap()["iceberg.field.id"], "1");
    }
}
