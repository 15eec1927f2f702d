use super::*;

const EXAMPLE: &str = include_str!("../../../../examples/pipeline.toml");

fn err(text: &str) -> String {
    Pipeline::parse(text, "p.toml").unwrap_err().to_string()
}

#[test]
fn example_pipeline_is_valid() {
    let p = Pipeline::parse(EXAMPLE, "pipeline.toml").unwrap();
    assert_eq!(p.name, "clickstream");
    assert_eq!(p.topics, ["clicks", "orders"]);
    assert_eq!(p.table.name.to_string(), "analytics.events");
    assert_eq!(p.dead_letter.to_string(), "analytics.events_dead_letters");
    assert_eq!(p.table.target_file_size, 128 * 1024 * 1024);
    let user_id = p.column("user_id").unwrap();
    assert_eq!(
        user_id.source,
        ColumnSource::Value { path: vec!["user".into(), "id".into()], format: TimestampFormat::Rfc3339 }
    );
    assert!(user_id.required);
    assert_eq!(p.column("trace_id").unwrap().source, ColumnSource::Header("trace-id".into()));
    assert_eq!(
        p.column("client_time").unwrap().source,
        ColumnSource::Value { path: vec!["client_ts".into()], format: TimestampFormat::EpochMillis }
    );
    assert_eq!(p.table.partition[0].name, "event_time_day");
    assert_eq!(p.table.partition[1].transform, Transform::Identity);
}

const MINIMAL: &str = r#"
name = "p"
[source]
topics = ["t"]
[table]
namespace = "ns"
name = "tbl"
[[table.columns]]
name = "id"
type = "long"
"#;

#[test]
fn minimal_pipeline_gets_defaults() {
    let p = Pipeline::parse(MINIMAL, "p.toml").unwrap();
    assert_eq!(p.dead_letter.to_string(), "ns.tbl_dead_letters");
    assert_eq!(
        p.column("id").unwrap().source,
        ColumnSource::Value { path: vec!["id".into()], format: TimestampFormat::Rfc3339 }
    );
    assert!(p.table.partition.is_empty());
}

