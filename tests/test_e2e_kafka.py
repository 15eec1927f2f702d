"""Kafka in the loop: records produced to a real Kafka-protocol broker (tansu) by an independent client
(confluent-kafka / librdkafka), delivered by the local event source mapping (`floe poll`) to the real ingest
handler, committed by the compactor on a schedule, and read back through PyIceberg's GlueCatalog on moto.
Processes are crashed with SIGKILL mid-stream and mid-commit; the table must come out the same."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

import msk
from conftest import ROOT, floe_faults_path, floe_path
from stack import DEAD, TARGET, Stack, Tansu, committed_rows, freshness, percentiles, raw_pipeline
from test_slice import assert_table_is_exact

MAX_PAYLOAD = 6 * 1024 * 1024


class Reader:
    """What assert_table_is_exact needs: tables by name, through PyIceberg's Glue catalog on moto."""

    def __init__(self, moto):
        self.catalog = moto.pyiceberg_catalog()

    def table(self, name: str):
        return self.catalog.load_table(name)


def kafka_dataset(records_per_tp: int) -> msk.Dataset:
    """The oracle's records as a producer sends them. A Kafka record has raw bytes, so the oracle's "not valid
    base64" case (only possible in a hand-made event) arrives as those bytes and is rejected as JSON."""
    ds = msk.build(records_per_tp=records_per_tp)
    for r in ds.records:
        if r.bad_kind == "base64":
            r.value_b64 = base64.b64encode(r.value_b64.encode()).decode()
            r.bad_kind, r.bad_reason = "json", "invalid JSON"
    return ds


