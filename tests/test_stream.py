"""Stateful processing against a brute-force reference, on the embedded default and on moto (DynamoDB state).

A seeded stream over four partitions has out-of-order events, duplicates (within and beyond the dedup horizon),
an idle partition, records a transform fails on, undecodable records, and late data arriving after windows were
emitted. It is delivered in batches with redeliveries, an overlapping redelivery after a crash between the
state update and staging, and a compactor crash after a commit. The expected contents of every table are
computed here by brute force over the whole input (tests/pipelines/stream.toml's documented semantics), and
read back from the tables with PyIceberg.
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, Floe

PIPELINE = ROOT / "tests" / "pipelines" / "stream.toml"
TOPIC = "events"
T0 = 1_700_000_000_000  # event time origin (ms), a multiple of 10 s
USERS = {"u0": "emea", "u1": "emea", "u2": "amer", "u3": "apac", "u4": "amer", "u5": "apac"}  # u6, u7: no region
OOO, IDLE, LATENESS = 5_000, 30_000, 2_000
HORIZON = 3_600_000
WINDOWED = ["per_user_10s", "per_user_hop", "sessions"]  # in pipeline order: the order the compactor emits them


@dataclass
class Rec:
    partition: int
    offset: int
    kafka_ms: int
    value: bytes
    payload: dict | None  # None: not decodable (a dead letter)


def event(records: list[Rec]) -> dict:
    by_tp = defaultdict(list)
    for r in records:
        by_tp[f"{TOPIC}-{r.partition}"].append(
            {
                "topic": TOPIC,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.kafka_ms,
                "timestampType": "CREATE_TIME",
                "key": None,
                "value": base64.b64encode(r.value).decode(),
                "headers": [],
            }
        )
    return {"eventSource": "aws:kafka", "records": dict(by_tp)}


class Stream:
    """Builds the partitions' records phase by phase."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.next_offset = defaultdict(int)
        self.clock = defaultdict(lambda: T0)  # per-partition event-time cursor
        self.n = 0
        self.history: list[dict] = []

    def record(self, partition: int, payload: dict | None = None, raw: bytes | None = None, kafka_ms=None) -> Rec:
        offset = self.next_offset[partition]
        self.next_offset[partition] += 1
        if payload is not None:
            raw = json.dumps(payload).encode()
        kafka_ms = kafka_ms if kafka_ms is not None else (payload or {}).get("ts", T0) + 50
        return Rec(partition, offset, kafka_ms, raw, payload)

    def fresh(self, partition: int) -> Rec:
        rng = self.rng
        self.clock[partition] += rng.randint(200, 900)
        ts = self.clock[partition] - rng.randint(0, OOO - 500)  # out of order, within the bound
        self.n += 1
        payload = {
            "id": f"e{self.n}",
            "user": f"u{rng.randint(0, 7)}",
            "amount": rng.randint(-20, 100),
            "code": rng.choice(["1", "2", "17", "x1"]) if rng.random() < 0.2 else str(rng.randint(0, 9)),
            "ts": ts,
        }
        self.history.append(payload)
        return self.record(partition, payload)

    def batch(self, partition: int, size: int) -> list[Rec]:
        out = []
        for _ in range(size):
            roll = self.rng.random()
            if roll < 0.08 and self.history:
                # A producer retry: the same payload again, in this partition, seconds later.
                dup = dict(self.rng.choice(self.history[-40:]))
                out.append(self.record(partition, dup, kafka_ms=dup["ts"] + 2_000))
            elif roll < 0.11:
                out.append(self.record(partition, raw=b'{"id": "bad", "amount": "lots"'))
            else:
                out.append(self.fresh(partition))
        return out

    def late(self, partition: int, ts: int) -> Rec:
        self.n += 1
        payload = {"id": f"e{self.n}", "user": "u1", "amount": 7, "code": "3", "ts": ts}
        return self.record(partition, payload, kafka_ms=self.clock[partition])


# ---------------------------------------------------------------- the reference (brute force over the input)


