//! One deployment, several pipelines: each is a route into its own table (see docs/design/routing.md). The
//! router groups an event per topic-partition once, hands each pipeline the records of its topics (split by
//! `source.route`'s field or header when several pipelines read a topic), and each pipeline's [`Ingestor`]
//! stages them under its own fences, so every route is exactly once on its own. A record no route takes is a
//! dead letter of the first pipeline reading its topic (kind `route`, the value found and the routes there are);
//! a record of a topic no pipeline reads is a dead letter of the first pipeline (kind `topic`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{Instrument, info_span};

use crate::error::Result;
use crate::ingest::parallel::{self, Job};
use crate::ingest::{IngestReport, Ingestor};
use crate::input::event::{MskEvent, PartitionRecords, Problem, SourceRecord, group_body_on, group_records_on};
use crate::input::framing::unframe;
use crate::pipeline::{Pipeline, RouteOn, ValueFormat, check_routes};
use crate::state::backfill_key;

/// The ingestors of one deployment, in the order of its pipeline files.
pub struct Router {
    routes: Vec<Ingestor>,
    /// Every pipeline's topics and patterns.
    topics: Vec<String>,
    /// Topic-partitions of an event staged at once.
    concurrency: usize,
}

impl Router {
    /// Route to `routes` (checked together: see [`check_routes`]).
    pub fn new(routes: Vec<Ingestor>) -> Result<Router> {
        let pipelines: Vec<Pipeline> = routes.iter().map(|r| r.pipeline().clone()).collect();
        check_routes(&pipelines)?;
        if routes.is_empty() {
            return Err(crate::Error::Invariant("a router needs at least one pipeline".into()));
        }
        let mut topics: Vec<String> = Vec::new();
        for p in &pipelines {
            topics.extend(p.topics.iter().filter(|t| !topics.contains(t)).cloned().collect::<Vec<_>>());
        }
        Ok(Router { routes, topics, concurrency: parallel::default_concurrency() })
    }

    pub fn routes(&self) -> &[Ingestor] {
        &self.routes
    }

    /// Handle one MSK event at processing time `now_ms`: each pipeline's report, in pipeline order. An error
    /// means the whole event should be redelivered (a no-op for every route and partition already staged).
    pub async fn handle_at(&self, event: &MskEvent, now_ms: i64) -> Result<Vec<(Arc<str>, IngestReport)>> {
        self.stage(group_records_on(event, &self.topics, self.concurrency)?, now_ms).await
    }

    /// [`Router::handle_at`] of an event as the Lambda runtime receives it, the JSON invocation body: what the
    /// function runs. The body is read in place (see `input/event/body.rs`), not into an [`MskEvent`].
    pub async fn handle_body_at(&self, body: &[u8], now_ms: i64) -> Result<Vec<(Arc<str>, IngestReport)>> {
        self.stage(group_body_on(body, &self.topics, self.concurrency)?, now_ms).await
    }

    /// Route the event's topic-partitions and stage each route's share (see [`Router::handle_at`]).
    async fn stage(&self, groups: Vec<PartitionRecords>, now_ms: i64) -> Result<Vec<(Arc<str>, IngestReport)>> {
        let pipelines = self.pipelines();
        let mut jobs = Vec::new();
        let mut routes = Vec::new();
        for group in groups {
            for (route, records) in split(&pipelines, group.records, &group.source.topic) {
                let group = PartitionRecords { source: group.source.clone(), records };
                jobs.push(Job::new(&self.routes[route], group));
                routes.push(route);
            }
        }
        let mut reports: Vec<IngestReport> = vec![IngestReport::default(); self.routes.len()];
        for (route, report) in routes.into_iter().zip(parallel::run(jobs, now_ms, self.concurrency).await) {
            reports[route].add(&report?);
        }
        Ok(self.routes.iter().map(|r| Arc::from(r.pipeline().name.as_str())).zip(reports).collect())
    }

    /// Stage at most `limit` topic-partitions of an event at once (default: the process's CPUs; 1 stages them
    /// one after another).
    pub fn with_concurrency(mut self, limit: usize) -> Router {
        self.concurrency = limit.max(1);
        self
    }