def produce(bootstrap: str, records: list[msk.Record]):
    """Produce in offset order per partition and check the broker assigned the offsets the oracle expects."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "max.in.flight.requests.per.connection": 1}
    )
    errors, wrong = [], []

    def delivered(err, msg, r: msk.Record):
        if err is not None:
            errors.append(err)
        elif (msg.partition(), msg.offset()) != (r.partition, r.offset):
            wrong.append((r.topic, r.partition, r.offset, msg.offset()))

    for r in records:
        producer.produce(
            r.topic,
            value=r.raw_value,
            key=r.key,
            partition=r.partition,
            timestamp=r.timestamp_ms,
            headers=r.headers,
            on_delivery=lambda err, msg, r=r: delivered(err, msg, r),
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "records left unsent"
    assert not errors, errors
    assert not wrong, f"the broker assigned other offsets than the oracle's: {wrong[:5]}"


@pytest.fixture
def stack(moto, tmp_path: Path):
    moto.reset()
    kafka = Tansu(tmp_path / "kafka")
    s = Stack(floe_path(), tmp_path, moto, kafka, pipeline=raw_pipeline(tmp_path), faults=floe_faults_path())
    try:
        s.create_topics()
        yield s
    finally:
        s.stop()
        kafka.stop()


def assert_mapping_semantics(invocations: list[dict], batch_size: int, positions: dict[str, int]):
    """What the event source mapping guarantees, checked from the outside on the invocation log."""
    by_tp: dict[str, list[dict]] = {}
    for inv in invocations:
        assert inv["records"] <= batch_size and inv["payload_bytes"] <= MAX_PAYLOAD, inv
        assert inv["last"] - inv["first"] + 1 == inv["records"], inv  # no gaps inside a batch
        by_tp.setdefault(f"{inv['topic']}:{inv['partition']}", []).append(inv)
    assert by_tp.keys() == positions.keys()
    for tp, invs in by_tp.items():
        # At most one invocation in flight per partition.
        spans = sorted((i["started_ms"], i["ended_ms"]) for i in invs)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{tp}: overlapping invocations"
        # Successful batches cover the partition in order; a failed batch is retried with the same records before
        # anything later is sent.
        expect = 0
        for inv in invs:
            assert inv["first"] == expect, (tp, inv)
            if inv["ok"]:
                expect = inv["last"] + 1
        assert expect == positions[tp], tp


def test_records_produced_to_kafka_land_exactly_once(stack, moto):
    ds = kafka_dataset(records_per_tp=600)  # 3,000 records over 5 partitions, ~4% malformed
    positions = ds.positions()
    # Three transient failures after the data files are written: the mapping retries the same records.
    stack.start_poller("--batch-size", "100", "--batching-window-ms", "200", "--fail-at", "ingest.after_write", "--fail-times", "3")
    stack.start_compactor(2)
    produce(stack.kafka.bootstrap, ds.records)
    status = stack.wait_committed(positions, timeout=180)

    assert_table_is_exact(Reader(moto), ds)
    assert status["tables"][TARGET]["rows"] == len(ds.good)
    assert status["tables"][DEAD]["rows"] == len(ds.bad)
    invocations = stack.invocations()
    assert_mapping_semantics(invocations, 100, positions)
    failed = [i for i in invocations if not i["ok"]]
    assert len(failed) == 3 and all("ingest.after_write" in i["error"] for i in failed)
    for f in failed:  # each retried with the same batch
        retry = next(i for i in invocations if i["ok"] and (i["topic"], i["partition"], i["first"]) == (f["topic"], f["partition"], f["first"]))
        assert (retry["last"], retry["payload_bytes"]) == (f["last"], f["payload_bytes"])
    assert stack.on_failure() == []


def test_kill_poller_and_compactor_mid_stream(stack, moto, tmp_path):
    ds = kafka_dataset(records_per_tp=600)
    positions = ds.positions()
    first_half = [r for r in ds.records if r.offset < 300]
    second_half = [r for r in ds.records if r.offset >= 300]
    never = tmp_path / "never"

    # A compactor that will be killed inside the commit: metadata written, catalog swap next.
    compactor = stack.start_compactor(2, "--pause-at", f"catalog.before_swap=@{never}", name="compactor-1")
    produce(stack.kafka.bootstrap, first_half)

    # Poller 1 dies at an arbitrary moment mid-stream.
    poller = stack.start_poller("--batch-size", "50", "--batching-window-ms", "100", name="poller-1")
    stack.wait_delivered(500, timeout=120, poller=poller)
    poller.kill()

    # Poller 2 dies after an invocation succeeded but before its position was stored: the batch is redelivered.
    poller = stack.start_poller("--batch-size", "50", "--batching-window-ms", "100", "--pause-at", f"esm.after_invoke=@{never}", name="poller-2")
    poller.wait_for("floe: paused at esm.after_invoke")
    poller.kill()

    compactor.wait_for("floe: paused at catalog.before_swap")
    compactor.kill()
    # A second compactor dies after its commit, before marking the files committed.
    compactor = stack.start_compactor(2, "--pause-at", f"compactor.after_commit=@{never}", name="compactor-2")
    compactor.wait_for("floe: paused at compactor.after_commit")
    compactor.kill()

    final = stack.start_compactor(2, name="compactor")
    stack.start_poller("--batch-size", "50", "--batching-window-ms", "100", name="poller")
    produce(stack.kafka.bootstrap, second_half)
    stack.wait_committed(positions, timeout=240)

    assert_table_is_exact(Reader(moto), ds)
    invocations = [i for i in stack.invocations() if i["ok"]]
    redelivered = [i for i in invocations if i["response"]["duplicates"] > 0]
    assert redelivered, "the batch in flight when poller-2 died was not redelivered"
    assert all(i["response"]["duplicates"] == i["records"] for i in redelivered)
    reports = [r for line in final.log().splitlines() if line.startswith("[") for r in json.loads(line)]
    assert sum(r["recovered"] for r in reports) > 0, "the last compactor did not recover compactor-2's commit"


def test_caught_up_waits_for_both_tables(stack, moto, tmp_path):
    """The two tables of a staging step are committed one after the other, so a step staged while a compactor
    run is between them lands in the dead-letter table first. Positions alone would then call the partition
    committed while its rows are missing from the target; `status` counts the step as staged until both have it."""
    ds = kafka_dataset(records_per_tp=60)
    positions = ds.positions()
    first, second = [r for r in ds.records if r.offset < 30], [r for r in ds.records if r.offset >= 30]
    assert any(r.bad_kind for r in second) and any(not r.bad_kind for r in second)

    poller = stack.start_poller("--batch-size", "100", "--batching-window-ms", "100")
    produce(stack.kafka.bootstrap, first)
    stack.wait_delivered(len(first), timeout=60, poller=poller)
    # One run (the next tick is an hour away) that lists the target's staged files, then pauses before committing.
    release = tmp_path / "release"
    compactor = stack.start_compactor(3600, "--pause-at", f"compactor.before_commit=@{release}", name="compactor-1")
    compactor.wait_for("floe: paused at compactor.before_commit")
    produce(stack.kafka.bootstrap, second)
    stack.wait_delivered(len(ds.records), timeout=60, poller=poller)
    release.touch()
    compactor.wait_for("\n[")  # the run's report

    status = stack.status()
    parts = status["partitions"]
    ahead = [k for k, v in positions.items() if parts[k]["committed"] == v]
    assert ahead, status  # the dead-letter table has the second half of some partitions ...
    assert status["tables"][TARGET]["rows"] == sum(1 for r in first if not r.bad_kind), status  # ... the target not
    assert status["tables"][TARGET]["staged_files"] > 0 and status["staged"] > 0, status

    compactor.kill()
    stack.start_compactor(2)
    stack.wait_committed(positions, timeout=120)
    assert_table_is_exact(Reader(moto), ds)


def test_through_the_lambda_invoke_api(stack, moto):
    """The mapping invokes the real floe-ingest binary (its lambda_runtime loop, settings, JSON logs and metrics)
    through the Lambda Invoke API that `cargo lambda watch` serves."""
    tools = os.environ.get("FLOE_TOOLS_BIN")
    if not tools or not (Path(tools) / "cargo-lambda").exists():
        pytest.skip("cargo-lambda not installed (make test installs it into .venv-tools)")
    ds = kafka_dataset(records_per_tp=200)
    endpoint = stack.start_lambda_api(Path(tools))
    stack.start_poller("--batch-size", "100", "--invoke-endpoint", endpoint, "--function-name", "_")
    stack.start_compactor(2)
    produce(stack.kafka.bootstrap, ds.records)
    stack.wait_committed(ds.positions(), timeout=180)
    assert_table_is_exact(Reader(moto), ds)
    function_log = next(p for p in stack.procs if p.name == "floe-ingest").log()
    metrics = [json.loads(line) for line in function_log.splitlines() if '"CloudWatchMetrics"' in line]
    assert sum(m["RecordsIn"] for m in metrics) >= len(ds.records)
    assert len(metrics) == sum(1 for i in stack.invocations() if i["ok"])


def test_starting_positions(stack, tmp_path):
    ds = kafka_dataset(records_per_tp=40)
    early = [r for r in ds.records if r.offset < 20]
    late = [r for r in ds.records if r.offset >= 20]
    produce(stack.kafka.bootstrap, early)

    def delivered(esm_dir: Path) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for inv in stack.invocations(esm_dir):
            if inv["ok"]:
                out.setdefault(f"{inv['topic']}:{inv['partition']}", set()).update(range(inv["first"], inv["last"] + 1))
        return out

    def run(name: str, *args: str) -> tuple:
        esm_dir = tmp_path / name
        return stack.start_poller(*args, name=name, esm_dir=esm_dir), esm_dir

    # AT_TIMESTAMP: from the first record at or after the timestamp of record offset 10, per partition.
    cut = {(r.topic, r.partition): r.timestamp_ms for r in ds.records if r.offset == 10}
    at = min(cut.values())
    expected_at = {f"{r.topic}:{r.partition}" for r in early}
    expected_at = {tp: {r.offset for r in early if f"{r.topic}:{r.partition}" == tp and r.timestamp_ms >= at} for tp in expected_at}
    poller, at_dir = run("poller-at", "--starting-position", "AT_TIMESTAMP", "--starting-timestamp-ms", str(at))
    deadline = time.time() + 60
    while delivered(at_dir) != expected_at:
        assert time.time() < deadline, (delivered(at_dir), expected_at)
        time.sleep(0.2)

    # LATEST: nothing produced before the mapping first saw the partition, everything after.
    poller, latest_dir = run("poller-latest", "--starting-position", "LATEST")
    deadline = time.time() + 60
    while len(stack.stored_positions(latest_dir)) < 5:
        assert time.time() < deadline, poller.log()[-2000:]
        time.sleep(0.2)
    assert set(stack.stored_positions(latest_dir).values()) == {20}
    produce(stack.kafka.bootstrap, late)
    expected_latest = {tp: set(range(20, 40)) for tp in expected_at}
    deadline = time.time() + 60
    while delivered(latest_dir) != expected_latest:
        assert time.time() < deadline, (delivered(latest_dir), expected_latest)
        time.sleep(0.2)

    # TRIM_HORIZON: everything.
    poller, all_dir = run("poller-all", "--starting-position", "TRIM_HORIZON")
    expected_all = {tp: set(range(40)) for tp in expected_at}
    deadline = time.time() + 60
    while delivered(all_dir) != expected_all:
        assert time.time() < deadline, (delivered(all_dir), expected_all)
        time.sleep(0.2)


def test_payload_cap_window_and_on_failure_destination(stack, tmp_path):
    """Batches close at the payload limit (a small one here) and at the window; a record too large for any
    payload, and a batch that exhausts its retries, go to the on-failure destination with their offsets."""
    from confluent_kafka import Producer

    cap = 20_000
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap, "linger.ms": 0})
    value = json.dumps({"event_id": "x", "pad": "p" * 900}).encode()
    for _ in range(60):
        producer.produce("clicks", value=value, partition=0)
    producer.produce("clicks", value=b"{" + b" " * 30_000 + b"}", partition=0)  # offset 60: too large
    producer.produce("clicks", value=value, partition=0)
    assert producer.flush(30) == 0

    poller = stack.start_poller(
        "--batch-size", "10000", "--max-payload-bytes", str(cap), "--batching-window-ms", "1000",
        # Every invocation fails at the handler: after one retry each batch goes to the on-failure destination.
        "--fail-at", "ingest.after_write", "--max-retry-attempts", "1",
    )
    deadline = time.time() + 60
    while sum(f["last_offset"] - f["first_offset"] + 1 for f in stack.on_failure()) < 62:
        assert time.time() < deadline and poller.alive(), poller.log()[-3000:]
        time.sleep(0.2)
    invocations = stack.invocations()
    assert invocations and all(i["payload_bytes"] <= cap for i in invocations)
    assert max(i["records"] for i in invocations) >= 10  # filled up to the cap, not one record at a time
    assert all(i["attempt"] <= 2 for i in invocations)
    failures = stack.on_failure()
    covered = sorted(o for f in failures for o in range(f["first_offset"], f["last_offset"] + 1))
    assert covered == list(range(62)), covered
    too_large = [f for f in failures if f["first_offset"] == 60]
    assert too_large and "payload limit" in too_large[0]["reason"]
    assert stack.stored_positions()["clicks:0"] == 62

    # The batching window: records arriving within it travel in one invocation.
    poller.stop()
    before = len(stack.invocations())
    stack.start_poller("--batch-size", "100", "--batching-window-ms", "1500", name="poller-window")
    time.sleep(1)  # the poller is waiting on an empty partition
    for _ in range(5):
        producer.produce("clicks", value=value, partition=1)
        producer.flush(10)
        time.sleep(0.1)
    deadline = time.time() + 30
    while len([i for i in stack.invocations()[before:] if i["ok"] and i["partition"] == 1]) < 1:
        assert time.time() < deadline
        time.sleep(0.1)
    windowed = [i for i in stack.invocations()[before:] if i["partition"] == 1]
    assert windowed[0]["records"] == 5, windowed


@pytest.mark.skipif(os.environ.get("FLOE_SKIP_FRESHNESS") == "1", reason="FLOE_SKIP_FRESHNESS=1")
def test_freshness_with_a_one_minute_compactor(stack, moto):
    """Produce → queryable latency with the template's default schedule (rate(1 minute)): a steady stream for a
    little over two schedule periods. Reported in .floe/freshness.json; bounded by the schedule plus slack."""
    stack.start_poller("--batch-size", "100", "--batching-window-ms", "500")
    compactor = stack.start_compactor(60)
    started = time.time()
    producer = stack.start_producer(13_000, 100, "--stamp-now", "--chunk", "20")
    while producer.alive():
        time.sleep(1)
    assert producer.popen.returncode == 0, producer.log()
    summary = json.loads(producer.log().strip().splitlines()[-1])
    produced, malformed = summary["produced"], summary["malformed"]
    deadline = time.time() + 150
    while True:
        s = stack.status()
        if committed_rows(s) >= produced:
            break
        assert time.time() < deadline and compactor.alive(), s
        time.sleep(2)
    table = moto.pyiceberg_catalog().load_table(TARGET)
    latencies = freshness(table)
    fresh = percentiles(latencies)
    report = {"compact_every_s": 60, "rate_per_s": 100, "duration_s": round(time.time() - started), **fresh}
    out = ROOT / ".floe"
    out.mkdir(exist_ok=True)
    (out / "freshness.json").write_text(json.dumps(report) + "\n")
    assert fresh["rows"] == produced - malformed
    assert min(latencies) >= 0
    # Each row waits at most one schedule period plus ingest and commit time.
    assert fresh["max_s"] <= 60 + 20, fresh
    assert 0 < fresh["p50_s"] <= 60, fresh


EVO_V1 = """
name = "evo"
[source]
topics = ["evo"]
[table]
namespace = "kafka_evo"
name = "orders"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "user"
type = "struct<name: string>"
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
from = "@timestamp"
"""
# The edit: a nested field, and the record value kept as received.
EVO_V2 = EVO_V1.replace("struct<name: string>", "struct<name: string, age: int>") + (
    '[[table.columns]]\nname = "raw"\ntype = "string"\nfrom = "@value"\n'
)


def produce_values(bootstrap: str, topic: str, values: list[tuple[int, dict]], first_offsets: dict[int, int]):
    """Produce (partition, value) pairs; the broker must assign consecutive offsets from `first_offsets`."""
    records = []
    for partition, value in values:
        offset = first_offsets[partition]
        first_offsets[partition] += 1
        raw = json.dumps(value).encode()
        ts = 1_795_000_000_000 + value["id"]
        records.append(msk.Record(topic, partition, offset, ts, None, base64.b64encode(raw).decode(), []))
    produce(bootstrap, records)


def test_a_pipeline_edit_mid_stream_evolves_the_table_without_losing_a_position(moto, tmp_path):
    """v1 records flow through the poller and a scheduled compactor; the pipeline file gains a nested field and a
    raw-value column; ingest and compactor are redeployed (stopped and started on the new file, the broker and
    the poller's stored positions untouched); v2 records flow → the table is exact, old rows null in the new
    columns, and no record was delivered twice or skipped."""
    moto.reset()
    kafka = Tansu(tmp_path / "kafka")
    v1, v2 = tmp_path / "v1.toml", tmp_path / "v2.toml"
    v1.write_text(EVO_V1)
    v2.write_text(EVO_V2)
    stack = Stack(floe_path(), tmp_path, moto, kafka, pipeline=v1, faults=floe_faults_path())
    try:
        stack.create_topics(["evo:2"])
        offsets = {0: 0, 1: 0}
        # Named apart from the v2 processes: wait_committed fails fast only when a process named poller/compactor dies.
        poller = stack.start_poller("--batch-size", "40", "--batching-window-ms", "100", name="poller-v1")
        compactor = stack.start_compactor(1, name="compactor-v1")
        old = [(i % 2, {"id": i, "user": {"name": f"u{i}", "age": 99}}) for i in range(0, 150)]
        produce_values(kafka.bootstrap, "evo", old, offsets)
        stack.wait_committed({f"evo:{p}": n for p, n in offsets.items()}, timeout=180)
        poller.stop()
        compactor.stop()
        before = stack.invocations()

        stack.pipeline = v2
        stack.start_poller("--batch-size", "40", "--batching-window-ms", "100")
        stack.start_compactor(1)
        new = [(i % 2, {"id": i, "user": {"name": f"u{i}", "age": i % 90}}) for i in range(150, 300)]
        produce_values(kafka.bootstrap, "evo", new, offsets)
        stack.wait_committed({f"evo:{p}": n for p, n in offsets.items()}, timeout=180)

        table = Reader(moto).table("kafka_evo.orders")
        got = {r["id"]: r for r in table.scan().to_arrow().to_pylist()}
        assert len(got) == 300
        for _, v in old:  # v1 knew no `age` (the producer sent one) and kept no raw value
            assert (got[v["id"]]["user"], got[v["id"]]["raw"]) == ({"name": v["user"]["name"], "age": None}, None)
        for _, v in new:
            assert got[v["id"]]["user"] == v["user"] and json.loads(got[v["id"]]["raw"]) == v
        # Every offset delivered successfully exactly once, across the redeployment.
        delivered = sorted(
            (i["partition"], o) for i in stack.invocations() if i["ok"] for o in range(i["first"], i["last"] + 1)
        )
        assert delivered == sorted((p, o) for p, n in offsets.items() for o in range(n))
        assert len(stack.invocations()) > len(before)
        _, columns = moto.glue_table("kafka_evo", "orders")
        assert columns["user"] == "struct<name:string,age:int>" and columns["raw"] == "string", columns
    finally:
        stack.stop()
        kafka.stop()


CDC = """
name = "cdc"
[source]
topics = ["dbserver1.inventory.customers"]
changes = "debezium"
[table]
namespace = "kafka_cdc"
name = "customers"
primary_key = ["id"]
order_by = "lsn"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "email"
type = "string"
required = true
[[table.columns]]
name = "lsn"
type = "long"
from = "@change.source.lsn"
"""


def test_debezium_changes_produced_to_kafka_apply_exactly(moto, tmp_path):
    """A Debezium-shaped change stream (JSON converter without schemas: snapshot reads, creates, updates, deletes
    each followed by its tombstone, keys `{"id": …}`) produced by confluent-kafka to two partitions, delivered by
    the poller and committed by a scheduled compactor, is the reference table: every key's last change applied."""
    from confluent_kafka import Producer

    moto.reset()
    kafka = Tansu(tmp_path / "kafka")
    pipeline = tmp_path / "cdc.toml"
    pipeline.write_text(CDC)
    stack = Stack(floe_path(), tmp_path, moto, kafka, pipeline=pipeline, faults=floe_faults_path())
    try:
        topic = "dbserver1.inventory.customers"
        stack.create_topics([f"{topic}:2"])
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 5})
        reference: dict[int, tuple] = {}
        counts = {0: 0, 1: 0}
        lsn = 1000
        rng = __import__("random").Random(5)

        def send(key: int, value: dict | None):
            partition = key % 2
            producer.produce(topic, key=json.dumps({"id": key}).encode(),
                             value=None if value is None else json.dumps(value).encode(), partition=partition)
            counts[partition] += 1

        for step in range(600):
            key = rng.randrange(80)
            lsn += 1
            source = {"connector": "postgresql", "db": "inventory", "table": "customers", "lsn": lsn}
            row = {"id": key, "first_name": "x", "email": f"e{step}@acme.com"}
            if key in reference and rng.random() < 0.3:
                send(key, {"before": {"id": key}, "after": None, "op": "d", "source": source, "ts_ms": step})
                send(key, None)  # the tombstone Debezium sends after a delete
                del reference[key]
            else:
                op = "r" if step < 50 else ("u" if key in reference else "c")
                send(key, {"before": None, "after": row, "op": op, "source": source, "ts_ms": step})
                reference[key] = (key, row["email"], lsn)
            producer.poll(0)
        assert producer.flush(60) == 0
        stack.start_poller("--batch-size", "70", "--batching-window-ms", "100")
        stack.start_compactor(1)
        stack.wait_committed({f"{topic}:{p}": n for p, n in counts.items()}, timeout=180)
        table = Reader(moto).table("kafka_cdc.customers")
        got = sorted((r["id"], r["email"], r["lsn"]) for r in table.scan().to_arrow().to_pylist())
        assert got == sorted(reference.values())
    finally:
        stack.stop()
        kafka.stop()