def tumbling(t: int, size: int) -> list[tuple[int, int]]:
    s = t - t % size
    return [(s, s + size)]


def hopping(t: int, size: int, hop: int) -> list[tuple[int, int]]:
    s = t - t % hop
    out = []
    while s > t - size:
        out.append((s, s + size))
        s -= hop
    return sorted(out)


class Reference:
    """Replays the delivery schedule at the level of the documented semantics: each record once, in delivery
    order; the closed watermark moves at each compactor run; lateness is judged against it."""

    def __init__(self):
        self.delivered = defaultdict(lambda: -1)
        self.records: list[Rec] = []
        self.closed = dict.fromkeys(WINDOWED)  # per windowed output: the compactor moves each in turn
        self.clocks = {}  # partition -> [max_event_ms, last_seen_ms]
        self.claims = {}
        self.unique = []
        self.counted = {"per_user_10s": [], "per_user_hop": [], "sessions": []}
        self.late = {"per_user_10s": set(), "per_user_hop": set(), "sessions": set()}

    def ingest(self, records: list[Rec], now_ms: int):
        fresh = [r for r in records if r.offset > self.delivered[r.partition]]
        for r in records:
            self.delivered[r.partition] = max(self.delivered[r.partition], r.offset)
        by_partition = defaultdict(list)
        for r in fresh:
            by_partition[r.partition].append(r)
        for p, rs in sorted(by_partition.items()):
            rs.sort(key=lambda r: r.offset)
            good = [r for r in rs if r.payload is not None]
            self.records.extend(rs)
            # Dedup: the first occurrence (in delivery order) claims the key for the horizon of Kafka time.
            for r in good:
                key = r.payload["id"]
                held = self.claims.get(key)
                if held is None or held <= r.kafka_ms:
                    self.claims[key] = r.kafka_ms + HORIZON
                    self.unique.append(r)
            if not good:
                continue
            for r in good:
                t = r.payload["ts"]
                windows = {
                    "per_user_10s": tumbling(t, 10_000),
                    "per_user_hop": hopping(t, 10_000, 5_000),
                }
                for name, ws in windows.items():
                    closed = self.closed[name]
                    missed = [w for w in ws if closed is not None and w[1] + LATENESS <= closed]
                    for w in ws:
                        if w not in missed:
                            self.counted[name].append((w, r))
                    if missed:
                        self.late[name].add((r.partition, r.offset))
                closed = self.closed["sessions"]
                if closed is not None and t + LATENESS <= closed:
                    self.late["sessions"].add((r.partition, r.offset))
                else:
                    self.counted["sessions"].append((None, r))
            clock = self.clocks.setdefault(p, [-(2**63), -(2**63)])
            clock[0] = max(clock[0], max(r.payload["ts"] for r in good))
            clock[1] = max(clock[1], now_ms)

    def compact(self, now_ms: int, outputs=WINDOWED):
        """A compactor run; one that crashes while emitting has moved only the outputs before and at the crash."""
        if not self.clocks:
            return
        wms = {p: c[0] - OOO for p, c in self.clocks.items()}
        active = [wms[p] for p, c in self.clocks.items() if now_ms - c[1] < IDLE]
        wm = min(active) if active else max(wms.values())
        for name in outputs:
            if self.closed[name] is None or wm > self.closed[name]:
                self.closed[name] = wm

    # expected tables

    def good(self) -> list[Rec]:
        return [r for r in self.records if r.payload is not None]

    def enriched(self) -> tuple[list[tuple], set[int]]:
        rows, failed = [], set()
        for r in self.good():
            p = r.payload
            if p["amount"] < 0:
                continue
            if not p["code"].lstrip("-").isdigit():
                failed.add((r.partition, r.offset))
                continue
            rows.append((p["id"], p["user"].upper(), USERS.get(p["user"]), p["amount"] * 2, int(p["code"]), p["ts"]))
        return sorted(rows), failed

    def windows(self, name: str) -> dict[tuple, list[Rec]]:
        groups = defaultdict(list)
        if name == "sessions":
            by_user = defaultdict(list)
            for _, r in self.counted[name]:
                by_user[r.payload["user"]].append(r)
            for user, rs in by_user.items():
                rs.sort(key=lambda r: r.payload["ts"])
                start, end, members = None, None, []
                for r in rs + [None]:
                    t = r.payload["ts"] if r else None
                    if r is not None and end is not None and t < end:
                        end = max(end, t + 3_000)
                        members.append(r)
                        continue
                    if members:
                        groups[(start, end, user)] = members
                    if r is not None:
                        start, end, members = t, t + 3_000, [r]
        else:
            for w, r in self.counted[name]:
                groups[(w[0], w[1], r.payload["user"])].append(r)
        closed = self.closed[name]
        return {k: v for k, v in groups.items() if closed is not None and k[1] + LATENESS <= closed}