    /// Stage one partition's records read by a backfill ([`crate::backfill`]): routed as [`Router::handle_at`]
    /// does, each route's share limited to offsets below its `ends` entry (where its live stream starts) and
    /// staged under the route's backfill fences ([`backfill_key`]). Records of a source no pipeline reads (an
    /// archive object) are the first pipeline's.
    pub async fn backfill_partition(
        &self,
        group: PartitionRecords,
        now_ms: i64,
        ends: &BTreeMap<String, i64>,
    ) -> Result<Vec<(Arc<str>, IngestReport)>> {
        let pipelines = self.pipelines();
        let mut reports = Vec::new();
        for (route, mut records) in split(&pipelines, group.records, &group.source.topic) {
            let pipeline = &self.routes[route].pipeline().name;
            let end = ends.get(pipeline).copied().unwrap_or(i64::MAX);
            records.retain(|r| r.offset < end);
            if records.is_empty() {
                continue;
            }
            let span = info_span!(
                "backfill",
                pipeline = %pipeline,
                topic = %group.source.topic,
                partition = group.source.partition
            );
            let part = PartitionRecords { source: group.source.clone(), records };
            let key = backfill_key(pipeline);
            let report = self.routes[route].ingest_under(part, now_ms, &key).instrument(span).await?;
            reports.push((Arc::from(pipeline.as_str()), report));
        }
        Ok(reports)
    }

    fn pipelines(&self) -> Vec<&Pipeline> {
        self.routes.iter().map(Ingestor::pipeline).collect()
    }
}

/// The records of one topic-partition per route (route index → records in offset order).
fn split(pipelines: &[&Pipeline], records: Vec<SourceRecord>, topic: &str) -> BTreeMap<usize, Vec<SourceRecord>> {
    let readers: Vec<usize> = (0..pipelines.len()).filter(|&i| pipelines[i].reads_topic(topic)).collect();
    let mut out: BTreeMap<usize, Vec<SourceRecord>> = BTreeMap::new();
    let Some(&first) = readers.first() else {
        // A topic no pipeline reads: its records carry a `topic` problem from grouping.
        out.insert(0, records);
        return out;
    };
    let only = readers.len() == 1 && pipelines[first].route.is_none();
    for mut record in records {
        let route = if only || record.problem.is_some() {
            first
        } else {
            match route_of(pipelines, &record, &readers) {
                Ok(route) => route,
                Err(reason) => {
                    record.problem = Some(Problem { kind: "route", reason });
                    first
                }
            }
        };
        out.entry(route).or_default().push(record);
    }
    out
}

/// The route of `record` among `readers` (pipelines splitting its topic on one key), or why there is none.
fn route_of(pipelines: &[&Pipeline], record: &SourceRecord, readers: &[usize]) -> std::result::Result<usize, String> {
    let first = pipelines[readers[0]];
    let on = &first.route.as_ref().expect("validated: a split topic's pipelines all route").on;
    let found = key_of(record, on, first)?;
    let taken = readers.iter().find(|&&i| pipelines[i].route.as_ref().is_some_and(|r| r.values.contains(&found)));
    taken.copied().ok_or_else(|| {
        let routes: Vec<String> = readers
            .iter()
            .filter_map(|&i| {
                let p = pipelines[i];
                p.route.as_ref().map(|r| format!("{} → {}", r.values.join(", "), p.table.name))
            })
            .collect();
        format!("{on} is `{found}`: no route takes it (routes: {})", routes.join("; "))
    })
}

/// The routing key of `record`: its header's value, or its JSON value's field as text.
fn key_of(record: &SourceRecord, on: &RouteOn, pipeline: &Pipeline) -> std::result::Result<String, String> {
    match on {
        RouteOn::Header(name) => {
            let value = record.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let value = value.ok_or_else(|| format!("{on} is missing: no route takes the record"))?;
            String::from_utf8(value.clone()).map_err(|_| format!("{on} is not UTF-8 text: no route takes it"))
        }
        RouteOn::Field(path) => {
            let value = record.value.as_deref().ok_or_else(|| "record has no value (tombstone)".to_string())?;
            let body = match (pipeline.format.value, pipeline.format.framing) {
                (ValueFormat::JsonSchema, Some(framing)) => unframe(framing, value)?.body.into_owned(),
                _ => value.to_vec(),
            };
            let json: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("value is not JSON ({e}): {on} cannot be read, no route takes it"))?;
            let field = path.iter().try_fold(&json, |v, key| v.get(key));
            match field {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
                None | Some(serde_json::Value::Null) => Err(format!("{on} is missing: no route takes the record")),
                Some(_) => Err(format!("{on} is an object or array, not a value a route can name")),
            }
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
