//! Listing the S3 warehouse for orphan removal: `ListObjectsV2` through OpenDAL, the S3 client iceberg's FileIO
//! already links (no second S3 SDK in the zips), with the same region, endpoint and addressing as the FileIO.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use floe_core::{ListedObject, ObjectLister};
use futures::stream::{BoxStream, StreamExt};
use iceberg::{Error, ErrorKind};
use opendal::{EntryMode, Operator};

/// Lists objects under an `s3://bucket/prefix/` location.
#[derive(Debug, Clone)]
pub struct S3Lister {
    region: String,
    endpoint: Option<String>,
    path_style: bool,
}

impl S3Lister {
    pub fn new(region: String, endpoint: Option<String>, path_style: bool) -> Self {
        S3Lister { region, endpoint, path_style }
    }

    fn operator(&self, bucket: &str) -> Result<Operator, opendal::Error> {
        let mut builder = opendal::services::S3::default().bucket(bucket).region(&self.region).root("/");
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if !self.path_style {
            builder = builder.enable_virtual_host_style();
        }
        Ok(Operator::new(builder)?.finish())
    }
}

fn failed(prefix: &str, e: opendal::Error) -> Error {
    let retryable = e.is_temporary();
    Error::new(ErrorKind::Unexpected, format!("listing {prefix}")).with_retryable(retryable).with_source(e)
}

/// `s3://bucket/key/` → (`bucket`, `key/`).
fn split(prefix: &str) -> Option<(&str, &str)> {
    let rest = prefix.strip_prefix("s3://").or_else(|| prefix.strip_prefix("s3a://"))?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty()).then_some((bucket, key))
}

#[async_trait]
impl ObjectLister for S3Lister {
    async fn list(&self, prefix: &str) -> iceberg::Result<BoxStream<'static, iceberg::Result<ListedObject>>> {
        let (bucket, key) = split(prefix).ok_or_else(|| {
            Error::new(ErrorKind::DataInvalid, format!("{prefix} is not an s3://bucket/prefix/ location"))
        })?;
        let op = self.operator(bucket).map_err(|e| failed(prefix, e))?;
        let lister = op.lister_with(key).recursive(true).await.map_err(|e| failed(prefix, e))?;
        let (root, owned_prefix) = (format!("s3://{bucket}/"), prefix.to_string());
        let objects = lister.filter_map(move |entry| {
            let item = match entry {
                Err(e) => Some(Err(failed(&owned_prefix, e))),
                Ok(entry) if entry.metadata().mode() != EntryMode::FILE => None,
                Ok(entry) => {
                    let meta = entry.metadata();
                    let modified = meta.last_modified().map(SystemTime::from);
                    let millis = modified.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis());
                    Some(Ok(ListedObject {
                        location: format!("{root}{}", entry.path().trim_start_matches('/')),
                        size: meta.content_length(),
                        last_modified_ms: millis.map(|m| m as i64),
                    }))
                }
            };
            std::future::ready(item)
        });
        Ok(objects.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_bucket_and_key_prefix() {
        assert_eq!(split("s3://b/warehouse/ns/t/"), Some(("b", "warehouse/ns/t/")));
        assert_eq!(split("s3a://b/t/"), Some(("b", "t/")));
        assert_eq!(split("s3:///t/"), None);
        assert_eq!(split("file:///tmp/t/"), None);
    }
}
