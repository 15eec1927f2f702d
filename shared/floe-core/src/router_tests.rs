//! Splitting a topic-partition's records among the pipelines of a deployment, and the checks across their files.

use super::*;
use crate::input::event::SourceRecord;

fn pipeline(name: &str, topics: &str, source: &str, table: &str) -> Pipeline {
    let text = format!(
        "name = \"{name}\"\n[source]\ntopics = [{topics}]\n{source}\n[table]\nnamespace = \"n\"\nname = \"{table}\"\n\
         columns = [{{ name = \"id\", type = \"long\" }}]\n"
    );
    Pipeline::parse(&text, &format!("{name}.toml")).unwrap()
}

fn record(offset: i64, value: &str, headers: &[(&str, &str)]) -> SourceRecord {
    SourceRecord {
        offset,
        timestamp_ms: Some(1),
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
        problem: None,
    }
}

fn routed(split: &BTreeMap<usize, Vec<SourceRecord>>) -> Vec<(usize, i64, Option<&'static str>)> {
    let mut out: Vec<_> = split
        .iter()
        .flat_map(|(route, records)| {
            records.iter().map(move |r| (*route, r.offset, r.problem.as_ref().map(|p| p.kind)))
        })
        .collect();
    out.sort_by_key(|(_, offset, _)| *offset);
    out
}