@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_registry_formats_produced_to_kafka_land_exactly(moto, tmp_path, fmt):
    """Avro or Protobuf values produced to tansu by confluent-kafka with its own AvroSerializer or
    ProtobufSerializer against the local registry (schema v1, then v2 adding a nested record mid-stream, and
    values without the serializer), delivered by the poller and committed by a scheduled compactor: every framed
    value is a row, the others dead letters."""
    from confluent_kafka import Producer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from test_registry import COLUMNS, V1, V2, Registry, expected_row, order, pipeline_text, table_rows

    moto.reset()
    registry = Registry(tmp_path)
    registry.start()
    kafka = Tansu(tmp_path / "kafka")
    pipeline = tmp_path / "orders.toml"
    pipeline.write_text(pipeline_text(f'format = "{fmt}"\nregistry = {{ url = "{registry.url}" }}', COLUMNS))
    stack = Stack(floe_path(), tmp_path, moto, kafka, pipeline=pipeline, faults=floe_faults_path())
    try:
        stack.create_topics(["orders:2"])
        ctx = SerializationContext("orders", MessageField.VALUE)
        if fmt == "avro":
            from confluent_kafka.schema_registry.avro import AvroSerializer

            v1, v2 = AvroSerializer(registry.client(), json.dumps(V1)), AvroSerializer(registry.client(), json.dumps(V2))
        else:
            from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
            from test_registry_protobuf import V1 as P1, V2 as P2, message_class, to_message

            c1, c2 = message_class(P1, tmp_path / "v1"), message_class(P2, tmp_path / "v2")
            s1, s2 = ProtobufSerializer(c1, registry.client(), {}), ProtobufSerializer(c2, registry.client(), {})

            def v1(o, c):
                return s1(to_message(c1, o), c)

            def v2(o, c):
                return s2(to_message(c2, o), c)
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 5})
        orders, counts, bad = [], {0: 0, 1: 0}, 0
        for i in range(1, 401):
            o = order(i, 2 if i > 200 else 1)
            partition = i % 2
            if i % 50 == 0:  # a producer without the serializer
                producer.produce("orders", value=json.dumps({"id": i}).encode(), partition=partition)
                bad += 1
            else:
                producer.produce("orders", value=(v2 if i > 200 else v1)(o, ctx), partition=partition)
                orders.append(o)
            counts[partition] += 1
            producer.poll(0)
        assert producer.flush(60) == 0
        stack.start_poller("--batch-size", "60", "--batching-window-ms", "100")
        stack.start_compactor(1)
        stack.wait_committed({f"orders:{p}": n for p, n in counts.items()}, timeout=180)
        reader = Reader(moto)
        assert table_rows(reader) == {expected_row(o) for o in orders}
        dead = reader.table("shop.orders_dead_letters").scan().to_arrow().to_pylist()
        assert len(dead) == bad and {d["error_kind"] for d in dead} == {"framing"}
    finally:
        stack.stop()
        kafka.stop()
        registry.stop()


