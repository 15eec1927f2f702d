//! The backfill function's tasks on the embedded default: plan an archive job (splits written where the state
//! machine's ItemReader reads them), load each split as the Map state would, re-plan (nothing left), a split
//! whose invocation has no time left, and a run's summary from the Map state's result files.

use std::sync::Arc;

use floe_core::{Ingestor, Router};
use floe_embedded::Embedded;
use serde_json::{Value, json};

use super::*;

const PIPELINE: &str = r#"
name = "archive"
[source]
topics = ["unused"]
[table]
namespace = "ns"
name = "events"
columns = [{ name = "id", type = "long", required = true }, { name = "name", type = "string" }]
"#;

async fn handler(dir: &std::path::Path) -> (Handler, Embedded) {
    let b = Embedded::open(&dir.join("home")).await.unwrap();
    std::fs::write(dir.join("p.toml"), PIPELINE).unwrap();
    let p = Arc::new(floe_core::Pipeline::load(&dir.join("p.toml")).unwrap());
    let router = Router::new(vec![Ingestor::new(p, &b.backends()).await.unwrap()]).unwrap();
    (Handler::new(router, b.backends()), b)
}

fn far() -> u64 {
    floe_backends::now_ms() as u64 + 600_000
}

#[tokio::test]
async fn a_planned_archive_is_loaded_split_by_split_and_then_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = handler(dir.path()).await;
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("a.jsonl"), "{\"id\": 1, \"name\": \"x\"}\n{\"id\": 2}\nnot json\n").unwrap();
    std::fs::write(archive.join("b.ndjson"), "{\"id\": 3}\n").unwrap();
    let job = json!({"archive": format!("file://{}", archive.display())});

    let planned = h.invoke(json!({"plan": job}), far()).await.unwrap();
    assert_eq!((planned["splits"].as_u64(), planned["done"].as_u64()), (Some(2), Some(0)), "{planned}");
    assert_eq!(planned["pipeline"], "archive");
    let run = planned["run"].as_str().unwrap();
    let (_, _, location) = splits_location(&b.warehouse, run);
    assert_eq!(planned["key"].as_str().unwrap(), location, "a local warehouse: the key is the location");
    let splits: Vec<Value> =
        serde_json::from_slice(&std::fs::read(location.strip_prefix("file://").unwrap()).unwrap()).unwrap();
    assert_eq!(splits.len(), 2);

    let (mut rows, mut dead) = (0, 0);
    for split in &splits {
        let report = h.invoke(json!({"split": split, "job": job}), far()).await.unwrap();
        assert_eq!(report["done"], true, "{report}");
        rows += report["rows"].as_u64().unwrap();
        dead += report["dead_letters"].as_u64().unwrap();
    }
    assert_eq!((rows, dead), (3, 1));
    let again = h.invoke(json!({"plan": job}), far()).await.unwrap();
    assert_eq!((again["splits"].as_u64(), again["done"].as_u64()), (Some(0), Some(2)));
    // Loading a finished split again is a no-op.
    let report = h.invoke(json!({"split": splits[0], "job": job}), far()).await.unwrap();
    assert_eq!((report["done"].as_bool(), report["records"].as_u64()), (Some(true), Some(0)));
}

#[tokio::test]
async fn a_split_near_its_deadline_still_moves_and_bad_requests_are_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = handler(dir.path()).await;
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("a.jsonl"), "{\"id\": 1}\n").unwrap();
    let job = json!({"archive": archive.display().to_string()});
    let planned = h.invoke(json!({"plan": job}), far()).await.unwrap();
    let (_, _, location) = splits_location(&h.backends.warehouse, planned["run"].as_str().unwrap());
    let splits: Vec<Value> =
        serde_json::from_slice(&std::fs::read(location.strip_prefix("file://").unwrap()).unwrap()).unwrap();
    // However close the deadline, an invocation makes progress (at least a second's worth), so a split never
    // loops without moving; one that needs more time says it is not done and is invoked again.
    let now = floe_backends::now_ms() as u64;
    let report = h.invoke(json!({"split": splits[0], "job": job}), now).await.unwrap();
    assert_eq!((report["done"].as_bool(), report["records"].as_u64()), (Some(true), Some(1)));

    let bad = h.invoke(json!({"backfill": "everything"}), far()).await.unwrap_err();
    assert_eq!(bad.error_type, "floe.Permanent");
    let two = h.invoke(json!({"plan": {"archive": "x", "kafka": {"brokers": "b"}}}), far()).await.unwrap_err();
    assert!(two.error_message.contains("exactly one source"), "{}", two.error_message);
}

#[tokio::test]
async fn a_runs_summary_sums_the_split_reports_and_fails_on_a_failed_split() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = handler(dir.path()).await;
    let root = dir.path().join("results");
    std::fs::create_dir_all(&root).unwrap();
    let path = |name: &str| root.join(name).display().to_string();
    // The shapes the Distributed Map's ResultWriter writes: a manifest, then arrays of child executions whose
    // Input and Output are JSON text.
    let item = |records: u64, rows: u64| {
        let report = json!({"id": "s", "records": records, "rows": rows, "dead_letters": records - rows, "done": true});
        json!({"Status": "SUCCEEDED", "Input": "{}", "Output": json!({"split": {}, "report": report}).to_string()})
    };
    std::fs::write(path("SUCCEEDED_0.json"), json!([item(10, 9), item(5, 5)]).to_string()).unwrap();
    let manifest = |failed: Value| {
        json!({"DestinationBucket": "", "MapRunArn": "arn", "ResultFiles": {
            "SUCCEEDED": [{"Key": path("SUCCEEDED_0.json"), "Size": 1}], "FAILED": failed, "PENDING": []}})
    };
    std::fs::write(path("manifest.json"), manifest(json!([])).to_string()).unwrap();
    let request = json!({"summarize": {"Bucket": "", "Key": path("manifest.json")}, "run": "r1"});
    let summary = h.invoke(request.clone(), far()).await.unwrap();
    assert_eq!((summary["splits"].as_u64(), summary["records"].as_u64()), (Some(2), Some(15)));
    assert_eq!((summary["rows"].as_u64(), summary["dead_letters"].as_u64()), (Some(14), Some(1)));

    let failed = json!({"Status": "FAILED", "Input": json!({"split": {"id": "bf:p:r1:t:0:0"}}).to_string()});
    std::fs::write(path("FAILED_0.json"), json!([failed]).to_string()).unwrap();
    std::fs::write(path("manifest.json"), manifest(json!([{"Key": path("FAILED_0.json"), "Size": 1}])).to_string())
        .unwrap();
    let err = h.invoke(request, far()).await.unwrap_err();
    assert!(err.error_message.contains("1 of 3 splits failed") && err.error_message.contains("bf:p:r1:t:0:0"));
}
