//! `floe validate`: the cold start's validation of a pipeline file, then what it would create: every table with
//! its Iceberg schema (field ids included), partition spec and properties, and which ingest build runs it. Given
//! a catalog, also how each existing table would evolve to take the file, or why it cannot (changing nothing).

use std::fmt::Write;
use std::path::Path;

use floe_core::{Backends, Evolve, Framing, Output, Pipeline, RegistrySpec, TableLayout, ValueFormat, WindowSpec};
use iceberg::ErrorKind;
use iceberg::spec::{NestedFieldRef, Type};
use serde_json::json;

/// Stands for the warehouse root in printed locations: where it is depends on the backend, not on the file.
const WAREHOUSE: &str = "<warehouse>";

/// One table the pipeline writes and why.
struct Entry {
    role: String,
    layout: TableLayout,
    /// Compared with the catalog, when one is given.
    catalog: Option<InCatalog>,
}

/// A table as the catalog has it, compared with the pipeline file.
enum InCatalog {
    /// Not created yet: the first ingest creates it.
    Absent,
    /// The changes the next cold start makes (none: up to date).
    Evolves(Vec<String>),
    /// Why the table cannot take the file.
    Refuses(Vec<String>),
}

/// Validate `path` (and compare it with the tables of `catalog`, if given); the summary as text or JSON, and
/// the error to exit with if a table cannot take the file.
pub async fn run(
    path: &Path,
    as_json: bool,
    catalog: Option<&Backends>,
) -> anyhow::Result<(String, Option<floe_core::Error>)> {
    let pipeline = floe_core::load_pipeline(path)?;
    let warehouse = catalog.map_or(WAREHOUSE, |b| b.warehouse.as_str());
    let mut entries = tables(&pipeline, warehouse)?;
    let mut refused = None;
    if let Some(backends) = catalog {
        for e in &mut entries {
            let state = compare(backends, &e.layout).await?;
            if let InCatalog::Refuses(problems) = &state {
                let table = e.layout.name.to_string();
                refused.get_or_insert(floe_core::Error::Schema { table, problems: problems.clone() });
            }
            e.catalog = Some(state);
        }
    }
    let summary =
        if as_json { json_summary(&pipeline, &entries)?.to_string() } else { text_summary(&pipeline, path, &entries) };
    Ok((summary, refused))
}

