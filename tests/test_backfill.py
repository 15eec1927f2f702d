"""Backfills (issue 20): a topic's retained history read by floe's own Kafka client, and an archive of objects, loaded
through the ingest path under backfill fences and committed by the compactor. Records come from an independent
producer (confluent-kafka) to a real broker (tansu); tables are read back with PyIceberg. Each split is loaded once:
after a kill -9, a re-run, and alongside the live event source mapping."""

from __future__ import annotations

import gzip
import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import msk
from conftest import Floe
from stack import DEAD, TARGET, Stack, raw_pipeline
from test_e2e_kafka import Reader, kafka_dataset, produce, stack  # noqa: F401 (stack: the Kafka stack fixture)
from test_slice import assert_table_is_exact, normalise, rows_by_id


def backfill_args(stack: Stack, *extra: str) -> list[str]:
    return ["backfill", *stack._common(), "--brokers", stack.kafka.bootstrap, *extra]


def snapshots(moto) -> int:
    return len(list(Reader(moto).table(TARGET).snapshots()))


def test_a_topics_history_loads_exactly_once_through_a_kill_and_a_rerun(stack, moto, tmp_path):
    ds = kafka_dataset(records_per_tp=600)  # 3,000 records over 5 partitions, ~4% malformed
    produce(stack.kafka.bootstrap, ds.records)

    plan = json.loads(subprocess_out(stack, *backfill_args(stack, "--dry-run")))
    assert sorted((s["source"]["topic"], s["source"]["partition"], s["source"]["to"]) for s in plan["splits"]) == sorted(
        (tp.split(":")[0], int(tp.split(":")[1]), n) for tp, n in ds.positions().items()
    ), "one split per partition, ending at the high watermark (no live stream yet)"

    # kill -9 while the splits are being loaded: some chunks are staged, the rest not.
    never = tmp_path / "never"
    first = stack.start("backfill-1", *backfill_args(stack, "--parallel", "2", "--pause-at", f"ingest.after_stage=@{never}"))
    first.wait_for("paused at ingest.after_stage", timeout=120)
    first.kill()

    summary = stack.run(*backfill_args(stack))
    assert summary["failed"] == [] and summary["already_loaded"] >= 1, summary
    assert summary["already_loaded"] + summary["loaded"] == 5, summary
    assert 0 < summary["records"] < len(ds.records), "the second run resumed where the first stopped"
    stack.run("compact", *stack._common())
    assert_table_is_exact(Reader(moto), ds)

    # Running the same backfill again loads nothing and commits nothing.
    before = snapshots(moto)
    again = stack.run(*backfill_args(stack))
    assert (again["already_loaded"], again["records"], again["loaded"]) == (5, 0, 0), again
    stack.run("compact", *stack._common())
    assert snapshots(moto) == before
    assert_table_is_exact(Reader(moto), ds)


def subprocess_out(stack: Stack, *args: str) -> str:
    import subprocess

    out = subprocess.run([stack.bin, *args], capture_output=True, text=True, env=stack.env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_backfill_alongside_the_live_mapping_leaves_no_gap_and_no_duplicate(stack, moto):
    ds = kafka_dataset(records_per_tp=600)
    history = [r for r in ds.records if r.offset < 360]
    live_first = [r for r in ds.records if 360 <= r.offset < 480]
    live_rest = [r for r in ds.records if r.offset >= 480]
    produce(stack.kafka.bootstrap, history)

    # The live mapping starts at LATEST (360 on every partition) and delivers a first part of the stream.
    poller = stack.start_poller("--starting-position", "LATEST", "--batch-size", "50", "--batching-window-ms", "100")
    deadline = time.time() + 60
    while len(stack.stored_positions()) < 5:
        assert time.time() < deadline, poller.log()[-2000:]
        time.sleep(0.2)
    stack.start_compactor(2)
    produce(stack.kafka.bootstrap, live_first)
    stack.wait_committed({tp: 480 for tp in ds.positions()}, timeout=120)

    # The backfill runs while the rest of the stream arrives: it ends where live ingest started.
    backfill = stack.start("backfill", *backfill_args(stack, "--parallel", "3"))
    produce(stack.kafka.bootstrap, live_rest)
    backfill.popen.wait(timeout=300)
    assert backfill.popen.returncode == 0, backfill.log()[-3000:]
    summary = json.loads(backfill.log().strip().splitlines()[-1])
    assert (summary["loaded"], summary["records"]) == (5, len(history)), summary
    stack.wait_committed(ds.positions(), timeout=180)

    stack.stop()
    stack.run("compact", *stack._common())
    assert_table_is_exact(Reader(moto), ds)


def archive_objects(ds: msk.Dataset) -> tuple[dict[str, bytes], dict[str, dict], dict[tuple[str, int], str]]:
    """An export of the dataset's good records: JSON lines, gzip'd JSON lines and Parquet, plus two bad lines and a
    corrupt object. Returns the objects by name, the expected rows by event id and the expected dead letters
    (object name, offset) → error kind."""
    good = ds.good
    values = [json.loads(r.raw_value) for r in good]
    third = len(values) // 3
    lines = [json.dumps(v) for v in values[:third]]
    lines[10:10] = ["not json", json.dumps({"event_id": "x-1", "type": "click"})]  # lines 11 and 12
    objects = {
        "2025/part-0.jsonl": ("\n".join(lines) + "\n").encode(),
        "2025/part-1.jsonl.gz": gzip.compress(("\n".join(json.dumps(v) for v in values[third : 2 * third]) + "\n").encode()),
        "2025/part-3.jsonl.gz": b"this was never gzip",
        "2025/_SUCCESS": b"",
    }
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(values[2 * third :]), parquet)
    objects["2025/part-2.parquet"] = parquet.getvalue()
    rows = {r.expected_row["event_id"]: r.expected_row for r in good}
    dead = {("2025/part-0.jsonl", 11): "json", ("2025/part-0.jsonl", 12): "schema", ("2025/part-3.jsonl.gz", 0): "archive"}
    return objects, rows, dead


