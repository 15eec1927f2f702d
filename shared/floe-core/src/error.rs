//! The one error type of `floe-core`.
//!
//! Every error says whether retrying the same work can succeed ([`Error::is_retryable`]): a Lambda handler
//! returns retryable errors to the event source mapping (which redelivers the same records), while permanent
//! ones are turned into dead letters or a clear configuration failure at cold start.

/// Result alias for `floe-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by floe's core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file is invalid; the message names the file, line and field.
    #[error("invalid pipeline file {file}: {message}")]
    Config { file: String, message: String },

    /// A function setting (environment variable) is missing or invalid.
    #[error("invalid setting {var}: {message}")]
    Settings { var: String, message: String },

    /// The event given to a handler is not a usable MSK event (as a whole; bad records become dead letters).
    #[error("invalid event: {0}")]
    Event(String),

    /// Iceberg library error (metadata, writers, catalog). Retryable when the library says so.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),

    /// Parquet error while reading back a data file (a merge's input). Retryable when it comes from storage.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Arrow error outside per-record decoding (which yields dead letters instead).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// The state store failed. `retryable` is decided by the backend (busy/throttled vs. corrupt); `source` is
    /// the driver's or SDK's own error, when there is one.
    #[error("state store: {message}")]
    State {
        message: String,
        retryable: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The schema registry failed: unreachable, timed out or 5xx (retryable: the records are redelivered), or
    /// refused floe's credentials (permanent until the deployment is fixed).
    #[error("schema registry {registry}: {message}")]
    Registry { registry: String, message: String, retryable: bool },

    /// A backfill's source failed: the Kafka cluster (unreachable, authentication, a timed-out fetch) or an
    /// archive object that cannot be read. Retryable when the cause is (network, throttling).
    #[error("backfill source: {message}")]
    Source { message: String, retryable: bool },

    /// A backfill job that cannot run as asked (a range that would load records twice or leave a gap, a
    /// pipeline kind backfills do not take); the message says which and what to change. Permanent.
    #[error("backfill: {0}")]
    Backfill(String),

    /// A conditional state update lost a race (another invocation moved the fence first).
    #[error("state conflict: {0}")]
    Conflict(String),

    /// The table in the catalog does not match the pipeline file.
    #[error("table {table} does not match the pipeline file: {message}")]
    TableMismatch { table: String, message: String },

    /// The pipeline file asks for a schema change the table cannot take (Iceberg's evolution rules); every
    /// problem names the column and both types. Fix the pipeline file: permanent.
    #[error("table {table} cannot take the pipeline file's schema:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Schema { table: String, problems: Vec<String> },

    /// A check of floe's own bookkeeping failed (e.g. a merge wrote a different number of rows than it read);
    /// nothing was committed. A bug, not bad input: permanent.
    #[error("internal check failed: {0}")]
    Invariant(String),

    /// A test-only failpoint fired (simulated crash; only with the `failpoints` feature).
    #[cfg(feature = "failpoints")]
    #[error("failpoint {0} fired (simulated crash)")]
    Failpoint(&'static str),
}

impl Error {
    /// Can retrying the same work succeed?
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Iceberg(e) => e.retryable(),
            Error::State { retryable, .. } | Error::Registry { retryable, .. } | Error::Source { retryable, .. } => {
                *retryable
            }
            Error::Conflict(_) => true,
            // Storage errors surface as `External`; anything else is a file that cannot be decoded.
            Error::Parquet(e) => matches!(e, parquet::errors::ParquetError::External(_)),
            #[cfg(feature = "failpoints")]
            Error::Failpoint(_) => true,
            Error::Config { .. }
            | Error::Settings { .. }
            | Error::Event(_)
            | Error::Backfill(_)
            | Error::Arrow(_)
            | Error::TableMismatch { .. }
            | Error::Schema { .. }
            | Error::Invariant(_) => false,
        }
    }

    /// A state-store error raised by floe itself (no underlying driver error).
    pub fn state(message: impl Into<String>, retryable: bool) -> Self {
        Error::State { message: message.into(), retryable, source: None }
    }

    /// A state-store error caused by a driver or SDK error, which it keeps as its source.
    pub fn state_caused_by(
        message: impl Into<String>,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::State { message: message.into(), retryable, source: Some(source.into()) }
    }
}