#[test]
fn errors_name_line_and_field() {
    let bad_type = MINIMAL.replace(r#"type = "long""#, r#"type = "lnog""#);
    let e = err(&bad_type);
    assert!(e.contains("p.toml: line 10, column 8: `table.columns[0].type`: expected a type"), "{e}");

    let unknown_key = format!("{MINIMAL}colour = \"red\"\n");
    let e = err(&unknown_key);
    assert!(e.contains("line 11") && e.contains("unknown field `colour`"), "{e}");

    let missing = MINIMAL.replace("namespace = \"ns\"\n", "");
    assert!(err(&missing).contains("missing field `namespace`"));

    let bad_from = format!("{MINIMAL}from = \"@nope\"\n");
    let e = err(&bad_from);
    assert!(e.contains("`table.columns[0].from`") && e.contains("is not a source"), "{e}");
}

#[test]
fn rejects_semantic_mistakes() {
    let dup_topic = MINIMAL.replace(r#"topics = ["t"]"#, r#"topics = ["t", "t"]"#);
    assert!(err(&dup_topic).contains("listed twice"));
    let no_topics = MINIMAL.replace(r#"topics = ["t"]"#, "topics = []");
    assert!(err(&no_topics).contains("at least one topic"));
    let bad_topic = MINIMAL.replace(r#"topics = ["t"]"#, r#"topics = ["a b"]"#);
    assert!(err(&bad_topic).contains("is not a Kafka topic name (letters, digits"));

    let part = format!("{MINIMAL}[[table.partition]]\ncolumn = \"id\"\ntransform = \"day\"\n");
    let e = err(&part);
    assert!(
        e.contains("`table.partition[0].transform`") && e.contains("cannot be applied to a column of type `long`"),
        "{e}"
    );
    let part = format!("{MINIMAL}[[table.partition]]\ncolumn = \"nope\"\ntransform = \"identity\"\n");
    assert!(err(&part).contains("no such column"));
    let part = format!("{MINIMAL}[[table.partition]]\ncolumn = \"id\"\ntransform = \"bucket[16]\"\n");
    assert_eq!(Pipeline::parse(&part, "p").unwrap().table.partition[0].name, "id_bucket");

    let dup_col = format!("{MINIMAL}[[table.columns]]\nname = \"id\"\ntype = \"int\"\n");
    assert!(err(&dup_col).contains("column name appears twice"));

    let overlap = format!("{MINIMAL}[[table.columns]]\nname = \"x\"\ntype = \"long\"\nfrom = \"$.id.sub\"\n");
    assert!(err(&overlap).contains("overlaps the path of column `id`"));

    let key_long = format!("{MINIMAL}[[table.columns]]\nname = \"k\"\ntype = \"long\"\nfrom = \"@key\"\n");
    assert!(err(&key_long).contains("must have type string or binary"));

    let fmt = format!("{MINIMAL}format = \"epoch_millis\"\n");
    assert!(err(&fmt).contains("applies to timestamp columns only"));

    let same = format!("{MINIMAL}[dead_letter]\ntable = \"tbl\"\n");
    assert!(err(&same).contains("must differ from the target table"));

    let codec = MINIMAL
        .replace("name = \"tbl\"", "name = \"tbl\"\nproperties = { \"write.parquet.compression-codec\" = \"lzo\" }");
    assert!(err(&codec).contains("codec `lzo` is not supported"), "{}", err(&codec));

    let size = MINIMAL.replace("name = \"tbl\"", "name = \"tbl\"\ntarget_file_size_mb = 0");
    assert!(err(&size).contains("between 1 and 4096"));

    let age = MINIMAL.replace(
        "name = \"tbl\"",
        "name = \"tbl\"\nproperties = { \"history.expire.max-snapshot-age-ms\" = \"1 day\" }",
    );
    let message = err(&age);
    assert!(
        message.contains("history.expire.max-snapshot-age-ms") && message.contains("`1 day` is not a positive number"),
        "{message}"
    );
    let delete = MINIMAL.replace(
        "name = \"tbl\"",
        "name = \"tbl\"\nproperties = { \"write.metadata.delete-after-commit.enabled\" = \"yes\" }",
    );
    assert!(err(&delete).contains("is not true or false"), "{}", err(&delete));
    // Orphan removal's safety window has a floor: a file younger than an hour may be on its way into a commit.
    let window = |ms: &str| {
        MINIMAL.replace(
            "name = \"tbl\"",
            &format!("name = \"tbl\"\nproperties = {{ \"floe.orphans.older-than-ms\" = \"{ms}\" }}"),
        )
    };
    assert!(
        err(&window("600000")).contains("is not a number of milliseconds of at least 3600000"),
        "{}",
        err(&window("600000"))
    );
    assert!(Pipeline::parse(&window("3600000"), "p.toml").is_ok());
    let fine = MINIMAL.replace(
        "name = \"tbl\"",
        "name = \"tbl\"\nproperties = { \"history.expire.max-snapshot-age-ms\" = \"3600000\", \"history.expire.min-snapshots-to-keep\" = \"5\" }",
    );
    assert!(Pipeline::parse(&fine, "p.toml").is_ok());
}

const CHANGES: &str = r#"
name = "cdc"
[source]
topics = ["t"]
changes = "debezium"
[table]
namespace = "ns"
name = "tbl"
primary_key = ["id"]
order_by = "lsn"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "v"
type = "string"
[[table.columns]]
name = "lsn"
type = "long"
from = "@change.source.lsn"
"#;

#[test]
fn change_streams_declare_format_key_and_order() {
    let p = Pipeline::parse(CHANGES, "p.toml").unwrap();
    let c = p.changes.as_ref().unwrap();
    assert_eq!(
        (c.format.clone(), c.primary_key.clone(), c.order_by.clone()),
        (ChangeFormat::Debezium, vec!["id".to_string()], Some("lsn".into()))
    );
    assert_eq!(
        p.column("lsn").unwrap().source,
        ColumnSource::Value {
            path: vec!["@change".into(), "source".into(), "lsn".into()],
            format: TimestampFormat::Rfc3339
        }
    );
    let op = Pipeline::parse(
        &CHANGES
            .replace(r#"changes = "debezium""#, r#"changes = { op_field = "meta.op" }"#)
            .replace("from = \"@change.source.lsn\"", ""),
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        op.changes.unwrap().format,
        ChangeFormat::OpField {
            path: vec!["meta".into(), "op".into()],
            upsert: vec!["c".into(), "r".into(), "u".into()],
            delete: vec!["d".into()]
        }
    );
}

#[test]
fn bad_change_declarations_name_the_field() {
    let cases = [
        (
            CHANGES.replace(r#"changes = "debezium""#, r#"changes = "maxwell""#),
            "`source.changes`: `maxwell` is not a change format",
        ),
        (CHANGES.replace("primary_key = [\"id\"]\n", ""), "`source.changes`: needs table.primary_key"),
        (
            CHANGES.replace(r#"primary_key = ["id"]"#, r#"primary_key = ["nope"]"#),
            "`table.primary_key[0]`: `nope` is not a column",
        ),
        (CHANGES.replace(r#"primary_key = ["id"]"#, r#"primary_key = ["v"]"#), "must be `required = true`"),
        (CHANGES.replace(r#"order_by = "lsn""#, r#"order_by = "v""#), "`table.order_by`: column `v` has type `string`"),
        (CHANGES.replace("changes = \"debezium\"\n", ""), "`table.primary_key`: applies only with source.changes"),
        (
            CHANGES.replace(r#"changes = "debezium""#, r#"changes = "upsert""#),
            "`table.columns[2].from`: `@change.…` applies only with source.changes = \"debezium\"",
        ),
        (
            CHANGES.replace(r#"changes = "debezium""#, r#"changes = { op_field = "op", upsert = ["d"] }"#),
            "operation `d` is listed as upsert and as delete",
        ),
        (
            format!("{CHANGES}\n[[output]]\nname = \"o\"\n[output.dedup]\nkey = \"id\"\nhorizon = \"1h\"\n"),
            "`output[0].dedup`: a change stream already keeps one row per primary key",
        ),
        (
            CHANGES.replace(
                "[[table.columns]]\nname = \"id\"",
                "evolve = \"add-fields\"\n[[table.columns]]\nname = \"id\"",
            ),
            "`table.evolve`: automatic evolution reads record values as rows",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "{want}\n  got: {e}");
    }
}

#[test]
fn registry_formats_name_their_framing_and_registry() {
    let avro = MINIMAL.replace(
        r#"topics = ["t"]"#,
        "topics = [\"t\"]\nformat = \"avro\"\nregistry = { url = \"https://sr.example.com/\" }",
    );
    let p = Pipeline::parse(&avro, "p.toml").unwrap();
    assert_eq!(p.format.value, ValueFormat::Avro);
    assert_eq!(p.format.framing, Some(Framing::Confluent));
    assert_eq!(p.format.registry, Some(RegistrySpec::Confluent { url: "https://sr.example.com".into() }));
    let glue = MINIMAL.replace(
        r#"topics = ["t"]"#,
        "topics = [\"t\"]\nformat = \"avro\"\nframing = \"glue\"\nregistry = { glue = \"orders-registry\" }",
    );
    let p = Pipeline::parse(&glue, "p.toml").unwrap();
    assert_eq!(
        (p.format.framing, p.format.registry),
        (Some(Framing::Glue), Some(RegistrySpec::Glue { registry: "orders-registry".into() }))
    );
    assert_eq!(Pipeline::parse(MINIMAL, "p.toml").unwrap().format, SourceFormat::default());
}

#[test]
fn registry_format_mistakes_name_line_and_field() {
    let with = |source: &str| MINIMAL.replace(r#"topics = ["t"]"#, &format!("topics = [\"t\"]\n{source}"));
    let cases = [
        (
            "format = \"xml\"",
            "line 5, column 10: `source.format`: `xml` is not `json`, `avro`, `protobuf` or `json-schema`",
        ),
        ("format = \"protobuf\"", "`source.registry`: format = \"protobuf\" needs a registry"),
        ("format = \"avro\"", "`source.registry`: format = \"avro\" needs a registry"),
        ("framing = \"glue\"", "line 5, column 11: `source.framing`: applies only to registry formats"),
        (
            "format = \"avro\"\nregistry = { url = \"ftp://x\" }",
            "line 6, column 20: `source.registry.url`: `ftp://x` is not an http(s) URL",
        ),
        (
            "format = \"avro\"\nregistry = { glue = \"r\" }",
            "`source.registry.glue`: the Glue registry serves framing = \"glue\"",
        ),
        (
            "format = \"avro\"\nframing = \"glue\"\nregistry = { url = \"http://x:1\" }",
            "a Confluent registry serves framing = \"confluent\"",
        ),
        (
            "format = \"avro\"\nregistry = { url = \"http://x:1\", glue = \"r\" }",
            "`source.registry`: set exactly one of `url` and `glue`",
        ),
        (
            "format = \"avro\"\nframing = \"gzip\"\nregistry = { url = \"http://x:1\" }",
            "`source.framing`: `gzip` is not `confluent` or `glue`",
        ),
        (
            "format = \"avro\"\nchanges = \"upsert\"\nregistry = { url = \"http://x:1\" }",
            "`source.changes`: change streams read JSON values",
        ),
    ];
    for (source, want) in cases {
        let e = err(&with(source));
        assert!(e.contains(want), "{source}: {e}");
    }
    let raw_text = with("format = \"avro\"\nregistry = { url = \"http://x:1\" }")
        + "[[table.columns]]\nname = \"raw\"\ntype = \"string\"\nfrom = \"@value\"\n";
    assert!(
        err(&raw_text).contains("`table.columns[1].type`: `@value` of a registry format holds the framed bytes"),
        "{}",
        err(&raw_text)
    );
    let discover = with("format = \"avro\"\nregistry = { url = \"http://x:1\" }")
        .replace("[table]\n", "[table]\nevolve = \"add-fields\"\n");
    assert!(
        err(&discover).contains("`table.evolve`: `add-fields` discovers fields of plain JSON"),
        "{}",
        err(&discover)
    );
}

#[test]
fn key_paths_need_a_key_format_and_an_append() {
    let keyed = format!("{MINIMAL}[[table.columns]]\nname = \"tenant\"\ntype = \"string\"\nfrom = \"@key.tenant\"\n");
    let e = err(&keyed);
    assert!(e.contains("`table.columns[1].from`: reading into the key needs source.key_format"), "{e}");
    let with_format = keyed.replace(r#"topics = ["t"]"#, "topics = [\"t\"]\nkey_format = \"json\"");
    let p = Pipeline::parse(&with_format, "p.toml").unwrap();
    assert_eq!(p.format.key, Some(ValueFormat::Json));
    assert_eq!(
        p.column("tenant").unwrap().source,
        ColumnSource::KeyPath { path: vec!["tenant".into()], format: TimestampFormat::Rfc3339 }
    );
    let avro_keys = keyed.replace(r#"topics = ["t"]"#, "topics = [\"t\"]\nkey_format = \"avro\"");
    assert!(err(&avro_keys).contains("format = \"avro\" needs a registry"), "{}", err(&avro_keys));
    let changes = with_format
        .replace("key_format = \"json\"", "key_format = \"json\"\nchanges = \"upsert\"")
        .replace("[table]\n", "[table]\nprimary_key = [\"id\"]\n")
        .replace("name = \"id\"\ntype = \"long\"\n", "name = \"id\"\ntype = \"long\"\nrequired = true\n");
    assert!(err(&changes).contains("a change stream reads its key itself"), "{}", err(&changes));
}

#[test]
fn every_example_pipeline_is_valid() {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Pipeline::parse(&text, &path.display().to_string()) {
                panic!("{}: {e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} examples found in {}", dir.display());
}

#[test]
fn registry_evolution_needs_a_binary_registry_format() {
    let with = |source: &str, evolve: &str| {
        MINIMAL
            .replace(r#"topics = ["t"]"#, &format!("topics = [\"t\"]\n{source}"))
            .replace("[table]\n", &format!("[table]\nevolve = \"{evolve}\"\n"))
    };
    let p =
        Pipeline::parse(&with("format = \"avro\"\nregistry = { url = \"http://r:1\" }", "registry"), "p.toml").unwrap();
    assert_eq!(p.table.evolve, Evolve::Registry { max_new_columns: DEFAULT_MAX_NEW_COLUMNS as usize });
    let e = err(&with("", "registry"));
    assert!(e.contains("`table.evolve`: `registry` takes the fields of Avro and Protobuf writer schemas"), "{e}");
    let e = err(&with("format = \"json-schema\"\nregistry = { url = \"http://r:1\" }", "registry"));
    assert!(e.contains("is decoded as JSON: declare the columns"), "{e}");
    let e = err(&with("format = \"protobuf\"\nregistry = { url = \"http://r:1\" }", "add-fields"));
    assert!(e.contains("or take the writer schemas' fields with `registry`"), "{e}");
    let none = with("format = \"avro\"\nregistry = { url = \"http://r:1\" }", "registry")
        .replace("[[table.columns]]\nname = \"id\"\ntype = \"long\"\n", "columns = []\n");
    assert!(Pipeline::parse(&none, "p.toml").unwrap().table.columns.is_empty(), "all columns from the registry");
    let e = err(&none.replace("evolve = \"registry\"\n", ""));
    assert!(e.contains("`table.columns`: declare at least one column"), "{e}");
    let e = err(&with("", "everything"));
    assert!(e.contains("`everything` is not `none`, `add-fields` or `registry`"), "{e}");
}