#[test]
fn a_topic_split_by_a_field_goes_to_each_route_and_the_rest_to_the_first_as_dead_letters() {
    let clicks =
        pipeline("clicks", "\"events\"", "route = { field = \"$.type\", values = [\"click\", \"view\"] }", "c");
    let orders =
        pipeline("orders", "\"events\", \"orders.*\"", "route = { field = \"$.type\", values = [\"order\", 7] }", "o");
    let other = pipeline("other", "\"misc\"", "", "m");
    let pipelines = [&clicks, &orders, &other];
    crate::pipeline::check_routes(&[clicks.clone(), orders.clone(), other.clone()]).unwrap();
    let records = vec![
        record(10, r#"{"type": "click", "id": 1}"#, &[]),
        record(11, r#"{"type": "order", "id": 2}"#, &[]),
        record(12, r#"{"type": 7}"#, &[]),
        record(13, r#"{"type": "refund"}"#, &[]),
        record(14, r#"{"id": 5}"#, &[]),
        record(15, "not json", &[]),
        record(16, r#"{"type": "view"}"#, &[]),
    ];
    let out = split(&pipelines, records, "events");
    assert_eq!(
        routed(&out),
        vec![
            (0, 10, None),
            (1, 11, None),
            (1, 12, None),
            (0, 13, Some("route")),
            (0, 14, Some("route")),
            (0, 15, Some("route")),
            (0, 16, None)
        ]
    );
    let reason = |offset: i64| out[&0].iter().find(|r| r.offset == offset).unwrap().problem.clone().unwrap().reason;
    assert_eq!(reason(13), "$.type is `refund`: no route takes it (routes: click, view → n.c; order, 7 → n.o)");
    assert!(reason(14).contains("$.type is missing"), "{}", reason(14));
    assert!(reason(15).contains("value is not JSON"), "{}", reason(15));

    // A pattern: orders.eu is read by `orders` alone (its route then still filters), misc by `other` whole.
    let out = split(&pipelines, vec![record(1, r#"{"type": "order"}"#, &[]), record(2, "{}", &[])], "orders.eu");
    assert_eq!(routed(&out), vec![(1, 1, None), (1, 2, Some("route"))]);
    let out = split(&pipelines, vec![record(1, "anything", &[])], "misc");
    assert_eq!(routed(&out), vec![(2, 1, None)]);
    // A topic nobody reads goes to the first pipeline (grouping marked it).
    let out = split(&pipelines, vec![record(1, "{}", &[])], "nobody");
    assert_eq!(routed(&out), vec![(0, 1, None)]);
}

#[test]
fn headers_route_any_format() {
    let source = |v: &str| {
        format!(
            "format = \"avro\"\nregistry = {{ url = \"http://r:1\" }}\nroute = {{ header = \"kind\", values = [\"{v}\"] }}"
        )
    };
    let a = pipeline("a", "\"t\"", &source("a"), "a");
    let b = pipeline("b", "\"t\"", &source("b"), "b");
    crate::pipeline::check_routes(&[a.clone(), b.clone()]).unwrap();
    let records = vec![record(1, "x", &[("kind", "b")]), record(2, "x", &[("kind", "a")]), record(3, "x", &[])];
    let out = split(&[&a, &b], records, "t");
    assert_eq!(routed(&out), vec![(1, 1, None), (0, 2, None), (0, 3, Some("route"))]);
}

#[test]
fn deployments_that_would_read_a_record_twice_or_write_a_table_twice_are_refused() {
    let err = |ps: &[Pipeline]| crate::pipeline::check_routes(ps).unwrap_err().to_string();
    let whole = pipeline("a", "\"events\"", "", "a");
    let also = pipeline("b", "\"x\", \"events\"", "", "b");
    let e = err(&[whole.clone(), also]);
    assert!(
        e.contains("b.toml") && e.contains("line 3, column 16: `source.topics`: `events` is also read by pipeline `a`"),
        "{e}"
    );
    let pattern = pipeline("b", "\"ev*\"", "", "b");
    assert!(err(&[whole.clone(), pattern]).contains("`ev*` is also read by pipeline `a`"));
    let same_name = pipeline("a", "\"other\"", "", "b");
    assert!(err(&[whole.clone(), same_name]).contains("`name`: `a` is also the name of a.toml"));
    let same_table = pipeline("b", "\"other\"", "", "a");
    assert!(err(&[whole, same_table]).contains("table n.a is also written by pipeline `a`"));
    let r = |name: &str, on: &str, values: &str| {
        pipeline(name, "\"events\"", &format!("route = {{ {on}, values = [{values}] }}"), name)
    };
    let e = err(&[r("a", "field = \"$.type\"", "\"x\", \"y\""), r("b", "field = \"$.type\"", "\"y\"")]);
    assert!(e.contains("both take $.type = `y`"), "{e}");
    let e = err(&[r("a", "field = \"$.type\"", "\"x\""), r("b", "header = \"type\"", "\"y\"")]);
    assert!(e.contains("must read the same key ($.type vs header `type`)"), "{e}");
}

#[test]
fn route_mistakes_name_line_and_field() {
    let bad = |source: &str| {
        let text = format!(
            "name = \"p\"\n[source]\ntopics = [\"t\"]\n{source}\n[table]\nnamespace = \"n\"\nname = \"t\"\n\
             columns = [{{ name = \"id\", type = \"long\" }}]\n"
        );
        Pipeline::parse(&text, "p.toml").unwrap_err().to_string()
    };
    let e = bad("route = { field = \"type\", values = [\"x\"] }");
    assert!(e.contains("line 4, column 19: `source.route.field`: `type` is not a path like `$.type`"), "{e}");
    let e = bad("route = { field = \"$.t\", header = \"h\", values = [\"x\"] }");
    assert!(e.contains("`source.route`: set exactly one of `field` and `header`"), "{e}");
    let e = bad("route = { field = \"$.t\", values = [] }");
    assert!(e.contains("`source.route.values`: name at least one value"), "{e}");
    let e = bad("route = { field = \"$.t\", values = [\"x\", \"x\"] }");
    assert!(e.contains("`x` is listed twice"), "{e}");
    let e =
        bad("format = \"avro\"\nregistry = { url = \"http://r:1\" }\nroute = { field = \"$.t\", values = [\"x\"] }");
    assert!(
        e.contains("a field route reads JSON values; format = \"avro\" values are routed by topic or by `header"),
        "{e}"
    );
    let e = bad("route = { field = \"$.t\", values = [1.5] }");
    assert!(e.contains("values are strings, integers or booleans"), "{e}");
    let topics =
        "name = \"p\"\n[source]\ntopics = [\"bad topic\"]\n[table]\nnamespace = \"n\"\nname = \"t\"\ncolumns = []\n";
    let e = Pipeline::parse(topics, "p.toml").unwrap_err().to_string();
    assert!(e.contains("`bad topic` is not a Kafka topic name"), "{e}");
}
