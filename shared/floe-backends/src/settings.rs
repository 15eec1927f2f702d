//! Typed per-function settings read once from the environment at cold start. Names are documented constants;
//! anything missing or malformed fails the cold start with a message naming the variable.

use std::path::PathBuf;

use crate::error::{Error, Result};
#[cfg(feature = "aws")]
pub use floe_aws::AwsSettings;

/// Path of the pipeline file (default: `pipeline.toml` in the function package, `$LAMBDA_TASK_ROOT`).
pub const ENV_PIPELINE_FILE: &str = "FLOE_PIPELINE_FILE";
/// Several pipeline files deployed together, comma-separated (each a route into its own table); takes precedence
/// over [`ENV_PIPELINE_FILE`].
pub const ENV_PIPELINE_FILES: &str = "FLOE_PIPELINE_FILES";
/// Storage backend: `embedded` (SQLite + local warehouse, the default) or `aws` (DynamoDB, Glue, S3).
pub const ENV_BACKEND: &str = "FLOE_BACKEND";
/// Home directory of the embedded backend (catalog.db, state.db, warehouse/).
pub const ENV_HOME: &str = "FLOE_HOME";
/// AWS: warehouse root, `s3://bucket/prefix`.
pub const ENV_WAREHOUSE: &str = "FLOE_WAREHOUSE";
/// AWS: DynamoDB table of the state store.
pub const ENV_STATE_TABLE: &str = "FLOE_STATE_TABLE";
/// AWS: Glue catalog id (account id); default the caller's account.
pub const ENV_GLUE_CATALOG_ID: &str = "FLOE_GLUE_CATALOG_ID";
/// AWS: `true` for path-style S3 addressing (local stand-ins); default `false`.
pub const ENV_S3_PATH_STYLE: &str = "FLOE_S3_PATH_STYLE";
/// AWS: per-attempt timeout of DynamoDB and Glue calls in milliseconds (default 5000). A call that hangs is
/// abandoned and retried by the SDK instead of running into the function timeout.
pub const ENV_AWS_ATTEMPT_TIMEOUT_MS: &str = "FLOE_AWS_ATTEMPT_TIMEOUT_MS";
/// Default of [`ENV_AWS_ATTEMPT_TIMEOUT_MS`]: far above a healthy call (milliseconds), far below a Lambda timeout.
pub const DEFAULT_AWS_ATTEMPT_TIMEOUT_MS: u64 = 5_000;
/// AWS SDK's standard endpoint override, also used for S3 data files (local stand-ins).
pub const ENV_AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Lambda sets this to the directory holding the function package.
pub const ENV_LAMBDA_TASK_ROOT: &str = "LAMBDA_TASK_ROOT";

/// Where state, catalog and data live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Embedded {
        home: PathBuf,
    },
    #[cfg(feature = "aws")]
    Aws(AwsSettings),
}

/// Settings shared by the ingest and compactor functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSettings {
    /// The deployment's pipeline files, in order (the first takes records no route takes).
    pub pipeline_files: Vec<PathBuf>,
    pub backend: Backend,
}

