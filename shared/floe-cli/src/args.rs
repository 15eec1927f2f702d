//! The command line: every subcommand, its options and the help text a data engineer reads first.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes:
  0   success
  1   failed; running the same command again fails the same way
  2   bad command line
  3   the pipeline file, a setting or a backfill job is invalid (the message names the file, line, column and
      field, or what to change)
  75  failed for a reason a retry can fix (throttling, a lost commit race): run it again

Backends: `--backend embedded` (the default) keeps the state store and the Iceberg catalog in SQLite under
`--home` and the tables in <home>/warehouse; PyIceberg's SqlCatalog (catalog name `floe`) reads them.
`--backend aws` uses DynamoDB, Glue and S3, configured from the environment exactly as the Lambda functions
are: FLOE_WAREHOUSE=s3://bucket/prefix, FLOE_STATE_TABLE, AWS_REGION, and optionally AWS_ENDPOINT_URL,
FLOE_S3_PATH_STYLE=true and FLOE_GLUE_CATALOG_ID.

Getting started:
  floe validate examples/pipeline.toml       check a pipeline file and see the tables it creates
  floe demo                                  run the whole flow on 100,000 sample events
  floe gen --out events/ && floe ingest events/*.json && floe compact";

/// floe: Kafka → Apache Iceberg ingestion. Runs the same ingest and compactor handlers as the Lambda functions,
/// on this machine or against AWS.
#[derive(Parser)]
#[command(name = "floe", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a command runs: the backend and the pipeline file.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Pipeline file: source topics, target table, columns, partition spec, outputs. Repeat it (or separate
    /// files with commas) to run several pipelines as one deployment, each a route into its own table, as
    /// FLOE_PIPELINE_FILES does for the functions (`ingest`, `poll`, `compact` and `status` take several).
    #[arg(long, default_value = "examples/pipeline.toml", value_name = "FILE", value_delimiter = ',')]
    pub pipeline: Vec<PathBuf>,
    /// Storage backend: `embedded` (SQLite and a local warehouse under --home) or `aws` (DynamoDB, Glue and S3,
    /// configured from the environment like the Lambda functions).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "aws"])]
    pub backend: String,
    /// Directory of the embedded backend: catalog.db, state.db and warehouse/ (created if missing).
    #[arg(long, default_value = ".floe/local", value_name = "DIR")]
    pub home: PathBuf,
    #[cfg(feature = "failpoints")]
    #[command(flatten)]
    pub faults: crate::faults::FaultArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a pipeline file completely and print every table it creates.
    ///
    /// Runs the same validation as a function's cold start (the SQL of every output is planned) and prints,
    /// for the target table, the dead-letter table and each output: the Iceberg schema with field ids, the
    /// partition spec, and for windowed outputs the window and its late-records table. Exits 3 with the file,
    /// line, column and field of the first mistake.
    ///
    /// With --backend or --home it also compares the file with the tables in that catalog, changing nothing:
    /// for each table, whether it is up to date, the schema changes the next cold start will make (new
    /// columns, wider types, renames, docs, properties), or why the table cannot take the file (exit 3), e.g.
    /// `column `quantity`: the table has `int`, the pipeline file declares `string``.
    Validate {
        /// The pipeline file to check; several are checked one by one, then together as one deployment
        /// (unique names and tables, each topic read once or split on one key).
        #[arg(value_name = "PIPELINE", required = true, num_args = 1..)]
        pipeline: Vec<PathBuf>,
        /// Print the summary as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Compare with the tables of this backend's catalog (`embedded` under --home, or `aws`).
        #[arg(long, value_parser = ["embedded", "aws"])]
        backend: Option<String>,
        /// Directory of the embedded backend to compare with (implies --backend embedded).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
    },
    /// Run the whole flow on sample events in this process and show what each step did.
    ///
    /// Generates sample click/order events (with malformed records and producer retries), ingests them as MSK
    /// events, redelivers one (a no-op), commits with the compactor, reads the tables back and checks that
    /// every valid record is there exactly once and every malformed one is a dead letter.
    Demo {
        #[command(flatten)]
        common: Common,
        /// How many sample records to generate.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    /// Write sample MSK events as JSON files, one event per file (input for `floe ingest`).
    Gen {
        /// Directory to write event-00000.json, event-00001.json, … into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Records in all.
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Records per MSK event.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Make every Nth record malformed (0: none).
        #[arg(long, default_value_t = 1_000)]
        bad_every: usize,
        /// Seed of the generator: the same seed writes the same events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run the ingest handler on MSK event JSON files, as the ingest Lambda would on each invocation.
    ///
    /// Each file is one event as the MSK event source mapping delivers it. Valid records become Parquet data
    /// files staged for the compactor; malformed ones become dead letters with the reason. Ingesting the same
    /// file again stages nothing (offset fences). Prints the summed report as JSON.
    Ingest {
        #[command(flatten)]
        common: Common,
        /// MSK event JSON files, processed in order (none: just load and check the pipeline and backends).
        #[arg(value_name = "EVENT")]
        events: Vec<PathBuf>,
        /// Processing time for window watermarks, in milliseconds since the epoch (default: now).
        #[arg(long, value_name = "MS")]
        now_ms: Option<i64>,
    },
    /// Commit staged files to the Iceberg tables, as the compactor Lambda does on its schedule.
    ///
    /// One run commits every table's staged files in one snapshot per table (recording the source positions
    /// in the snapshot summary, so nothing is ever committed twice), small ones merged first, emits final
    /// windows, then maintains each table (rewrites committed small files, merges manifests, expires old
    /// snapshots). Prints each table's report as JSON. With --every it runs on a fixed schedule until
    /// interrupted.
    Compact {
        #[command(flatten)]
        common: Common,
        /// Run every this many seconds until Ctrl-C, like the compactor's EventBridge schedule.
        #[arg(long, value_name = "SECONDS")]
        every: Option<f64>,
        /// Processing time for idle-partition detection, in milliseconds since the epoch (default: now).
        #[arg(long, conflicts_with = "every", value_name = "MS")]
        now_ms: Option<i64>,
        /// Commit staged files as they are: no merging and no rewrites (what a table without floe's
        /// maintenance looks like; expiry still runs).
        #[arg(long)]
        no_merge: bool,
    },
    /// Maintain every table until nothing is left to do: commit what is staged, rewrite small files, merge
    /// manifests, expire snapshots due by the table properties.
    ///
    /// The scheduled compactor does the same within a 30-second merge budget per run; this runs as many
    /// rounds as it takes (e.g. to catch up after `compact --no-merge`, or after raising
    /// `table.target_file_size_mb`), with a progress line per round. Prints the summed report of each table
    /// as JSON. Exit code 0 when done; 1 on a table error (75 if a retry can fix it).
    Maintain {
        #[command(flatten)]
        common: Common,
        /// Stop after this many rounds even if work is left.
        #[arg(long, default_value_t = 100, value_name = "N")]
        max_rounds: u32,
        /// Processing time for idle-partition detection, in milliseconds since the epoch (default: now).
        #[arg(long, value_name = "MS")]
        now_ms: Option<i64>,
    },
    /// Delete files under the tables' locations that nothing references (orphans), as the compactor's daily
    /// orphan run does.
    ///
    /// Orphans are what crashes and lost answers leave behind: an ingest's files that were never staged, merged
    /// files of a commit whose outcome was unknown, metadata written before a swap that never happened. A file
    /// is deleted only if no snapshot, manifest or metadata file of its table references it, the state store's
    /// ledger does not list it as staged, and it is older than the safety window (the table property
    /// `floe.orphans.older-than-ms`, default 3 days, or --older-than). Files being written right now are
    /// always younger than that. Prints each table's report as JSON (counts, and with --dry-run the paths that
    /// would go). Exit code 0 when done; 1 on a table error (75 if a retry can fix it).
    Orphans {
        #[command(flatten)]
        common: Common,
        /// Safety window: only files last modified longer ago than this, e.g. `6h`, `3d` (at least 1h).
        #[arg(long, value_parser = parse_older_than, value_name = "AGE")]
        older_than: Option<i64>,
        /// Report what would be deleted without deleting anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load history into the pipelines' tables: a Kafka cluster's retained records, or an archive of objects.
    ///
    /// The same planner and split runner as the backfill function, in this process: the job is cut into
    /// splits (one per topic-partition, or per archive object), loaded --parallel at a time through the same
    /// decode, transform and dead-letter path as ingest, with a progress bar and a JSON summary. Staged files
    /// are committed by the compactor (`floe compact`), like ingest's.
    ///
    /// Never twice: each pipeline's backfills of a partition share one fence, so an interrupted backfill
    /// (Ctrl-C, kill) resumes where it stopped when run again, and a finished one is a no-op. `--to live`
    /// (the default) ends each partition where the live stream starts (creating the live fence at the high
    /// watermark if the live stream has not started), so backfill and live ingest meet with no gap and no
    /// overlap. Archive objects are loaded once per object version.
    ///
    /// Examples:
    ///   floe backfill --pipeline orders.toml --brokers localhost:9092 --dry-run
    ///   floe backfill --pipeline orders.toml --brokers b-1.msk:9098 --auth iam --from -7d
    ///   floe backfill --pipeline orders.toml --archive s3://exports/orders/ --max-bytes 50000000000
    Backfill {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        job: BackfillArgs,
    },
    /// Create topics on a Kafka broker (`name:partitions`); existing topics are left alone.
    Topics {
        /// Bootstrap servers, host:port[,host:port…].
        #[arg(long)]
        brokers: String,
        /// Topics to create, e.g. clicks:3 orders:3.
        #[arg(required = true, value_parser = parse_topic, value_name = "NAME:PARTITIONS")]
        topics: Vec<(String, i32)>,
    },
    /// Produce generated sample records (the demo's data) to a Kafka broker.
    Produce {
        /// Bootstrap servers, host:port[,host:port…].
        #[arg(long)]
        brokers: String,
        /// Records in all.
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Make every Nth record malformed (0: none).
        #[arg(long, default_value_t = 1_000)]
        bad_every: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Records per second (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Records per produce request and partition.
        #[arg(long, default_value_t = 100)]
        chunk: usize,
        /// Stamp records with the time they are produced (to measure freshness), not the generated event time.
        #[arg(long)]
        stamp_now: bool,
    },
    /// Run floe without AWS: the MSK event source mapping, locally, polling a Kafka broker.
    ///
    /// Polls the pipeline's topics and invokes the ingest handler with MSK-shaped events, batched and retried
    /// the way the event source mapping does (batch size, batching window, 6 MB payload cap, starting position,
    /// retries, an on-failure destination); positions are stored under --esm-dir only after a successful
    /// invocation, so a restart redelivers what was in flight. Runs until Ctrl-C.
    Poll {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        esm: EsmArgs,
    },
    /// Produced, delivered and committed positions, lag and table row counts of a local stack, as one JSON line.
    ///
    /// `staged` counts files ingested but not yet committed: the stack has caught up when lag and staged are 0.
    Status {
        #[command(flatten)]
        common: Common,
        /// Bootstrap servers, host:port[,host:port…].
        #[arg(long)]
        brokers: String,
        /// The poller's directory (its stored positions).
        #[arg(long, default_value = ".floe/local/esm", value_name = "DIR")]
        esm_dir: PathBuf,
    },
}

/// What `floe backfill` loads, and how.
#[derive(clap::Args)]
pub struct BackfillArgs {
    /// Kafka bootstrap servers to re-read, host:port[,host:port…].
    #[arg(long, conflicts_with = "archive", required_unless_present = "archive")]
    pub brokers: Option<String>,
    /// How to authenticate to Kafka: plaintext, tls, iam (MSK IAM, with the environment's AWS credentials) or
    /// scram (FLOE_KAFKA_USERNAME/FLOE_KAFKA_PASSWORD, or the secret FLOE_KAFKA_SCRAM_SECRET).
    #[arg(long, default_value = "plaintext", value_parser = ["plaintext", "tls", "iam", "scram"])]
    pub auth: String,
    /// Topics or patterns to backfill (repeatable); default every topic the pipelines read.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Start: earliest, an offset, an RFC 3339 time, or a time ago like -6h or -7d.
    #[arg(long, default_value = "earliest", value_name = "POSITION")]
    pub from: String,
    /// End (exclusive): live (where the live stream starts), latest, an offset or a time.
    #[arg(long, default_value = "live", value_name = "POSITION")]
    pub to: String,
    /// An archive to load instead: an s3://bucket/prefix/ or a local directory of .jsonl, .ndjson, .json (each
    /// optionally .gz) and .parquet objects.
    #[arg(long, value_name = "LOCATION")]
    pub archive: Option<String>,
    /// Splits loaded at the same time.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Cost cap: Kafka records this run may load; the rest is left for the next run of the same command.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Cost cap: archive bytes this run may load.
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Print the plan (splits, meeting points, what is already loaded) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the job as the JSON payload the backfill state machine takes (for `aws stepfunctions
    /// start-execution --input` or a schedule) and exit.
    #[arg(long)]
    pub print_job: bool,
}

/// The event source mapping's settings, named as in the SAM template.
#[derive(clap::Args)]
pub struct EsmArgs {
    /// Bootstrap servers, host:port[,host:port…].
    #[arg(long)]
    pub brokers: String,
    /// Stored positions, invocation log, on-failure destination and status.
    #[arg(long, default_value = ".floe/local/esm", value_name = "DIR")]
    pub esm_dir: PathBuf,
    /// Most records per invocation (BatchSize).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Longest wait to fill a batch (MaximumBatchingWindowInSeconds, in milliseconds here).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub batching_window_ms: u64,
    /// Where to start on a partition without a stored position (StartingPosition).
    #[arg(long, default_value = "TRIM_HORIZON", value_parser = ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])]
    pub starting_position: String,
    /// Milliseconds since the epoch, with AT_TIMESTAMP.
    #[arg(long, value_name = "MS")]
    pub starting_timestamp_ms: Option<i64>,
    /// Retries of a failed batch before it goes to the on-failure destination (-1: until it succeeds).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub max_retry_attempts: i64,
    /// Largest invocation payload in bytes (Lambda's cap is 6 MB).
    #[arg(long, default_value_t = crate::esm::MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Invoke a function through the Lambda invoke API at this endpoint (e.g. `cargo lambda watch`'s
    /// http://127.0.0.1:9000) instead of the ingest handler in this process.
    #[arg(long, value_name = "URL")]
    pub invoke_endpoint: Option<String>,
    /// Function name for --invoke-endpoint.
    #[arg(long, default_value = "floe-ingest")]
    pub function_name: String,
}

/// `90m`, `6h`, `3d`, `3600s` → milliseconds, at least [`floe_core::MIN_OLDER_THAN_MS`]. The test build
/// (`floe-faults`) accepts any age, so a test can treat files it just wrote as old.
fn parse_older_than(text: &str) -> Result<i64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| format!("`{text}` is not an age such as 6h or 3d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d (e.g. 6h, 3d)")),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(|| format!("`{text}` is too long"))?;
    if ms < floe_core::MIN_OLDER_THAN_MS && !cfg!(feature = "failpoints") {
        return Err(format!("`{text}` is shorter than 1h: files that young may still be on their way into a commit"));
    }
    Ok(ms)
}

fn parse_topic(text: &str) -> Result<(String, i32), String> {
    let (name, partitions) = text.split_once(':').ok_or("expected <name>:<partitions>")?;
    let partitions = partitions.parse().map_err(|_| format!("`{partitions}` is not a number of partitions"))?;
    if name.is_empty() || partitions < 1 {
        return Err(format!("`{text}`: a topic needs a name and at least one partition"));
    }
    Ok((name.to_string(), partitions))
}

#[cfg(test)]
mod tests {
    use super::parse_older_than;

    #[test]
    fn ages_have_a_unit_and_a_floor() {
        assert_eq!(parse_older_than("3d"), Ok(3 * 86_400_000));
        assert_eq!(parse_older_than("6h"), Ok(6 * 3_600_000));
        assert_eq!(parse_older_than("90m"), Ok(90 * 60_000));
        assert!(parse_older_than("3").unwrap_err().contains("unit"));
        assert!(parse_older_than("h").unwrap_err().contains("not an age"));
        assert!(parse_older_than("9999999999999999d").unwrap_err().contains("too long"));
        let short = parse_older_than("30m");
        if cfg!(feature = "failpoints") {
            assert_eq!(short, Ok(30 * 60_000));
        } else {
            assert!(short.unwrap_err().contains("shorter than 1h"));
        }
    }
}