# ---------------------------------------------------------------- reading floe's tables


def ms(value) -> int:
    return int(round(value.timestamp() * 1000))


def rows(floe: Floe, name: str) -> list[dict]:
    return floe.table(f"stream.{name}").scan().to_arrow().to_pylist()


def upload_reference(floe: Floe):
    csv = "user,region\n" + "".join(f"{u},{r}\n" for u, r in USERS.items())
    if floe.moto:
        floe.moto.client("s3").put_object(Bucket="floe-warehouse", Key="warehouse/ref/users.csv", Body=csv.encode())
    else:
        path = floe.home / "warehouse" / "ref" / "users.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(csv)


def run_scenario(floe: Floe, seed: int) -> Reference:
    stream, ref = Stream(seed), Reference()
    now = [1_000_000]

    def ingest(records: list[Rec], fail_at: str | None = None):
        now[0] += 1_000
        result = floe.ingest([event(records)], fail_at=fail_at, check=fail_at is None, now_ms=now[0])
        # Both crash points come after the state update: its decisions stand, and a redelivery only stages them.
        ref.ingest(records, now[0])
        return result

    def compact(fail_at: str | None = None, at: int | None = None):
        now[0] = at if at is not None else now[0] + 1_000
        result = floe.compact(fail_at=fail_at, check=fail_at is None, now_ms=now[0])
        # The emit crash points come after the first windowed output's closed watermark moved.
        ref.compact(now[0], WINDOWED if fail_at is None else WINDOWED[:1])
        return result

    # Phase A: four partitions; partition 3 goes idle after this phase.
    for round_ in range(3):
        for p in range(4):
            batch = stream.batch(p, 25 if p < 3 else 10)
            ingest(batch)
            if (round_ + p) % 3 == 0:
                ingest(batch)  # redelivered: a no-op
    # A crash after the state update, before staging; then an overlapping, larger redelivery.
    crashed = stream.batch(0, 20)
    ingest(crashed, fail_at="ingest.after_write")
    ingest(crashed, fail_at="ingest.after_state")
    ingest(crashed + stream.batch(0, 10))
    compact()  # partition 3 still active: it holds the watermark back

    # Phase B: partitions 0-2 continue 40 s later; partition 3 is idle now.
    now[0] += IDLE + 10_000
    for _ in range(2):
        for p in range(3):
            ingest(stream.batch(p, 30))
    # A crash after the state update, then the compactor closes windows, then the redelivery: records the crashed
    # attempt counted stay counted (and out of the late table) even where their windows are now final.
    crashed = stream.batch(1, 30)
    ingest(crashed, fail_at="ingest.after_state")
    compact(fail_at="emit.after_commit")  # commits windows, then dies before cleaning up their state
    ingest(crashed + stream.batch(1, 5))
    compact()
    closed = ref.closed["sessions"]
    assert closed is not None and closed > T0 + 20_000, closed
    # Late data: windows that are already emitted get records now; a duplicate far beyond the horizon too.
    late = [stream.late(1, T0 + 1_000), stream.late(1, closed - LATENESS - 1), stream.late(1, closed - LATENESS + 500)]
    again = dict(stream.history[0])
    beyond = stream.record(1, again, kafka_ms=again["ts"] + HORIZON + 60_000)
    ingest(late + stream.batch(1, 10) + [beyond])
    for p in range(3):
        ingest(stream.batch(p, 15))

    # Phase C: everything idle, far later: the last windows close.
    idle_at = now[0] + 10 * IDLE
    compact(fail_at="emit.before_commit", at=idle_at)  # closes and writes the windows, dies before committing
    compact(at=idle_at + 1_000)  # commits the very same windows (the closed watermark is not recomputed)
    compact(at=idle_at + 2_000)  # nothing left: a no-op
    return ref


