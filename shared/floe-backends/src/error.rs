//! The error type of `floe-backends`: a setting the deployment got wrong, or what opening a backend or loading
//! the pipeline raised in the core.

/// Result alias for `floe-backends`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A function setting (environment variable) is missing or invalid.
    #[error("invalid setting {var}: {message}")]
    Settings { var: String, message: String },

    /// Opening a backend or loading the pipeline failed.
    #[error(transparent)]
    Core(#[from] floe_core::Error),
}

impl Error {
    /// Can retrying (a new cold start) succeed? Settings never fix themselves.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Settings { .. } => false,
            Error::Core(e) => e.is_retryable(),
        }
    }
}

#[cfg(feature = "aws")]
impl From<floe_aws::OpenError> for Error {
    fn from(e: floe_aws::OpenError) -> Self {
        Error::Settings { var: e.var.to_string(), message: e.message }
    }
}

/// A failed invocation of a handler, classified: the Lambda functions log and return it, and the event source
/// mapping (ingest) or the next schedule tick (compactor) repeats the work.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct Failure {
    /// Can repeating the same work succeed (throttling, a lost race), or will it fail the same way?
    pub retryable: bool,
    #[source]
    pub source: floe_core::Error,
}

impl Failure {
    /// The error type reported to Lambda: the class, so dashboards can tell a retry storm from a bad pipeline.
    pub fn error_type(&self) -> &'static str {
        if self.retryable { "floe.Retryable" } else { "floe.Permanent" }
    }
}

impl Failure {
    /// The error and each of its causes, `: `-separated (what the logs and Lambda's error message show).
    pub fn message(&self) -> String {
        let mut message = self.source.to_string();
        let mut cause = std::error::Error::source(&self.source);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        message
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Settings { var, message } => floe_core::Error::Settings { var, message }.into(),
            Error::Core(e) => e.into(),
        }
    }
}

impl From<floe_core::Error> for Failure {
    fn from(source: floe_core::Error) -> Self {
        Failure { retryable: source.is_retryable(), source }
    }
}
