//! What the embedded maintenance tests share: the example pipeline with extra table properties, the target
//! table, and the files on disk under a table.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use floe_core::{Pipeline, TableLayout};
use floe_embedded::Embedded;
use iceberg::table::Table;

/// The example pipeline with `extra` table properties (small enough for a test), written into `dir` with its
/// reference data.
pub fn pipeline(dir: &Path, extra: &str) -> Arc<Pipeline> {
    let examples = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples");
    let text = std::fs::read_to_string(examples.join("pipeline.toml")).unwrap();
    std::fs::create_dir_all(dir.join("reference")).unwrap();
    std::fs::copy(examples.join("reference/countries.csv"), dir.join("reference/countries.csv")).unwrap();
    let old = r#"properties = { "write.parquet.compression-codec" = "zstd" }"#;
    assert!(text.contains(old), "the example's table properties changed");
    let new = format!(r#"properties = {{ "write.parquet.compression-codec" = "zstd", {extra} }}"#);
    std::fs::write(dir.join("pipeline.toml"), text.replace(old, &new)).unwrap();
    Arc::new(floe_core::load_pipeline(&dir.join("pipeline.toml")).unwrap())
}

/// The pipeline's target table as committed now.
pub async fn target(p: &Pipeline, b: &Embedded) -> Table {
    b.catalog.load_table(&TableLayout::target(p, &b.warehouse).unwrap().ident()).await.unwrap()
}

/// Every file under `dir` (a `file://` location or a path) whose name ends in `suffix`, as `file://` locations.
pub fn files_under(dir: &str, suffix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir))];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.insert(format!("file://{}", path.display()));
            }
        }
    }
    out
}