def check_tables(floe: Floe, ref: Reference):
    good = ref.good()
    raw = rows(floe, "raw")
    assert sorted(r["id"] for r in raw) == sorted(r.payload["id"] for r in good)

    dead = rows(floe, "raw_dead_letters")
    decode_failed = {(r.partition, r.offset) for r in ref.records if r.payload is None}
    expected_rows, transform_failed = ref.enriched()
    got_dead = defaultdict(set)
    for d in dead:
        got_dead[d["error_kind"]].add((d["partition"], d["offset"]))
    assert set().union(*[v for k, v in got_dead.items() if k != "transform"]) == decode_failed
    assert got_dead["transform"] == transform_failed, "a cast failure must dead-letter exactly the failing records"
    assert all("enriched" in d["reason"] for d in dead if d["error_kind"] == "transform")

    enriched = rows(floe, "enriched")
    got = sorted(
        (r["id"], r["user_upper"], r["region"], r["amount2"], r["code_num"], ms(r["ts"])) for r in enriched
    )
    assert got == expected_rows

    unique = sorted((r["id"], r["user"], r["amount"], ms(r["ts"])) for r in rows(floe, "unique_events"))
    expected_unique = sorted((r.payload["id"], r.payload["user"], r.payload["amount"], r.payload["ts"]) for r in ref.unique)
    assert unique == expected_unique
    assert len(unique) < len(good), "the stream has duplicates"
    assert len({u[0] for u in unique}) < len(unique), "a key seen again beyond the horizon is admitted again"

    for name in ["per_user_10s", "per_user_hop", "sessions"]:
        expected = ref.windows(name)
        assert expected, f"{name}: the scenario must close windows"
        table = {(ms(r["window_start"]), ms(r["window_end"]), r["user"]): r for r in rows(floe, name)}
        assert set(table) == set(expected), f"{name}: windows differ"
        for key, members in expected.items():
            row = table[key]
            amounts = [m.payload["amount"] for m in members]
            assert row["n"] == len(members), (name, key)
            assert row["total"] == sum(amounts), (name, key)
            if name == "per_user_10s":
                assert (row["lo"], row["hi"]) == (min(amounts), max(amounts))
                assert math.isclose(row["mean"], sum(amounts) / len(amounts))
                distinct = len({m.payload["id"] for m in members})
                assert abs(row["ids"] - distinct) <= max(1, 0.05 * distinct), (row["ids"], distinct)
            if name == "sessions":
                assert ms(row["last_ts"]) == max(m.payload["ts"] for m in members)
        late = {(r["late_partition"], r["late_offset"]) for r in rows(floe, f"{name}_late")}
        assert late == ref.late[name], f"{name}: late records differ"
        assert ref.late[name], f"{name}: the scenario must produce late records"


@pytest.mark.parametrize("seed", [3, 11])
def test_stateful_outputs_match_the_brute_force_reference(floe, seed):
    floe.pipeline = PIPELINE
    upload_reference(floe)
    ref = run_scenario(floe, seed)
    check_tables(floe, ref)


def test_a_transform_that_cannot_plan_is_rejected_at_load(floe, tmp_path: Path):
    text = PIPELINE.read_text().replace("upper(e.user) AS user_upper", "upper(e.nope) AS user_upper")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    floe.pipeline = bad
    proc = floe.compact(check=False)
    assert proc.returncode != 0
    assert "output[0].sql" in proc.stderr and "nope" in proc.stderr, proc.stderr
