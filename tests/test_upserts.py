"""Change streams (upserts and CDC deletes by primary key) on both backends, read back by PyIceberg, which applies
the position deletes floe writes: a brute-force reference (a dict by primary key with every change applied in
Kafka order) must equal the table after seeded streams of inserts, updates, deletes and re-inserts over several
partitions — with redeliveries, overlapping batches, rewrites in between and a crash at every step of ingest and
the compactor; real Debezium envelopes (create, snapshot read, update, delete, tombstone) land as rows; bad
changes are dead letters with their reason; 100,000 distinct keys change in one commit."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

TABLE = "cdc.users"
DEAD = "cdc.users_dead_letters"
START_MS = 1_795_000_000_000
FIXTURES = Path(__file__).resolve().parent.parent / "shared/floe-core/tests/fixtures/debezium"

UPSERT = """
name = "cdc"
[source]
topics = ["users"]
changes = "upsert"
[table]
namespace = "cdc"
name = "users"
primary_key = ["id"]
properties = { "floe.rewrite.min-input-files" = "3" }
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "name"
type = "string"
[[table.columns]]
name = "region"
type = "string"
required = true
[[table.partition]]
column = "region"
transform = "identity"
"""


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def event(records: list[tuple[int, int, bytes | None, bytes | None]], topic: str = "users") -> dict:
    """An MSK event of (partition, offset, key, value) records."""
    out: dict[str, list] = {}
    for partition, offset, key, value in records:
        out.setdefault(f"{topic}-{partition}", []).append(
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "timestamp": START_MS + offset,
                "timestampType": "CREATE_TIME",
                "key": b64(key),
                "value": b64(value),
                "headers": [],
            }
        )
    return {"eventSource": "aws:kafka", "eventSourceArn": f"arn:{topic}", "records": out}


class Stream:
    """A seeded change stream over `keys` keys in 3 partitions (a key stays in its partition) and the reference
    table it must produce."""

    def __init__(self, seed: int, keys: int = 240):
        self.rng = random.Random(seed)
        self.keys = keys
        self.offsets = [0, 0, 0]
        self.reference: dict[int, tuple[int, str, str]] = {}
        self.log: list[tuple[int, int, bytes | None, bytes | None]] = []

    def batch(self, n: int) -> list[tuple[int, int, bytes | None, bytes | None]]:
        records = []
        for _ in range(n):
            key = self.rng.randrange(self.keys)
            partition = key % 3
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            if self.rng.random() < 0.25:
                self.reference.pop(key, None)
                value = None
            else:
                # The region moves rows between Iceberg partitions: deletes follow the row's old file.
                row = (key, f"n{partition}-{offset}", self.rng.choice(["eu", "us", "ap"]))
                self.reference[key] = row
                value = json.dumps({"id": row[0], "name": row[1], "region": row[2]}).encode()
            records.append((partition, offset, str(key).encode(), value))
        self.log.extend(records)
        return records

    def expected(self) -> list[tuple]:
        return sorted(self.reference.values())


def rows(floe) -> list[tuple]:
    table = floe.table(TABLE)
    return sorted((r["id"], r["name"], r["region"]) for r in table.scan().to_arrow().to_pylist())


def key_files(floe) -> set[str]:
    return {p for p in floe.objects() if p.startswith("cdc/users/changes/")}


def use(floe, tmp_path, text: str = UPSERT):
    path = tmp_path / "cdc.toml"
    path.write_text(text)
    floe.pipeline = path


def test_a_seeded_change_stream_equals_the_reference(floe, tmp_path):
    use(floe, tmp_path)
    stream = Stream(seed=18)
    replaced = superseded = 0
    for round_ in range(8):
        batch = stream.batch(150)
        floe.ingest([event(batch)])
        if round_ == 2:
            floe.ingest([event(batch)])  # redelivered
            floe.ingest([event(stream.log[-260:])])  # overlapping the last two batches
        if round_ % 2 == 1:
            reports = floe.compact()
            assert rows(floe) == stream.expected(), f"after round {round_}"
            stats = reports[TABLE]["change_stats"]
            replaced, superseded = replaced + stats["replaced"], superseded + stats["superseded"]
    assert replaced > 0 and superseded > 0, "rows replaced in the table and within a commit"
    assert rows(floe) == stream.expected()
    assert key_files(floe) == set(), "key files are deleted once their commit is durable"
    table = floe.table(TABLE)
    operations = [s.summary.operation.value for s in table.snapshots()]
    assert "overwrite" in operations and "replace" in operations, operations
    # Rewrites between the change commits applied the deletes: the table carries fewer than it received.
    received = sum(int(s.summary.get("added-position-deletes") or 0) for s in table.snapshots())
    assert received > 0 and int(table.current_snapshot().summary.get("total-position-deletes") or 0) < received


# (phase, failpoint, times, AWS only): a crash at each step of ingest and of the compactor's change commit,
# rewrite and cleanup; a conflict absorbed by re-planning.
CRASHES = [
    ("ingest", "ingest.after_write", None, False),
    ("ingest", "ingest.after_stage", None, False),
    ("compact", "compactor.before_commit", None, False),
    ("compact", "catalog.before_swap", None, True),
    ("compact", "compactor.after_commit", None, False),
    ("compact", "compactor.during_delete", None, False),
    ("compact", "compactor.before_mark", None, False),
    ("rewrite", "rewrite.before_commit", None, False),
    ("rewrite", "rewrite.after_commit", None, False),
    ("compact", "catalog.conflict", 2, False),
]


@pytest.mark.parametrize("phase,fail_at,times,aws_only", CRASHES, ids=[c[1] for c in CRASHES])
def test_a_crash_at_any_step_neither_loses_nor_repeats_a_change(floe, tmp_path, phase, fail_at, times, aws_only):
    if aws_only and floe.backend != "aws":
        pytest.skip("the embedded catalog writes and swaps in one call")
    use(floe, tmp_path)
    stream = Stream(seed=hash(fail_at) % 1000)
    fired = False
    for round_ in range(7):
        batch = stream.batch(90)
        if phase == "ingest" and round_ == 3:
            proc = floe.ingest([event(batch)], fail_at=fail_at, check=False)
            assert proc.returncode != 0 and fail_at in proc.stderr, proc.stderr
            fired = True
        floe.ingest([event(batch)])  # the mapping's (re)delivery
        if round_ % 2 == 0:
            continue
        if phase == "compact" and round_ == 3 or phase == "rewrite" and round_ == 5:
            proc = floe.compact(fail_at=fail_at, check=False, fail_times=times)
            if times is None:
                assert not isinstance(proc, dict) and fail_at in proc.stderr, proc
                fired = True
            else:
                assert isinstance(proc, dict) and proc[TABLE]["conflicts"] >= 1, proc
                fired = True
        reports = floe.compact()
        assert rows(floe) == stream.expected(), f"after round {round_}"
    assert fired
    floe.ingest([event(stream.log[-200:])])  # an overlapping redelivery after everything
    floe.compact()
    assert rows(floe) == stream.expected()
    assert key_files(floe) == set()
    assert reports is not None


DEBEZIUM = """
name = "cdc"
[source]
topics = ["dbserver1.inventory.customers"]
changes = "debezium"
[table]
namespace = "cdc"
name = "users"
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
[[table.columns]]
name = "changed_at"
type = "timestamptz"
from = "@change.ts_ms"
format = "epoch_millis"
"""


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_debezium_envelopes_land_as_rows_and_bad_changes_are_dead_letters(floe, tmp_path):
    use(floe, tmp_path, DEBEZIUM)
    topic = "dbserver1.inventory.customers"
    snapshot = json.loads(fixture("snapshot.json"))
    other = dict(snapshot, after={**snapshot["after"], "id": 1002, "email": "george@acme.com"})
    first = [
        (0, 0, fixture("snapshot.key.json"), fixture("snapshot.json")),  # op r
        (0, 1, b'{"id":1002}', json.dumps(other).encode()),
        (0, 2, fixture("create.key.json"), fixture("create.json")),  # op c, schema wrapper
    ]
    floe.ingest([event(first, topic)])
    floe.compact()
    table = floe.table(TABLE)
    got = sorted((r["id"], r["email"], r["lsn"]) for r in table.scan().to_arrow().to_pylist())
    assert got == [(1001, "sally.thomas@acme.com", 24022936), (1002, "george@acme.com", 24022936),
                   (1005, "annek@noanswer.org", 24023128)]
    second = [
        (0, 3, fixture("update.key.json"), fixture("update.json")),  # op u of 1001
        (0, 4, fixture("delete.key.json"), fixture("delete.json")),  # op d of 1005
        (0, 5, fixture("delete.key.json"), None),  # its tombstone
        (0, 6, b'{"id":1002}', fixture("delete_key_only.json")),  # op d without `before`: the key decides
        (0, 7, None, json.dumps(dict(snapshot, op="t")).encode()),  # truncate: not a row change
        (0, 8, None, json.dumps(dict(snapshot, after=None)).encode()),  # op r without `after`
        (0, 9, None, json.dumps(dict(snapshot, after={"email": "x@y.z"})).encode()),  # no primary key
    ]
    report = floe.ingest([event(second, topic)])
    assert (report["rows"], report["deletes"], report["dead_letters"]) == (1, 2, 3), report
    floe.compact()
    table = floe.table(TABLE)
    got = [(r["id"], r["email"], r["lsn"], r["changed_at"].timestamp()) for r in table.scan().to_arrow().to_pylist()]
    assert got == [(1001, "noreply@acme.com", 24023376, 1733471100.48)]
    dead = sorted(floe.table(DEAD).scan().to_arrow().to_pylist(), key=lambda d: d["offset"])
    assert [(d["offset"], d["error_kind"]) for d in dead] == [(7, "change"), (8, "change"), (9, "change")]
    assert "`op` = `t` is not a row change" in dead[0]["reason"]
    assert "without an `after` row" in dead[1]["reason"]
    assert dead[2]["reason"] == "primary-key column `id` is missing or null"
    assert dead[0]["value"] == json.dumps(dict(snapshot, op="t")).encode(), "the record is kept as received"


def test_a_hundred_thousand_keys_change_in_one_commit(floe, tmp_path):
    use(floe, tmp_path)
    keys = 100_000

    def events(version: int) -> list[dict]:
        out = []
        for chunk in range(0, keys, 10_000):
            records = []
            for key in range(chunk, chunk + 10_000):
                offset = version * keys // 2 + key // 2
                deleted = version == 1 and key % 10 == 0
                value = None if deleted else json.dumps(
                    {"id": key, "name": f"v{version}", "region": ["eu", "us"][key % 2]}).encode()
                records.append((key % 2, offset, str(key).encode(), value))
            out.append(event(records))
        return out

    floe.ingest(events(0))
    reports = floe.compact()
    assert reports[TABLE]["change_stats"]["keys"] == keys
    floe.ingest(events(1))  # every key again: 90% updated, 10% deleted
    reports = floe.compact()
    stats = reports[TABLE]["change_stats"]
    assert (stats["keys"], stats["replaced"], stats["superseded"]) == (keys, keys, 0), stats
    table = floe.table(TABLE)
    got = table.scan(selected_fields=("id", "name")).to_arrow()
    assert got.num_rows == keys * 9 // 10
    assert set(got.column("name").to_pylist()) == {"v1"}
    assert sorted(got.column("id").to_pylist()) == [k for k in range(keys) if k % 10 != 0]
