//! Several tables in one deployment: each pipeline file is one route (its topics, or the records of its topics
//! whose field or header holds one of its values, into its table). This file parses a file's `source.topics`
//! patterns and `source.route`, and checks a deployment's files together ([`check_routes`]): unique names and
//! tables, and every topic read either by exactly one file, or by files that split it on the same key with
//! disjoint values. See docs/design/routing.md.

use std::ops::Range;

use super::format::ValueFormat;
use super::raw::RawSource;
use super::{Pipeline, Validator, position};
use crate::error::{Error, Result};

/// Which of its topics' records a pipeline takes (`source.route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub on: RouteOn,
    /// The values taken, as text (JSON strings as they are; numbers and booleans as written in JSON).
    pub values: Vec<String>,
}

/// What a route reads from each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOn {
    /// A field of the JSON value (`$.a.b`), for `json` and `json-schema` values.
    Field(Vec<String>),
    /// A Kafka header's value (UTF-8), for every format.
    Header(String),
}

impl std::fmt::Display for RouteOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteOn::Field(path) => write!(f, "$.{}", path.join(".")),
            RouteOn::Header(name) => write!(f, "header `{name}`"),
        }
    }
}

/// Where a pipeline's routing keys are in its file, for errors found across files.
#[derive(Debug, Clone, Default)]
pub(super) struct RouteSpans {
    pub name: Range<usize>,
    pub topics: Vec<Range<usize>>,
}

/// Whether `topic` is one `pattern` names: an exact topic name, or a pattern whose `*` stands for any run of
/// characters (the event source mapping subscribes to explicit topics; patterns select among them).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = topic.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether two topic patterns may name a common topic (exact when neither has `*`; otherwise when their
/// literal prefixes and suffixes are compatible, which can only over-report).
fn may_overlap(a: &str, b: &str) -> bool {
    match (a.contains('*'), b.contains('*')) {
        (false, false) => a == b,
        (true, false) => topic_matches(a, b),
        (false, true) => topic_matches(b, a),
        (true, true) => {
            let (pa, pb) = (a.split('*').next().unwrap_or(""), b.split('*').next().unwrap_or(""));
            let (sa, sb) = (a.rsplit('*').next().unwrap_or(""), b.rsplit('*').next().unwrap_or(""));
            (pa.starts_with(pb) || pb.starts_with(pa)) && (sa.ends_with(sb) || sb.ends_with(sa))
        }
    }
}

impl Pipeline {
    /// Whether this pipeline reads `topic` (one of `source.topics`, or a pattern matching it).
    pub fn reads_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| topic_matches(p, topic))
    }

    fn at(&self, span: &Range<usize>) -> String {
        position(&self.source.text, span)
    }

    fn route_error(&self, span: &Range<usize>, field: &str, message: impl std::fmt::Display) -> Error {
        Error::Config { file: self.file().to_string(), message: format!("{}: `{field}`: {message}", self.at(span)) }
    }
}

impl Validator<'_> {
    /// `source.topics`: topic names, or patterns with `*`.
    pub(super) fn topics(&self, source: &RawSource) -> Result<(Vec<String>, Vec<Range<usize>>)> {
        let (mut topics, mut spans) = (Vec::new(), Vec::new());
        for t in source.topics.get_ref() {
            let v = t.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 249
                && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'))
                && !v.contains("**");
            if !ok {
                return self.err(
                    t.span(),
                    "source.topics",
                    format!("`{v}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`) or a pattern with `*`"),
                );
            }
            if topics.contains(v) {
                return self.err(t.span(), "source.topics", format!("topic `{v}` is listed twice"));
            }
            topics.push(v.clone());
            spans.push(t.span());
        }
        if topics.is_empty() {
            return self.err(source.topics.span(), "source.topics", "name at least one topic");
        }
        Ok((topics, spans))
    }

    /// `source.route = { field = "$.type" | header = "type", values = [...] }`.
    pub(super) fn route(&self, source: &RawSource, format: ValueFormat) -> Result<Option<Route>> {
        let Some(raw) = &source.route else { return Ok(None) };
        let span = raw.span();
        let r = raw.get_ref();
        let on = match (&r.field, &r.header) {
            (Some(f), None) => {
                let path = f.get_ref();
                let parts: Vec<String> = path.strip_prefix("$.").unwrap_or("").split('.').map(str::to_string).collect();
                if !path.starts_with("$.") || parts.iter().any(String::is_empty) {
                    return self.err(f.span(), "source.route.field", format!("`{path}` is not a path like `$.type`"));
                }
                if !matches!(format, ValueFormat::Json | ValueFormat::JsonSchema) {
                    return self.err(
                        f.span(),
                        "source.route.field",
                        format!(
                            "a field route reads JSON values; format = \"{}\" values are routed by topic or by \
                             `header = \"…\"`",
                            format.name()
                        ),
                    );
                }
                RouteOn::Field(parts)
            }
            (None, Some(h)) if !h.get_ref().is_empty() => RouteOn::Header(h.get_ref().clone()),
            (None, Some(h)) => return self.err(h.span(), "source.route.header", "name the header"),
            _ => return self.err(span, "source.route", "set exactly one of `field` and `header`"),
        };
        let mut values = Vec::new();
        for v in r.values.get_ref() {
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return self.err(v.span(), "source.route.values", "values are strings, integers or booleans");
                }
            };
            if values.contains(&text) {
                return self.err(v.span(), "source.route.values", format!("`{text}` is listed twice"));
            }
            values.push(text);
        }
        if values.is_empty() {
            return self.err(r.values.span(), "source.route.values", "name at least one value");
        }
        Ok(Some(Route { on, values }))
    }
}

