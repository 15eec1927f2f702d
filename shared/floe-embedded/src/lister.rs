//! Listing the local warehouse for orphan removal: a directory walk under a `file://` prefix.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use floe_core::{ListedObject, ObjectLister};
use futures::stream::{self, BoxStream, StreamExt};
use iceberg::{Error, ErrorKind};

/// Lists files under a local directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirLister;

#[async_trait]
impl ObjectLister for DirLister {
    async fn list(&self, prefix: &str) -> iceberg::Result<BoxStream<'static, iceberg::Result<ListedObject>>> {
        let dir = prefix.strip_prefix("file://").unwrap_or(prefix).to_string();
        let walked = tokio::task::spawn_blocking(move || walk(Path::new(&dir)))
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("listing {prefix}: {e}")))?
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("listing {prefix}: {e}")))?;
        let objects = walked.into_iter().map(|(path, size, modified)| {
            Ok(ListedObject { location: format!("file://{}", path.display()), size, last_modified_ms: modified })
        });
        Ok(stream::iter(objects).boxed())
    }
}

/// Every file under `dir` (none if it does not exist), sorted, with size and modification time.
fn walk(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, Option<i64>)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                files.push((entry.path(), meta.len(), modified.map(|d| d.as_millis() as i64)));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn lists_files_recursively_with_their_size_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("ns/events");
        std::fs::create_dir_all(table.join("data/day=1")).unwrap();
        std::fs::create_dir_all(table.join("metadata")).unwrap();
        std::fs::write(table.join("data/day=1/a.parquet"), b"12345").unwrap();
        std::fs::write(table.join("metadata/v1.metadata.json"), b"{}").unwrap();
        // A sibling table whose name starts like this one's is not under its prefix.
        std::fs::create_dir_all(dir.path().join("ns/events_dead_letters")).unwrap();
        std::fs::write(dir.path().join("ns/events_dead_letters/x.parquet"), b"x").unwrap();

        let prefix = format!("file://{}/", table.display());
        let listed: Vec<ListedObject> = DirLister.list(&prefix).await.unwrap().try_collect().await.unwrap();
        let names: Vec<(&str, u64)> =
            listed.iter().map(|o| (o.location.strip_prefix(&prefix).unwrap(), o.size)).collect();
        assert_eq!(names, [("data/day=1/a.parquet", 5), ("metadata/v1.metadata.json", 2)]);
        let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(listed.iter().all(|o| o.last_modified_ms.is_some_and(|t| (now - t).abs() < 60_000)));

        let missing = format!("file://{}/nope/", dir.path().display());
        assert!(DirLister.list(&missing).await.unwrap().try_collect::<Vec<_>>().await.unwrap().is_empty());
    }
}
