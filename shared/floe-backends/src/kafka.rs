//! The backfill's Kafka source: an rskafka client of its own (the live stream's records come from the event
//! source mapping; a backfill reads retained history directly), over TLS with MSK IAM (SASL/OAUTHBEARER with a
//! SigV4-signed token) or SASL/SCRAM-SHA-512, or plaintext for a local broker. It resolves a job's `from`/`to`
//! positions to offsets per partition and reads a split's offsets a fetch at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use floe_core::backfill::{Chunk, PartitionSpan, SplitReader};
use floe_core::{SourceRecord, topic_matches};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, OauthBearerCredentials, SaslConfig};

use crate::error::{Error, Result};

/// Bytes per fetch: large enough for Kafka's largest common `message.max.bytes`, small enough for a chunk to be
/// one staging step of a few files.
const FETCH_BYTES: i32 = 16 * 1024 * 1024;
/// Empty fetches below the high watermark (transaction markers, compacted-away offsets) before giving up.
const EMPTY_FETCHES: u32 = 20;

/// How the client authenticates.
#[derive(Clone)]
pub enum KafkaAuth {
    /// Plaintext (a local broker, or a cluster's plaintext listener).
    Plaintext,
    /// TLS, no SASL.
    Tls,
    /// MSK IAM: SASL/OAUTHBEARER over TLS, signed with the environment's AWS credentials.
    Iam,
    /// SASL/SCRAM-SHA-512 over TLS (MSK's SCRAM listener).
    Scram { username: String, password: String },
}

impl std::fmt::Debug for KafkaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KafkaAuth::Plaintext => "plaintext",
            KafkaAuth::Tls => "tls",
            KafkaAuth::Iam => "iam",
            KafkaAuth::Scram { .. } => "scram",
        })
    }
}

impl KafkaAuth {
    /// `plaintext`, `tls`, `iam` or `scram`; SCRAM's credentials come from `FLOE_KAFKA_SCRAM_SECRET` (a Secrets
    /// Manager secret as MSK uses, JSON `{"username", "password"}`) or `FLOE_KAFKA_USERNAME`/`FLOE_KAFKA_PASSWORD`.
    pub async fn from_name(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<KafkaAuth> {
        let settings = |message: String| Error::Settings { var: "FLOE_KAFKA_AUTH".into(), message };
        match name {
            "plaintext" | "none" => Ok(KafkaAuth::Plaintext),
            "tls" => Ok(KafkaAuth::Tls),
            "iam" => Ok(KafkaAuth::Iam),
            "scram" | "scram-sha-512" => {
                if let Some(secret) = lookup("FLOE_KAFKA_SCRAM_SECRET") {
                    let text = floe_aws::secret_string(&secret).await.map_err(settings)?;
                    let json: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| settings(format!("secret {secret} is not JSON: {e}")))?;
                    let field = |k: &str| json[k].as_str().map(str::to_string);
                    let (Some(username), Some(password)) = (field("username"), field("password")) else {
                        return Err(settings(format!("secret {secret} lacks `username` or `password`")));
                    };
                    return Ok(KafkaAuth::Scram { username, password });
                }
                match (lookup("FLOE_KAFKA_USERNAME"), lookup("FLOE_KAFKA_PASSWORD")) {
                    (Some(username), Some(password)) => Ok(KafkaAuth::Scram { username, password }),
                    _ => Err(settings(
                        "scram needs FLOE_KAFKA_SCRAM_SECRET, or FLOE_KAFKA_USERNAME and FLOE_KAFKA_PASSWORD".into(),
                    )),
                }
            }
            other => Err(settings(format!("`{other}` is not plaintext, tls, iam or scram"))),
        }
    }
}

/// A position of a job's range: `from` takes earliest, an offset or a time; `to` also latest or live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Earliest,
    /// The high watermark when the job is planned.
    Latest,
    /// Where the live stream starts (resolved by the planner against the live fences).
    Live,
    Offset(i64),
    /// Epoch milliseconds: the first offset whose record time is at or after it.
    Time(i64),
}

impl std::str::FromStr for Position {
    type Err = String;

