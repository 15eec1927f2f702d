//! The benchmark's events with their values re-encoded (`floe-bench avro`, `floe-bench protobuf`): every event of
//! `<data>/events` rewritten under `<out>/events` with each partition's records passed through an encoder, and the
//! data's Arrow schema and pipeline beside them, the pipeline reading `format` from an in-process registry.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Rewrite the events of `data` into `out`, `encode` turning each partition's records' base64 JSON values into
/// framed values in place; returns how many records were converted.
pub(crate) fn reencode_events(
    data: &Path,
    out: &Path,
    format: &str,
    mut encode: impl FnMut(&mut Vec<Value>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out.join("events"))?;
    let mut dir: Vec<_> = std::fs::read_dir(data.join("events"))?.collect::<Result<_, _>>()?;
    dir.sort_by_key(|e| e.path());
    let mut records = 0;
    for entry in dir {
        let mut event: Value = serde_json::from_slice(&std::fs::read(entry.path())?)?;
        for partition in event["records"].as_object_mut().context("an MSK event")?.values_mut() {
            let list = partition.as_array_mut().context("records")?;
            encode(list)?;
            records += list.len();
        }
        std::fs::write(out.join("events").join(entry.file_name()), serde_json::to_vec(&event)?)?;
    }
    std::fs::copy(data.join("schema.arrow"), out.join("schema.arrow"))?;
    let toml = std::fs::read_to_string(data.join("pipeline.toml"))?;
    let framed = toml.replace(
        "format = \"json\"\n",
        &format!("format = \"{format}\"\nregistry = {{ url = \"http://in-process.invalid\" }}\n"),
    );
    anyhow::ensure!(framed != toml, "the generated pipeline names its format");
    std::fs::write(out.join("pipeline.toml"), framed)?;
    Ok(records)
}