def test_registry_topics_routed_through_kafka_land_exactly_in_their_own_tables(moto, tmp_path):
    """One deployment of four pipelines, one topic each, produced to tansu by independent serializers: Avro
    (confluent-kafka's AvroSerializer, v1 then v2 adding a nested record mid-stream, plus a value without the
    framing, an unknown schema id and a truncated body), Protobuf (ProtobufSerializer, v1 then v2), JSON Schema
    (JSONSerializer) and Glue-framed Avro (the aws-glue-schema-registry package against moto's Glue). The local
    mapping delivers them all to one ingest handler, a scheduled compactor commits every pipeline; each table holds
    exactly its records, the bad ones are its dead letters."""
    from aws_schema_registry import DataAndSchema, SchemaRegistryClient as GlueClient
    from aws_schema_registry.avro import AvroSchema
    from aws_schema_registry.serde import KafkaSerializer
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from test_registry import COLUMNS, JSON_COLUMNS, JSON_SCHEMA, V1, V2, Registry, expected_row, order
    from test_registry_protobuf import V1 as P1, V2 as P2, message_class, to_message
    from test_routing import order_rows, pipeline

    moto.reset()
    registry = Registry(tmp_path)
    registry.start()
    kafka = Tansu(tmp_path / "kafka")
    url = f'registry = {{ url = "{registry.url}" }}'
    files = {
        "avro": pipeline("avro", ["orders-avro"], f'format = "avro"\n{url}', "shop.orders_avro", COLUMNS),
        "proto": pipeline("proto", ["orders-proto"], f'format = "protobuf"\n{url}', "shop.orders_proto", COLUMNS),
        "json": pipeline("json", ["orders-json"], f'format = "json-schema"\n{url}', "shop.orders_json", JSON_COLUMNS),
        "glue": pipeline("glue", ["orders-glue"], 'format = "avro"\nframing = "glue"\nregistry = { glue = "floe-e2e" }',
                         "shop.orders_glue", COLUMNS),
    }
    pipelines = []
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
        pipelines.append(tmp_path / f"{name}.toml")
    stack = Stack(floe_path(), tmp_path, moto, kafka, pipeline=pipelines, faults=floe_faults_path())
    try:
        stack.create_topics(["orders-avro:2", "orders-proto:2", "orders-json:1", "orders-glue:1"])
        glue = moto.client("glue")
        glue.create_registry(RegistryName="floe-e2e")
        glue_serializer = KafkaSerializer(GlueClient(glue, registry_name="floe-e2e"), compatibility_mode="BACKWARD")
        client = registry.client()
        avro1, avro2 = AvroSerializer(client, json.dumps(V1)), AvroSerializer(client, json.dumps(V2))
        c1, c2 = message_class(P1, tmp_path / "p1"), message_class(P2, tmp_path / "p2")
        proto1, proto2 = ProtobufSerializer(c1, client, {}), ProtobufSerializer(c2, client, {})
        json_serializer = JSONSerializer(json.dumps(JSON_SCHEMA), client)
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 5})
        counts: dict[str, int] = {}
        want: dict[str, list] = {"avro": [], "proto": [], "json": [], "glue": []}

        def send(topic: str, partition: int, value: bytes):
            producer.produce(topic, value=value, partition=partition)
            counts[f"{topic}:{partition}"] = counts.get(f"{topic}:{partition}", 0) + 1
            producer.poll(0)

        for i in range(1, 121):
            o = order(i, 2 if i > 60 else 1)
            ctx = SerializationContext("orders-avro", MessageField.VALUE)
            send("orders-avro", i % 2, (avro2 if i > 60 else avro1)(o, ctx))
            want["avro"].append(o)
            ctx = SerializationContext("orders-proto", MessageField.VALUE)
            send("orders-proto", i % 2, (proto2 if i > 60 else proto1)(to_message(c2 if i > 60 else c1, o), ctx))
            want["proto"].append(o)
            doc = {"id": i, "item": f"item-{i}", "tags": [f"t{j}" for j in range(i % 3)]}
            send("orders-json", 0, json_serializer(doc, SerializationContext("orders-json", MessageField.VALUE)))
            want["json"].append(doc)
            if i <= 40:  # v1, then v2 from the 21st
                g = order(i, 2 if i > 20 else 1)
                schema = AvroSchema(json.dumps(V2 if i > 20 else V1))
                send("orders-glue", 0, glue_serializer.serialize("orders-glue", DataAndSchema(g, schema)))
                want["glue"].append(g)
        good = avro1(order(999), SerializationContext("orders-avro", MessageField.VALUE))
        bad = {b'{"id": 1}': "framing", b"\x00\x00\x00\x03\xe7" + good[5:]: "unknown_schema", good[:-3]: "avro"}
        for value in bad:
            send("orders-avro", 0, value)
        assert producer.flush(60) == 0
        stack.start_poller("--batch-size", "50", "--batching-window-ms", "100")
        stack.start_compactor(1)
        stack.wait_committed({k: n for k, n in counts.items()}, timeout=240)
        reader = Reader(moto)
        assert order_rows(reader, "shop.orders_avro") == {expected_row(o) for o in want["avro"]}
        assert order_rows(reader, "shop.orders_proto") == {expected_row(o) for o in want["proto"]}
        assert order_rows(reader, "shop.orders_glue") == {expected_row(o) for o in want["glue"]}
        rows = reader.table("shop.orders_json").scan().to_arrow().to_pylist()
        assert sorted((r["id"], r["item"], tuple(r["tags"] or ())) for r in rows) == sorted(
            (d["id"], d["item"], tuple(d["tags"])) for d in want["json"]
        )
        dead = reader.table("shop.orders_avro_dead_letters").scan().to_arrow().to_pylist()
        assert sorted(d["error_kind"] for d in dead) == sorted(bad.values()), dead
        for name in ("proto", "json", "glue"):
            assert len(reader.table(f"shop.orders_{name}_dead_letters").scan().to_arrow()) == 0, name
    finally:
        stack.stop()
        kafka.stop()
        registry.stop()