    /// `earliest`, `latest`, `live`, an offset, an RFC 3339 time, or a time relative to now (`-1d`, `-6h`).
    fn from_str(text: &str) -> std::result::Result<Position, String> {
        match text {
            "earliest" => return Ok(Position::Earliest),
            "latest" => return Ok(Position::Latest),
            "live" => return Ok(Position::Live),
            _ => {}
        }
        if let Ok(offset) = text.parse::<i64>()
            && offset >= 0
        {
            return Ok(Position::Offset(offset));
        }
        if let Some(ago) = text.strip_prefix('-') {
            let (number, unit) = ago.split_at(ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len()));
            let scale = match unit {
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => 0,
            };
            if let (Ok(n), true) = (number.parse::<i64>(), scale > 0) {
                return Ok(Position::Time(chrono::Utc::now().timestamp_millis() - n * scale));
            }
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Position::Time(t.timestamp_millis()))
            .map_err(|_| format!("`{text}` is not earliest, latest, live, an offset, an RFC 3339 time or -<n>m|h|d"))
    }
}

/// A connected Kafka cluster.
#[derive(Clone)]
pub struct KafkaSource {
    client: Arc<Client>,
}

fn kafka_error(what: String, e: rskafka::client::error::Error) -> floe_core::Error {
    // Connection, timeouts and broker-side retriable errors pass; authentication and unknown topics do not.
    let text = e.to_string();
    let permanent = text.contains("SASL") || text.contains("authentication") || text.contains("UnknownTopic");
    floe_core::Error::Source { message: format!("{what}: {text}"), retryable: !permanent }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert); // a certificate the system has but rustls cannot parse is skipped
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Settings { var: "FLOE_KAFKA_AUTH".into(), message: format!("TLS: {e}") })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl KafkaSource {
    /// Connect to `brokers` (`host:port[,host:port…]`).
    pub async fn connect(brokers: &str, auth: &KafkaAuth) -> Result<KafkaSource> {
        let list: Vec<String> = brokers.split(',').map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect();
        let mut builder = ClientBuilder::new(list).client_id("floe-backfill");
        if !matches!(auth, KafkaAuth::Plaintext) {
            builder = builder.tls_config(tls_config()?);
        }
        match auth {
            KafkaAuth::Iam => {
                let signer = floe_aws::msk_iam::MskIamSigner::from_env()
                    .await
                    .map_err(|message| Error::Settings { var: "AWS_REGION".into(), message })?;
                let callback: rskafka::client::OauthCallback = Arc::new(move || {
                    let signer = signer.clone();
                    Box::pin(async move { signer.token().await.map_err(|e| e.into()) })
                });
                let credentials = OauthBearerCredentials { callback, authz_id: None, bearer_kvs: vec![] };
                builder = builder.sasl_config(SaslConfig::Oauthbearer(credentials));
            }
            KafkaAuth::Scram { username, password } => {
                let credentials = Credentials::new(username.clone(), password.clone());
                builder = builder.sasl_config(SaslConfig::ScramSha512(credentials));
            }
            KafkaAuth::Plaintext | KafkaAuth::Tls => {}
        }
        let client = builder.build().await.map_err(|e| kafka_error(format!("connecting to {brokers}"), e))?;
        Ok(KafkaSource { client: Arc::new(client) })
    }

    async fn partition(&self, topic: &str, partition: i32) -> floe_core::Result<PartitionClient> {
        self.client
            .partition_client(topic.to_string(), partition, UnknownTopicHandling::Error)
            .await
            .map_err(|e| kafka_error(format!("partition {topic}:{partition}"), e))
    }

    async fn offset(&self, pc: &PartitionClient, at: OffsetAt) -> floe_core::Result<i64> {
        pc.get_offset(at).await.map_err(|e| kafka_error(format!("offsets of {}:{}", pc.topic(), pc.partition()), e))
    }

    /// Every partition of the topics matching `topics` (names or `*` patterns), with `from` and `to` resolved
    /// to offsets (`to = live` is left to the planner), in (topic, partition) order.
    pub async fn spans(
        &self,
        topics: &[String],
        from: Position,
        to: Position,
    ) -> floe_core::Result<Vec<PartitionSpan>> {
        let listed = self.client.list_topics().await.map_err(|e| kafka_error("listing topics".into(), e))?;
        let mut spans = Vec::new();
        for topic in listed.into_iter().filter(|t| topics.iter().any(|p| topic_matches(p, &t.name))) {
            for partition in topic.partitions {
                let pc = self.partition(&topic.name, partition).await?;
                let low = self.offset(&pc, OffsetAt::Earliest).await?;
                let high = self.offset(&pc, OffsetAt::Latest).await?;
                let pc = &pc;
                let resolve = |p: Position| async move {
                    Ok::<_, floe_core::Error>(match p {
                        Position::Earliest => Some(low),
                        Position::Latest => Some(high),
                        Position::Live => None,
                        Position::Offset(o) => Some(o.clamp(low, high)),
                        Position::Time(ms) => {
                            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                            // No record at or after the time: the partition's end.
                            let o = self.offset(pc, OffsetAt::Timestamp(at)).await?;
                            Some(if o < 0 { high } else { o.clamp(low, high) })
                        }
                    })
                };
                let from = resolve(from).await?.unwrap_or(low);
                let to = resolve(to).await?;
                spans.push(PartitionSpan { topic: topic.name.clone(), partition, from, to, high });
            }
        }
        spans.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(spans)
    }

    /// A reader of one partition.
    pub async fn reader(&self, topic: &str, partition: i32) -> floe_core::Result<KafkaReader> {
        Ok(KafkaReader { pc: self.partition(topic, partition).await? })
    }
}

