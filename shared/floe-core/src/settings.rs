//! Typed per-function settings read once from the environment at cold start. Names are documented constants;
//! anything missing or malformed fails the cold start with a message naming the variable.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Path of the pipeline file (default: `pipeline.toml` in the function package, `$LAMBDA_TASK_ROOT`).
pub const ENV_PIPELINE_FILE: &str = "FLOE_PIPELINE_FILE";
/// Storage backend: `embedded` (SQLite + local warehouse). `aws` arrives with the AWS backends.
pub const ENV_BACKEND: &str = "FLOE_BACKEND";
/// Home directory of the embedded backend (catalog.db, state.db, warehouse/).
pub const ENV_HOME: &str = "FLOE_HOME";
/// Lambda sets this to the directory holding the function package.
pub const ENV_LAMBDA_TASK_ROOT: &str = "LAMBDA_TASK_ROOT";

/// Where state, catalog and data live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Embedded { home: PathBuf },
}

/// Settings shared by the ingest and compactor functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSettings {
    pub pipeline_file: PathBuf,
    pub backend: Backend,
}

impl FunctionSettings {
    /// Read from the process environment.
    pub fn from_env() -> Result<FunctionSettings> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<FunctionSettings> {
        let bad = |var: &str, message: String| Error::Config {
            file: format!("environment variable {var}"),
            message,
        };
        let pipeline_file = match get(ENV_PIPELINE_FILE) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(get(ENV_LAMBDA_TASK_ROOT).unwrap_or_else(|| ".".into())).join("pipeline.toml"),
        };
        let backend = match get(ENV_BACKEND).as_deref().unwrap_or("embedded") {
            "embedded" => Backend::Embedded {
                home: PathBuf::from(
                    get(ENV_HOME)
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "/tmp/floe".into()),
                ),
            },
            other => {
                return Err(bad(
                    ENV_BACKEND,
                    format!("unknown backend `{other}` (expected `embedded`)"),
                ));
            }
        };
        Ok(FunctionSettings { pipeline_file, backend })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let env: HashMap<&str, &str> = HashMap::from([(ENV_LAMBDA_TASK_ROOT, "/var/task")]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.pipeline_file, PathBuf::from("/var/task/pipeline.toml"));
        assert_eq!(
            s.backend,
            Backend::Embedded {
                home: "/tmp/floe".into()
            }
        );

        let env: HashMap<&str, &str> = HashMap::from([(ENV_PIPELINE_FILE, "/p.toml"), (ENV_HOME, "/h")]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.pipeline_file, PathBuf::from("/p.toml"));
        assert_eq!(s.backend, Backend::Embedded { home: "/h".into() });

        let env: HashMap<&str, &str> = HashMap::from([(ENV_BACKEND, "gcp")]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FLOE_BACKEND") && e.contains("unknown backend `gcp`"), "{e}");
    }
}
