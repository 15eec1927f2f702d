//! A backfill job as the CLI, the backfill function and the state machine pass it (the same JSON everywhere),
//! and the one place that plans it and runs its splits against the opened backends and sources.

use std::sync::Arc;
use std::time::Instant;

use floe_core::backfill::{
    Cap, ObjectReader, Plan, Split, SplitReport, SplitSource, list_objects, plan_kafka, plan_objects, run_id, run_split,
};
use floe_core::{Backends, Pipeline, Router};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kafka::{KafkaAuth, KafkaSource, Position};

/// A backfill job: the payload of `floe backfill --aws`, of `aws stepfunctions start-execution` and of a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Re-read a Kafka cluster's retained history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaJob>,
    /// Load an archive: objects under an `s3://bucket/prefix/` (or a local directory for the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// The run's cost cap: Kafka offsets (records) and archive bytes it may load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// On AWS: splits loaded at the same time (default the deployment's `BackfillMaxConcurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// The Kafka side of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaJob {
    /// Bootstrap brokers; default `FLOE_KAFKA_BROKERS` (the function's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// `plaintext`, `tls`, `iam` or `scram`; default `FLOE_KAFKA_AUTH`, else `iam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Topics or patterns; default every topic the pipelines read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// `earliest` (default), an offset, an RFC 3339 time or `-<n>m|h|d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `live` (default: where the live stream starts), `latest`, an offset or a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

fn invalid(message: String) -> Error {
    Error::Settings { var: "backfill job".into(), message }
}

/// A job opened against a deployment: its pipelines' router, the backends and the Kafka connection.
pub struct Backfill {
    pub spec: JobSpec,
    pub run: String,
    router: Arc<Router>,
    backends: Backends,
    kafka: Option<KafkaSource>,
}

impl Backfill {
    /// Check `spec` and connect to its source. `lookup` reads settings (the environment).
    pub async fn open(
        spec: JobSpec,
        router: Arc<Router>,
        backends: Backends,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Backfill> {
        let names: Vec<&str> = router.routes().iter().map(|r| r.pipeline().name.as_str()).collect();
        let pipelines: Vec<&Pipeline> = router.routes().iter().map(|r| r.pipeline()).collect();
        floe_core::backfill::check_backfill(&pipelines)?;
        // The run is named by the job and the pipelines it loads.
        let named = serde_json::json!({"job": spec, "pipelines": names});
        let run = run_id(&named);
        let kafka = match (&spec.kafka, &spec.archive) {
            (Some(k), None) => {
                let brokers =
                    k.brokers.clone().or_else(|| lookup("FLOE_KAFKA_BROKERS")).ok_or_else(|| {
                        invalid("name the Kafka brokers (`kafka.brokers`, or FLOE_KAFKA_BROKERS)".into())
                    })?;
                let auth = k.auth.clone().or_else(|| lookup("FLOE_KAFKA_AUTH")).unwrap_or_else(|| "iam".into());
                let auth = KafkaAuth::from_name(&auth, &lookup).await?;
                Some(KafkaSource::connect(&brokers, &auth).await?)
            }
            (None, Some(_)) => {
                if router.routes().len() != 1 {
                    return Err(invalid("an archive is loaded into one pipeline: pass a single pipeline file".into()));
                }
                None
            }
            _ => return Err(invalid("a job names exactly one source: `kafka` or `archive`".into())),
        };
        Ok(Backfill { spec, run, router, backends, kafka })
    }

    /// The first pipeline's name (metrics are per pipeline).
    pub fn pipeline(&self) -> &str {
        self.router.routes().first().map(|r| r.pipeline().name.as_str()).unwrap_or_default()
    }

    fn cap(&self) -> Cap {
        Cap { max_records: self.spec.max_records, max_bytes: self.spec.max_bytes }
    }

    /// Plan the run: its splits with work left. A dry run changes nothing (it does not create live fences).
    pub async fn plan(&self, dry_run: bool) -> Result<Plan> {
        let pipelines: Vec<&Pipeline> = self.router.routes().iter().map(|r| r.pipeline()).collect();
        let state = self.backends.state.as_ref();
        if let (Some(source), Some(job)) = (&self.kafka, &self.spec.kafka) {
            let position = |text: &Option<String>, default: Position| match text {
                None => Ok(default),
                Some(t) => t.parse::<Position>().map_err(invalid),
            };
            let from = position(&job.from, Position::Earliest)?;
            let to = position(&job.to, Position::Live)?;
            if from == Position::Live {
                return Err(invalid("`from` cannot be live: the live stream starts where a backfill ends".into()));
            }
            let mut topics = job.topics.clone();
            if topics.is_empty() {
                for p in &pipelines {
                    topics.extend(p.topics.iter().filter(|t| !topics.contains(t)).cloned().collect::<Vec<_>>());
                }
            }
            let spans = source.spans(&topics, from, to).await?;
            return Ok(plan_kafka(state, &pipelines, &self.run, &spans, self.cap(), dry_run).await?);
        }
        let location = self.archive_location()?;
        let (objects, skipped) = list_objects(self.backends.lister.as_ref(), &location).await?;
        let mut plan = plan_objects(state, pipelines[0], &self.run, &objects, self.cap()).await?;
        if !skipped.is_empty() {
            plan.notes.push(format!(
                "{} objects skipped: no known format (.jsonl, .ndjson, .json, their .gz, .parquet), e.g. {}",
                skipped.len(),
                skipped[0]
            ));
        }
        Ok(plan)
    }

    /// The archive as a listable location ending in `/`: `s3://…`, or a local directory as `file://<absolute>`.
    fn archive_location(&self) -> Result<String> {
        let archive = self.spec.archive.as_deref().unwrap_or_default();
        let mut location = if archive.contains("://") {
            archive.to_string()
        } else {
            let path = std::path::absolute(archive).map_err(|e| invalid(format!("archive {archive}: {e}")))?;
            format!("file://{}", path.display())
        };
        if !location.ends_with('/') {
            location.push('/');
        }
        Ok(location)
    }

    /// Load `split` until done or `deadline`.
    pub async fn run(
        &self,
        split: &Split,
        deadline: Option<Instant>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<SplitReport> {
        let state = self.backends.state.as_ref();
        let report = match &split.source {
            SplitSource::Kafka(r) => {
                let source = self.kafka.as_ref().ok_or_else(|| invalid("a Kafka split needs a `kafka` job".into()))?;
                let mut reader = source.reader(&r.topic, r.partition).await?;
                run_split(&self.router, state, split, &mut reader, deadline, progress).await?
            }
            SplitSource::Object(o) => {
                let mut reader = ObjectReader::new(self.backends.file_io.clone(), o.clone());
                run_split(&self.router, state, split, &mut reader, deadline, progress).await?
            }
        };
        Ok(report)
    }
}