/// Reads one partition's offsets for a split.
pub struct KafkaReader {
    pc: PartitionClient,
}

#[async_trait]
impl SplitReader for KafkaReader {
    async fn read(&mut self, from: i64, to: i64) -> floe_core::Result<Chunk> {
        let (topic, partition) = (self.pc.topic().to_string(), self.pc.partition());
        let mut empty = 0;
        loop {
            let (records, high) = self
                .pc
                .fetch_records(from, 1..FETCH_BYTES, 100)
                .await
                .map_err(|e| kafka_error(format!("fetching {topic}:{partition} at {from}"), e))?;
            let records: Vec<SourceRecord> = records
                .into_iter()
                .filter(|r| r.offset >= from && r.offset < to)
                .map(|r| SourceRecord {
                    offset: r.offset,
                    timestamp_ms: Some(r.record.timestamp.timestamp_millis()),
                    key: r.record.key,
                    value: r.record.value,
                    headers: r.record.headers.into_iter().collect(),
                    problem: None,
                })
                .collect();
            let limit = to.min(high);
            if let Some(last) = records.last() {
                let next = last.offset + 1;
                return Ok(Chunk { records, next, end: next >= limit });
            }
            if from >= limit {
                return Ok(Chunk { records, next: from, end: true });
            }
            empty += 1;
            if empty >= EMPTY_FETCHES {
                return Err(floe_core::Error::Source {
                    message: format!(
                        "{topic}:{partition}: no record readable at offset {from} below the high watermark {high} \
                         after {EMPTY_FETCHES} fetches"
                    ),
                    retryable: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_as_documented() {
        assert_eq!("earliest".parse(), Ok(Position::Earliest));
        assert_eq!("live".parse(), Ok(Position::Live));
        assert_eq!("1234".parse(), Ok(Position::Offset(1234)));
        assert_eq!("2026-12-01T00:00:00Z".parse(), Ok(Position::Time(1_796_083_200_000)));
        let Ok(Position::Time(ago)) = "-2d".parse::<Position>() else { panic!("a time") };
        let expected = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
        assert!((ago - expected).abs() < 60_000);
        for bad in ["-2w", "yesterday", "-1", "1.5"] {
            let err = bad.parse::<Position>().unwrap_err();
            assert!(err.contains(bad) && err.contains("earliest"), "{err}");
        }
    }

    #[tokio::test]
    async fn scram_credentials_come_from_the_settings_and_their_absence_is_named() {
        let env = |k: &str| match k {
            "FLOE_KAFKA_USERNAME" => Some("floe".to_string()),
            "FLOE_KAFKA_PASSWORD" => Some("secret".to_string()),
            _ => None,
        };
        let auth = KafkaAuth::from_name("scram", env).await.unwrap();
        assert!(matches!(&auth, KafkaAuth::Scram { username, password } if username == "floe" && password == "secret"));
        assert_eq!(format!("{auth:?}"), "scram", "the password is never printed");
        let missing = KafkaAuth::from_name("scram", |_| None).await.unwrap_err().to_string();
        assert!(missing.contains("FLOE_KAFKA_SCRAM_SECRET"), "{missing}");
        let unknown = KafkaAuth::from_name("kerberos", |_| None).await.unwrap_err().to_string();
        assert!(unknown.contains("`kerberos` is not plaintext, tls, iam or scram"), "{unknown}");
        assert!(matches!(KafkaAuth::from_name("iam", |_| None).await, Ok(KafkaAuth::Iam)));
    }

    #[test]
    fn the_tls_configuration_builds_with_the_system_roots() {
        tls_config().unwrap();
    }
}
