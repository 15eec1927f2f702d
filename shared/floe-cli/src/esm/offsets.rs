//! The mapping's stored positions: next offset per `topic:partition`, in one JSON file replaced atomically
//! (write a temporary file, then rename), so a poller killed at any moment leaves either the old or the new map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    positions: Mutex<BTreeMap<String, i64>>,
}

impl OffsetStore {
    pub fn open(path: &Path) -> anyhow::Result<OffsetStore> {
        let positions = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(OffsetStore { path: path.to_path_buf(), positions: Mutex::new(positions) })
    }

    fn key(topic: &str, partition: i32) -> String {
        format!("{topic}:{partition}")
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.lock().expect("offsets lock").get(&Self::key(topic, partition)).copied()
    }

    pub fn all(&self) -> BTreeMap<String, i64> {
        self.positions.lock().expect("offsets lock").clone()
    }

    /// Store the next offset to deliver for a partition; durable when this returns.
    pub fn store(&self, topic: &str, partition: i32, next: i64) -> anyhow::Result<()> {
        let mut positions = self.positions.lock().expect("offsets lock");
        positions.insert(Self::key(topic, partition), next);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*positions)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.json");
        let store = OffsetStore::open(&path).unwrap();
        assert_eq!(store.get("clicks", 0), None);
        store.store("clicks", 0, 42).unwrap();
        store.store("orders", 1, 7).unwrap();
        store.store("clicks", 0, 50).unwrap();
        let reopened = OffsetStore::open(&path).unwrap();
        assert_eq!(
            (reopened.get("clicks", 0), reopened.get("orders", 1), reopened.get("orders", 0)),
            (Some(50), Some(7), None)
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(OffsetStore::open(&path).unwrap_err().to_string().contains("corrupt"));
    }
}