/// `layout`'s table in the catalog compared with the pipeline file.
async fn compare(backends: &Backends, layout: &TableLayout) -> anyhow::Result<InCatalog> {
    let table = match backends.catalog.load_table(&layout.ident()).await {
        Ok(table) => table,
        Err(e) if matches!(e.kind(), ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound) => {
            return Ok(InCatalog::Absent);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match layout.evolution_for(table.metadata()) {
        Ok(evolution) => InCatalog::Evolves(evolution.changes),
        Err(floe_core::Error::Schema { problems, .. }) => InCatalog::Refuses(problems),
        Err(e) => return Err(e.into()),
    })
}

/// The ingest build (template parameter `IngestBuild`) that runs `p`: outputs need the SQL engine, which only
/// `floe-ingest-sql` links; anything else runs on `floe-ingest`, a third of the size.
fn ingest_build(p: &Pipeline) -> (&'static str, String) {
    if p.outputs.is_empty() {
        ("raw", "floe-ingest (IngestBuild=raw): no outputs, so no SQL engine is needed".into())
    } else {
        let n = p.outputs.len();
        ("sql", format!("floe-ingest-sql (IngestBuild=sql): {n} output(s) run SQL; floe-ingest refuses them"))
    }
}

fn tables(p: &Pipeline, warehouse: &str) -> anyhow::Result<Vec<Entry>> {
    let entry = |role: String, layout: TableLayout| Entry { role, layout, catalog: None };
    let mut entries = vec![
        entry("target table".into(), TableLayout::target(p, warehouse)?),
        entry(
            "dead letters: records that could not be used, with the reason".into(),
            TableLayout::dead_letter(p, warehouse)?,
        ),
    ];
    for o in &p.outputs {
        entries.push(entry(output_role(o), TableLayout::output(p, o, warehouse)?));
        if o.window.is_some() {
            let role = format!("late records of {}: rows that missed their window", o.table);
            entries.push(entry(role, TableLayout::late(p, o, warehouse)?));
        }
    }
    Ok(entries)
}

fn output_role(o: &Output) -> String {
    match (&o.window, &o.dedup) {
        (Some(w), _) => {
            let kind = match w.spec {
                WindowSpec::Tumbling { size_ms } => format!("tumbling {}", duration(size_ms)),
                WindowSpec::Hopping { size_ms, hop_ms } => {
                    format!("hopping {} every {}", duration(size_ms), duration(hop_ms))
                }
                WindowSpec::Session { gap_ms } => format!("session, gap {}", duration(gap_ms)),
            };
            let by: Vec<&str> = w.group_by.iter().map(|(n, _)| n.as_str()).collect();
            let by = if by.is_empty() { String::new() } else { format!(" by {}", by.join(", ")) };
            format!("output: {kind} windows over {}{by}, emitted when final", w.time_column)
        }
        (None, Some(d)) => format!("output: SQL rows deduplicated by `{}` within {}", d.key, duration(d.horizon_ms)),
        (None, None) => "output: SQL rows".into(),
    }
}

fn duration(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// `JSON`, or e.g. `Avro (Confluent framing, schemas from http://registry:8081)`, and the keys' format if decoded.
fn source_format(p: &Pipeline) -> String {
    let name = |f: ValueFormat| match f {
        ValueFormat::Json => "JSON",
        ValueFormat::Avro => "Avro",
        ValueFormat::Protobuf => "Protobuf",
        ValueFormat::JsonSchema => "JSON Schema",
    };
    let keys = p.format.key.map(|k| format!(" with {} keys", name(k))).unwrap_or_default();
    let (Some(framing), Some(registry)) = (p.format.framing, &p.format.registry) else {
        return format!("{}{keys}", name(p.format.value));
    };
    let registry = match registry {
        RegistrySpec::Confluent { url } => url.clone(),
        RegistrySpec::Glue { registry } => format!("the Glue Schema Registry `{registry}`"),
    };
    let framing = match framing {
        Framing::Confluent => "Confluent",
        Framing::Glue => "Glue",
    };
    format!("{}{keys} ({framing} framing, schemas from {registry})", name(p.format.value))
}

fn text_summary(p: &Pipeline, path: &Path, entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid pipeline `{}`", path.display(), p.name);
    let _ = writeln!(out, "  source: {} records from topic(s) {}", source_format(p), p.topics.join(", "));
    if let Some(route) = &p.route {
        let _ = writeln!(out, "  route: only records whose {} is one of: {}", route.on, route.values.join(", "));
    }
    if !p.references.is_empty() {
        let refs: Vec<String> = p.references.iter().map(|r| format!("{} ({})", r.name, r.location)).collect();
        let _ = writeln!(out, "  reference tables: {}", refs.join(", "));
    }
    let _ = writeln!(out, "  ingest build: {}", ingest_build(p).1);
    if let Evolve::AddFields { max_new_columns } = p.table.evolve {
        let _ = writeln!(
            out,
            "  evolve: add-fields: fields the records have become optional columns of {} (at most {max_new_columns} \
             beyond the declared ones)",
            p.table.name
        );
    }
    if let Evolve::Registry { max_new_columns } = p.table.evolve {
        let _ = writeln!(
            out,
            "  evolve: registry: the fields of every writer schema the records name become optional columns of {} \
             (at most {max_new_columns} beyond the declared ones)",
            p.table.name
        );
    }
    if let Some(c) = &p.changes {
        let order = match &c.order_by {
            Some(o) => format!("`{o}`, then the Kafka timestamp"),
            None => "the Kafka timestamp".to_string(),
        };
        let _ = writeln!(
            out,
            "  changes: {} by primary key ({}): the last change of a key wins (Kafka order within a partition; \
             across partitions {order}); committed as position deletes",
            c.format,
            c.primary_key.join(", ")
        );
    }
    let _ = writeln!(out, "  creates {} Iceberg tables (format v2):", entries.len());
    for e in entries {
        let l = &e.layout;
        let _ = writeln!(out, "\n{}  — {}", l.name, e.role);
        let _ = writeln!(out, "  location  {}", l.location);
        let _ = writeln!(out, "  schema");
        let mut rows = Vec::new();
        for f in l.schema.as_struct().fields() {
            field_rows(&mut rows, f, 0);
        }
        let width = rows.iter().map(|r| r.depth * 2 + r.name.len()).max().unwrap_or(0);
        for r in rows {
            let name = format!("{:indent$}{}", "", r.name, indent = r.depth * 2);
            let required = if r.required { "  required" } else { "" };
            let _ = writeln!(out, "    {:>4}  {name:<width$}  {}{required}", r.id, r.ty);
        }
        let spec: Vec<String> = l
            .spec
            .fields()
            .iter()
            .map(|f| {
                let source = l.schema.name_by_field_id(f.source_id).unwrap_or("?");
                format!("{} = {}({source}) [field id {}]", f.name, f.transform, f.field_id)
            })
            .collect();
        let spec = if spec.is_empty() { "unpartitioned".to_string() } else { spec.join(", ") };
        let _ = writeln!(out, "  partition {spec}");
        let mut props: Vec<String> = l.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        props.sort();
        if !props.is_empty() {
            let _ = writeln!(out, "  properties {}", props.join(", "));
        }
        match &e.catalog {
            None => {}
            Some(InCatalog::Absent) => {
                let _ = writeln!(out, "  catalog   not created yet: the first ingest creates it as above");
            }
            Some(InCatalog::Evolves(changes)) if changes.is_empty() => {
                let _ = writeln!(out, "  catalog   up to date");
            }
            Some(InCatalog::Evolves(changes)) => {
                let _ = writeln!(out, "  catalog   the next cold start evolves the table (field ids kept):");
                for c in changes {
                    let _ = writeln!(out, "            - {c}");
                }
            }
            Some(InCatalog::Refuses(problems)) => {
                let _ = writeln!(out, "  catalog   CANNOT take this file:");
                for p in problems {
                    let _ = writeln!(out, "            - {p}");
                }
            }
        }
    }
    out
}

/// One schema row of the text summary.
struct Row {
    depth: usize,
    id: i32,
    name: String,
    ty: String,
    required: bool,
}

/// One row per field, nested fields (struct members, list elements, map keys and values) below, indented.
fn field_rows(rows: &mut Vec<Row>, f: &NestedFieldRef, depth: usize) {
    let ty = match &*f.field_type {
        Type::Primitive(p) => p.to_string(),
        Type::Struct(_) => "struct".into(),
        Type::List(_) => "list".into(),
        Type::Map(_) => "map".into(),
    };
    rows.push(Row { depth, id: f.id, name: f.name.clone(), ty, required: f.required });
    match &*f.field_type {
        Type::Primitive(_) => {}
        Type::Struct(s) => s.fields().iter().for_each(|c| field_rows(rows, c, depth + 1)),
        Type::List(l) => field_rows(rows, &l.element_field, depth + 1),
        Type::Map(m) => {
            field_rows(rows, &m.key_field, depth + 1);
            field_rows(rows, &m.value_field, depth + 1);
        }
    }
}

fn json_summary(p: &Pipeline, entries: &[Entry]) -> anyhow::Result<serde_json::Value> {
    let tables = entries
        .iter()
        .map(|e| {
            let catalog = match &e.catalog {
                None => serde_json::Value::Null,
                Some(InCatalog::Absent) => json!({"exists": false}),
                Some(InCatalog::Evolves(changes)) => json!({"exists": true, "changes": changes, "problems": []}),
                Some(InCatalog::Refuses(problems)) => json!({"exists": true, "changes": [], "problems": problems}),
            };
            Ok(json!({
                "name": e.layout.name.to_string(),
                "role": e.role,
                "location": e.layout.location,
                "schema": serde_json::to_value(&*e.layout.schema)?,
                "partition_spec": serde_json::to_value(&*e.layout.spec)?,
                "properties": e.layout.properties,
                "catalog": catalog,
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let build = ingest_build(p).0;
    let evolve = match p.table.evolve {
        Evolve::Declared => json!({"mode": "none"}),
        Evolve::AddFields { max_new_columns } => json!({"mode": "add-fields", "max_new_columns": max_new_columns}),
        Evolve::Registry { max_new_columns } => json!({"mode": "registry", "max_new_columns": max_new_columns}),
    };
    let changes = p
        .changes
        .as_ref()
        .map(|c| json!({"format": c.format.to_string(), "primary_key": c.primary_key, "order_by": c.order_by}));
    let registry = match &p.format.registry {
        None => serde_json::Value::Null,
        Some(RegistrySpec::Confluent { url }) => json!({"confluent": url}),
        Some(RegistrySpec::Glue { registry }) => json!({"glue": registry}),
    };
    let format = json!({"value": p.format.value.name(), "key": p.format.key.map(|k| k.name()), "framing": p.format.framing.map(|f| f.name()), "registry": registry});
    let route = p.route.as_ref().map(|r| json!({"on": r.on.to_string(), "values": r.values}));
    Ok(json!({"valid": true, "pipeline": p.name, "topics": p.topics, "route": route, "format": format,
        "ingest_build": build, "evolve": evolve, "changes": changes, "tables": tables}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> std::path::PathBuf {
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
            .join("../../examples/pipeline.toml")
    }

    #[tokio::test]
    async fn the_example_lists_its_tables_with_field_ids_and_specs() {
        let text = run(&example(), false, None).await.unwrap().0;
        assert!(text.contains("valid pipeline `clickstream`"), "{text}");
        assert!(text.contains("analytics.events  — target table"), "{text}");
        assert!(text.contains("analytics.events_dead_letters  — dead letters"), "{text}");
        // Field ids as the catalog assigns them: event_id is the first column, items' struct members nest.
        let event_id = text.lines().find(|l| l.trim_start().starts_with("1  event_id")).expect("event_id");
        assert!(event_id.trim_end().ends_with("string  required"), "{text}");
        let sku = text.lines().find(|l| l.contains(" sku ")).expect("a nested field");
        assert!(sku.trim_start().starts_with("20      sku"), "items' struct members nest, ids in order: {text}");
        assert!(text.contains("event_time_day = day(event_time)"), "{text}");
        assert!(text.contains("ingest build: floe-ingest-sql (IngestBuild=sql): 2 output(s)"), "{text}");
    }

    #[tokio::test]
    async fn a_pipeline_without_outputs_runs_on_the_raw_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.toml");
        let text = std::fs::read_to_string(example()).unwrap();
        let raw = &text[..text.find("[[reference]]").expect("the example has references and outputs")];
        std::fs::write(&path, raw).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        assert_eq!(summary["ingest_build"], "raw");
        assert_eq!(summary["tables"].as_array().unwrap().len(), 2, "target and dead letters only");
        assert!(run(&path, false, None).await.unwrap().0.contains("ingest build: floe-ingest (IngestBuild=raw)"));
        let with_outputs: serde_json::Value =
            serde_json::from_str(&run(&example(), true, None).await.unwrap().0).unwrap();
        assert_eq!(with_outputs["ingest_build"], "sql");
        assert_eq!(with_outputs["evolve"], json!({"mode": "none"}));

        std::fs::write(&path, raw.replacen("[table]\n", "[table]\nevolve = \"add-fields\"\nmax_new_columns = 7\n", 1))
            .unwrap();
        let auto: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        assert_eq!(auto["evolve"], json!({"mode": "add-fields", "max_new_columns": 7}));
        let text = run(&path, false, None).await.unwrap().0;
        assert!(text.contains("evolve: add-fields: fields the records have become optional columns of"), "{text}");
    }

    #[tokio::test]
    async fn an_avro_pipeline_shows_its_framing_and_registry() {
        let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
            .join("../../examples/avro.toml");
        let text = run(&path, false, None).await.unwrap().0;
        assert!(
            text.contains(
                "source: Avro (Confluent framing, schemas from https://schema-registry.example.com) records from \
                 topic(s) shop.orders"
            ),
            "{text}"
        );
        let summary: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        assert_eq!(
            summary["format"],
            json!({"value": "avro", "key": null, "framing": "confluent",
                "registry": {"confluent": "https://schema-registry.example.com"}})
        );
    }

    #[tokio::test]
    async fn a_change_stream_shows_its_format_key_and_order() {
        let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
            .join("../../examples/cdc.toml");
        let text = run(&path, false, None).await.unwrap().0;
        assert!(
            text.contains(
                "changes: debezium by primary key (id): the last change of a key wins (Kafka order within a \
                           partition; across partitions `lsn`, then the Kafka timestamp); committed as position deletes"
            ),
            "{text}"
        );
        let summary: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        assert_eq!(summary["changes"], json!({"format": "debezium", "primary_key": ["id"], "order_by": "lsn"}));
        let example: serde_json::Value = serde_json::from_str(&run(&example(), true, None).await.unwrap().0).unwrap();
        assert_eq!(example["changes"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn the_stream_pipeline_shows_outputs_windows_and_late_tables() {
        let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
            .join("../../tests/pipelines/stream.toml");
        let summary: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        let names: Vec<&str> =
            summary["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "stream.raw",
                "stream.raw_dead_letters",
                "stream.enriched",
                "stream.unique_events",
                "stream.per_user_10s",
                "stream.per_user_10s_late",
                "stream.per_user_hop",
                "stream.per_user_hop_late",
                "stream.sessions",
                "stream.sessions_late",
            ]
        );
        let windows = &summary["tables"][4];
        assert!(windows["role"].as_str().unwrap().starts_with("output: tumbling 10s windows over ts by user"));
        let fields: Vec<&str> =
            windows["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(fields, ["window_start", "window_end", "user", "n", "total", "lo", "hi", "mean", "ids"]);
    }

    #[tokio::test]
    async fn a_broken_file_fails_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        let text = std::fs::read_to_string(example()).unwrap().replacen("type = \"long\"", "type = \"lng\"", 1);
        std::fs::write(&path, text).unwrap();
        let e = run(&path, false, None).await.unwrap_err();
        let message = format!("{e:#}");
        assert!(
            message.contains("broken.toml") && message.contains("line ") && message.contains("column "),
            "{message}"
        );
        assert!(message.contains("table.columns[3].type"), "{message}");
        assert_eq!(crate::exit::code(&e), crate::exit::INVALID);
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    /// A routed pipeline taking its columns from the registry says so, in text and JSON.
    #[tokio::test]
    async fn a_route_and_registry_evolution_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clicks.toml");
        std::fs::write(
            &path,
            "name = \"clicks\"\n[source]\ntopics = [\"web.*\"]\nformat = \"avro\"\n\
             registry = { url = \"http://registry:8081\" }\nroute = { header = \"kind\", values = [\"click\", \"view\"] }\n\
             [table]\nnamespace = \"web\"\nname = \"clicks\"\nevolve = \"registry\"\ncolumns = []\n",
        )
        .unwrap();
        let text = run(&path, false, None).await.unwrap().0;
        assert!(text.contains("route: only records whose header `kind` is one of: click, view"), "{text}");
        assert!(text.contains("evolve: registry: the fields of every writer schema"), "{text}");
        let summary: serde_json::Value = serde_json::from_str(&run(&path, true, None).await.unwrap().0).unwrap();
        assert_eq!(summary["route"], json!({"on": "header `kind`", "values": ["click", "view"]}));
        assert_eq!(summary["evolve"], json!({"mode": "registry", "max_new_columns": 100}));
        assert_eq!(summary["topics"], json!(["web.*"]));
    }
}