/// Check the pipelines of one deployment together: names and tables unique, and each topic either read by one
/// pipeline, or split by several on the same key with disjoint values. Errors name the later file's line.
pub fn check_routes(pipelines: &[Pipeline]) -> Result<()> {
    for (j, b) in pipelines.iter().enumerate() {
        for a in &pipelines[..j] {
            if a.name == b.name {
                return Err(b.route_error(
                    &b.spans.name,
                    "name",
                    format!(
                        "`{}` is also the name of {}: each pipeline needs its own (it scopes its fences)",
                        b.name,
                        a.file()
                    ),
                ));
            }
            for ta in tables(a) {
                if tables(b).contains(&ta) {
                    return Err(b.route_error(
                        &b.spans.name,
                        "table",
                        format!(
                            "table {ta} is also written by pipeline `{}` ({}): one writer per table",
                            a.name,
                            a.file()
                        ),
                    ));
                }
            }
            for (tb, span) in b.topics.iter().zip(&b.spans.topics) {
                let Some(ta) = a.topics.iter().find(|ta| may_overlap(ta, tb)) else { continue };
                let clash = |why: String| {
                    Err(b.route_error(
                        span,
                        "source.topics",
                        format!("`{tb}` is also read by pipeline `{}` ({}, `{ta}`): {why}", a.name, a.file()),
                    ))
                };
                match (&a.route, &b.route) {
                    (Some(ra), Some(rb))
                        if ra.on == rb.on
                            && (a.format.value, a.format.framing) != (b.format.value, b.format.framing) =>
                    {
                        return clash(format!(
                            "a topic split by {} is read with one format (`{}` vs `{}`)",
                            rb.on,
                            a.format.value.name(),
                            b.format.value.name()
                        ));
                    }
                    (Some(ra), Some(rb)) if ra.on == rb.on => {
                        if let Some(v) = rb.values.iter().find(|v| ra.values.contains(v)) {
                            return clash(format!("both take {} = `{v}`", rb.on));
                        }
                    }
                    (Some(ra), Some(rb)) => {
                        return clash(format!("routes of one topic must read the same key ({} vs {})", ra.on, rb.on));
                    }
                    _ => {
                        return clash(
                            "a topic read by several pipelines is split by `source.route` in each, on one key".into(),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn tables(p: &Pipeline) -> Vec<String> {
    let mut out = vec![p.table.name.to_string(), p.dead_letter.to_string()];
    out.extend(p.outputs.iter().map(|o| o.table.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_topics() {
        assert!(topic_matches("orders", "orders"));
        assert!(!topic_matches("orders", "orders2"));
        assert!(topic_matches("orders.*", "orders.eu"));
        assert!(!topic_matches("orders.*", "orders"));
        assert!(topic_matches("*.orders", "eu.orders"));
        assert!(topic_matches("shop.*.v*", "shop.orders.v2"));
        assert!(!topic_matches("shop.*.v*", "shop.orders.x2"));
        assert!(topic_matches("*", "anything"));
        assert!(topic_matches("a*a", "aa") && !topic_matches("a*a", "a"));
        assert!(may_overlap("orders.*", "orders.eu") && !may_overlap("orders.*", "clicks"));
        assert!(may_overlap("orders.*", "orders.e*") && !may_overlap("orders.*", "clicks.*"));
    }
}