@pytest.fixture(params=["embedded", "aws"])
def raw_floe(request, tmp_path: Path) -> Floe:
    home = tmp_path / "home"
    home.mkdir()
    pipeline = raw_pipeline(tmp_path)
    if request.param == "aws":
        moto = request.getfixturevalue("moto")
        moto.reset()
        return Floe(home, moto, pipeline=pipeline)
    return Floe(home, pipeline=pipeline)


def test_an_archive_loads_once_with_its_corrupt_object_dead_lettered(raw_floe, tmp_path):
    ds = msk.build(records_per_tp=120)
    objects, rows, dead = archive_objects(ds)
    if raw_floe.moto:
        from aws_stack import BUCKET

        for name, body in objects.items():
            raw_floe.moto.client("s3").put_object(Bucket=BUCKET, Key=f"exports/{name}", Body=body)
        archive = f"s3://{BUCKET}/exports/"
    else:
        root = tmp_path / "exports"
        for name, body in objects.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(body)
        archive = f"file://{root}/"

    plan = raw_floe.backfill("--archive", archive, "--dry-run")
    assert len(plan["splits"]) == 4 and any("1 objects skipped" in n for n in plan["notes"]), plan
    summary = raw_floe.backfill("--archive", archive, "--parallel", "2")
    assert (summary["loaded"], summary["failed"], summary["dead_letters"]) == (4, [], 3), summary
    raw_floe.compact()

    got = rows_by_id(raw_floe.table(TARGET))
    assert got.keys() == rows.keys()
    for event_id, want in rows.items():
        row = normalise(got[event_id])
        # An archive keeps no Kafka metadata: the record's "topic" is its object, its offset the line or row.
        assert row.pop("source_topic").startswith(archive + "2025/part-"), event_id
        assert row.pop("source_offset") >= 1 and row.pop("kafka_time") is not None
        for key in ("source_partition", "kafka_key", "trace_id"):
            row.pop(key)
            want = {k: v for k, v in want.items() if k != key}
        assert row == {k: v for k, v in want.items() if k not in ("source_topic", "source_offset", "kafka_time")}, event_id
    first = {r["event_id"]: r["source_offset"] for r in got.values() if r["source_topic"].endswith("part-0.jsonl")}
    assert sorted(first.values()) == [n for n in range(1, len(first) + 3) if n not in (11, 12)], "line numbers"
    letters = raw_floe.table(DEAD).scan().to_arrow().to_pylist()
    assert {(d["topic"].removeprefix(archive), d["offset"]): d["error_kind"] for d in letters} == dead
    corrupt = next(d for d in letters if d["error_kind"] == "archive")
    assert "part-3.jsonl.gz" in corrupt["reason"] and "gzip" in corrupt["reason"]

    again = raw_floe.backfill("--archive", archive)
    assert (again["already_loaded"], again["loaded"], again["records"]) == (4, 0, 0), again