impl FunctionSettings {
    /// Read from the process environment.
    pub fn from_env() -> Result<FunctionSettings> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<FunctionSettings> {
        let bad = |var: &str, message: String| Error::Settings { var: var.to_string(), message };
        let set = |var: &str| get(var).filter(|v| !v.is_empty());
        let pipeline_files = match (set(ENV_PIPELINE_FILES), set(ENV_PIPELINE_FILE)) {
            (Some(list), _) => {
                let files: Vec<PathBuf> = list.split(',').map(str::trim).map(PathBuf::from).collect();
                if files.iter().any(|f| f.as_os_str().is_empty()) {
                    return Err(bad(ENV_PIPELINE_FILES, format!("`{list}` has an empty entry")));
                }
                files
            }
            (None, Some(p)) => vec![PathBuf::from(p)],
            (None, None) => {
                vec![PathBuf::from(set(ENV_LAMBDA_TASK_ROOT).unwrap_or_else(|| ".".into())).join("pipeline.toml")]
            }
        };
        let backend = match set(ENV_BACKEND).as_deref().unwrap_or("embedded") {
            "embedded" => {
                Backend::Embedded { home: PathBuf::from(set(ENV_HOME).unwrap_or_else(|| "/tmp/floe".into())) }
            }
            #[cfg(feature = "aws")]
            "aws" => {
                let required = |var: &str| set(var).ok_or_else(|| bad(var, "is required with FLOE_BACKEND=aws".into()));
                let warehouse = required(ENV_WAREHOUSE)?;
                if !warehouse.starts_with("s3://") || warehouse.trim_end_matches('/').len() <= "s3://".len() {
                    return Err(bad(ENV_WAREHOUSE, format!("`{warehouse}` is not an s3://bucket[/prefix] URL")));
                }
                let s3_path_style = match set(ENV_S3_PATH_STYLE).as_deref() {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => return Err(bad(ENV_S3_PATH_STYLE, format!("`{other}` is not true or false"))),
                };
                let attempt_timeout_ms = match set(ENV_AWS_ATTEMPT_TIMEOUT_MS) {
                    None => DEFAULT_AWS_ATTEMPT_TIMEOUT_MS,
                    Some(v) => v.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        bad(ENV_AWS_ATTEMPT_TIMEOUT_MS, format!("`{v}` is not a positive number of milliseconds"))
                    })?,
                };
                Backend::Aws(AwsSettings {
                    attempt_timeout_ms,
                    warehouse,
                    state_table: required(ENV_STATE_TABLE)?,
                    glue_catalog_id: set(ENV_GLUE_CATALOG_ID),
                    s3_path_style,
                    endpoint_url: set(ENV_AWS_ENDPOINT_URL),
                })
            }
            #[cfg(not(feature = "aws"))]
            "aws" => {
                return Err(bad(
                    ENV_BACKEND,
                    "this build has no `aws` backend (built without the `aws` feature)".into(),
                ));
            }
            other => {
                return Err(bad(ENV_BACKEND, format!("unknown backend `{other}` (expected `embedded` or `aws`)")));
            }
        };
        Ok(FunctionSettings { pipeline_files, backend })
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let env: HashMap<&str, &str> = HashMap::from([(ENV_LAMBDA_TASK_ROOT, "/var/task")]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.pipeline_files, vec![PathBuf::from("/var/task/pipeline.toml")]);
        assert_eq!(s.backend, Backend::Embedded { home: "/tmp/floe".into() });

        let env: HashMap<&str, &str> = HashMap::from([(ENV_PIPELINE_FILE, "/p.toml"), (ENV_HOME, "/h")]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.pipeline_files, vec![PathBuf::from("/p.toml")]);
        assert_eq!(s.backend, Backend::Embedded { home: "/h".into() });
        let env: HashMap<&str, &str> =
            HashMap::from([(ENV_PIPELINE_FILE, "/p.toml"), (ENV_PIPELINE_FILES, "/a.toml, s3://b/c.toml")]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.pipeline_files, vec![PathBuf::from("/a.toml"), PathBuf::from("s3://b/c.toml")]);
        let env: HashMap<&str, &str> = HashMap::from([(ENV_PIPELINE_FILES, "/a.toml,,/b.toml")]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("FLOE_PIPELINE_FILES") && e.contains("empty entry"), "{e}");

        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_BACKEND, "aws"),
            (ENV_WAREHOUSE, "s3://bucket/wh"),
            (ENV_STATE_TABLE, "floe-state"),
            (ENV_S3_PATH_STYLE, "true"),
            (ENV_AWS_ENDPOINT_URL, "http://127.0.0.1:5000"),
        ]);
        let s = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let Backend::Aws(aws) = s.backend else { panic!("not aws") };
        assert_eq!(
            (aws.warehouse.as_str(), aws.state_table.as_str(), aws.s3_path_style),
            ("s3://bucket/wh", "floe-state", true)
        );
        assert_eq!(aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(aws.attempt_timeout_ms, DEFAULT_AWS_ATTEMPT_TIMEOUT_MS);
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_BACKEND, "aws"),
            (ENV_WAREHOUSE, "s3://b"),
            (ENV_STATE_TABLE, "t"),
            (ENV_AWS_ATTEMPT_TIMEOUT_MS, "soon"),
        ]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("FLOE_AWS_ATTEMPT_TIMEOUT_MS") && e.contains("`soon`"), "{e}");

        let env: HashMap<&str, &str> = HashMap::from([(ENV_BACKEND, "aws"), (ENV_WAREHOUSE, "/tmp/wh")]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("FLOE_WAREHOUSE") && e.contains("not an s3://"), "{e}");
        let env: HashMap<&str, &str> = HashMap::from([(ENV_BACKEND, "aws"), (ENV_WAREHOUSE, "s3://b")]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("FLOE_STATE_TABLE") && e.contains("required"), "{e}");

        let env: HashMap<&str, &str> = HashMap::from([(ENV_BACKEND, "gcp")]);
        let e = FunctionSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("FLOE_BACKEND") && e.contains("unknown backend `gcp`"), "{e}");
    }
}
