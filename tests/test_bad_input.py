"""Adversarial input, one test per kind, through the real handler on the embedded default (decoding does not
depend on the backend; the 6 MB event also runs on moto). Every record ends up as exactly one row or one dead
letter naming its topic/partition/offset and the problem; a bad record never fails its batch, so it can never
block its partition; whole-event and configuration mistakes fail with a message naming the problem."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

import msk
from test_slice import DEAD, TARGET

TOPIC = "clicks"
TS_MS = 1_763_719_200_000  # 2025-11-21T10:00:00Z


def good(id_: str, **changes) -> dict:
    value = {
        "event_id": id_,
        "type": "click",
        "ts": "2026-11-21T10:00:00Z",
        "user": {"id": 7, "country": "DE"},
        "page": {"url": "/a", "referrer": None},
        "items": [{"sku": "s-1", "qty": 1, "price": "1.50"}],
        "amount": "3.25",
        "attrs": {"k": "v"},
        "client_ts": TS_MS,
    }
    for path, v in changes.items():
        node = value
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        if v is DROP:
            del node[leaf]
        else:
            node[leaf] = v
    return value


DROP = object()


def encode(value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


@dataclass
class Case:
    name: str
    value: bytes | None  # the record value (None: use `raw_b64`)
    expect: str  # "row" or the dead letter's error_kind
    reason: str = ""  # substring of the dead letter's reason
    raw_b64: str | None = None
    headers: list | None = None
    check_row: object = None  # callable(row) for rows


def nested(depth: int) -> bytes:
    return b'{"event_id": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}"


CASES = [
    Case("invalid base64", None, "base64", "not valid base64", raw_b64="%%% not base64 %%%"),
    Case("non-UTF-8 bytes", b'{"event_id": "\xff\xfe"}', "json", "invalid JSON"),
    Case("truncated JSON", encode(good("trunc"))[:-20], "json", "invalid JSON"),
    Case("deeply nested JSON (100,000 levels)", nested(100_000), "json", "invalid JSON"),
    Case("empty value", b"", "json", "value is empty"),
    Case("JSON null value", b"null", "json", ""),
    Case("a JSON array instead of an object", b"[1, 2, 3]", "json", ""),
    Case("two JSON values in one record", encode(good("two-a")) + encode(good("two-b")), "json", ""),
    Case("wrong type (string for a long)", encode(good("wt", user__id="seven")), "schema",
         "field `$.user`: Json error: whilst decoding field 'user': whilst decoding field 'id': failed to parse"),
    Case("wrong type (object for a string)", encode(good("wt2", type={"a": 1})), "schema", "$.type"),
    Case("missing required field", encode(good("x", event_id=DROP)), "schema", "$.event_id"),
    Case("null in a required field", encode(good("x", user__id=None)), "schema", "$.user.id"),
    Case("null in a required nested field", encode(good("nn", page__url=None)), "schema", "url"),
    Case("long out of range", b'{"event_id":"big","type":"c","ts":"2026-11-21T10:00:00Z","user":{"id":9223372036854775808}}',
         "schema", "whilst decoding field 'id': failed to parse 9223372036854775808 as Int64"),
    Case("int out of range", encode(good("qty", items=[{"sku": "s", "qty": 2**40, "price": "1.00"}])), "schema",
         "$.items"),
    Case("decimal out of range", encode(good("dec", amount="12345678901234.50")), "schema", "$.amount"),
    # Found by `cargo fuzz`: arrow-cast's decimal parser overflows its exponent counter (wrong values in release).
    Case("decimal with a 12-digit exponent", encode(good("fz", amount=None)).replace(b'"amount": null',
         b'"amount": 116920954900000e000099000002'), "schema", "field `amount`: number `116920954900000e000099000002`"),
    Case("decimal with 300 digits", encode(good("fz2", amount="9" * 300)), "schema", "out of range for a decimal"),
    # arrow-json reads a fractional number into an integer column truncated toward zero (see the README report).
    Case("fractional number for a long (arrow-json truncates)", encode(good("flt", user__id=7.5)), "row",
         check_row=lambda r: r["user_id"] == 7),
    Case("timestamp in an odd format", encode(good("odd", ts="21/11/2026 10:00")), "schema", "$.ts"),
    Case("timestamp with an offset", encode(good("off", ts="2026-11-21T15:30:00+05:30")), "row",
         check_row=lambda r: r["event_time"] == datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)),
    Case("timestamp far in the future", encode(good("fut", ts="9999-12-31T23:59:59Z")), "row",
         check_row=lambda r: r["event_time"].year == 9999),
    Case("timestamp far in the past", encode(good("past", ts="0001-01-01T00:00:00Z")), "row",
         check_row=lambda r: r["event_time"].year == 1),
    Case("epoch millis out of range", encode(good("ep", client_ts=10**19)), "schema", "$.client_ts"),
    Case("unknown fields are ignored", encode(good("unk", extra={"deep": [1, {"x": None}]}, zzz=1)), "row",
         check_row=lambda r: r["event_id"] == "unk"),
    Case("huge single record (4 MB string)", encode(good("huge", attrs={"blob": "x" * 4_000_000})), "row",
         check_row=lambda r: len(dict(r["attributes"])["blob"]) == 4_000_000),
    Case("header byte outside -128..=255", encode(good("hdr")), "header", "outside -128..=255",
         headers=[{"trace-id": [300]}]),
]


def event_of(records: list[dict], topic: str = TOPIC) -> dict:
    return {"eventSource": "aws:kafka", "records": {f"{topic}-0": records}}


def record(offset: int, value_b64: str | None, headers=None, topic: str = TOPIC) -> dict:
    return {"topic": topic, "partition": 0, "offset": offset, "timestamp": TS_MS, "timestampType": "CREATE_TIME",
            "key": msk.b64(b"k"), "value": value_b64, "headers": headers or []}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """Every case as one record of one partition, between good records, ingested and committed together."""
    from conftest import Floe

    home = tmp_path_factory.mktemp("bad") / "home"
    home.mkdir()
    floe = Floe(home)
    records, offsets = [], {}
    offset = 0
    for case in CASES:
        records.append(record(offset, msk.b64(encode(good(f"before-{offset}")))))
        offset += 1
        b64 = case.raw_b64 if case.value is None else msk.b64(case.value)
        records.append(record(offset, b64, case.headers))
        offsets[case.name] = offset
        offset += 1
    # The ESM caps an invocation at 6 MB: in offset order, a new event whenever the next record would not fit.
    events, batch, size = [], [], 0
    for r in records:
        n = len(json.dumps(r))
        if batch and size + n > 5_000_000:
            events.append(event_of(batch))
            batch, size = [], 0
        batch.append(r)
        size += n
    events.append(event_of(batch))
    assert len(events) >= 2
    report = floe.ingest(events)
    floe.compact()
    rows = {r["source_offset"]: r for r in floe.table(TARGET).scan().to_arrow().to_pylist()}
    dead = {d["offset"]: d for d in floe.table(DEAD).scan().to_arrow().to_pylist()}
    return report, offsets, rows, dead, offset


def test_every_record_is_one_row_or_one_dead_letter(ingested):
    report, _, rows, dead, total = ingested
    assert report["records"] == total
    assert rows.keys().isdisjoint(dead.keys())
    assert sorted([*rows, *dead]) == list(range(total)), "a record was lost or duplicated"
    # Every good neighbour loaded.
    assert all(o in rows for o in range(0, total, 2))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(ingested, case: Case):
    _, offsets, rows, dead, _ = ingested
    offset = offsets[case.name]
    if case.expect == "row":
        assert offset in rows, f"{case.name}: dead-lettered: {dead.get(offset, {}).get('reason')}"
        assert case.check_row(rows[offset]), rows[offset]
        return
    assert offset in dead, f"{case.name}: loaded as a row"
    d = dead[offset]
    assert (d["topic"], d["partition"], d["offset"]) == (TOPIC, 0, offset)
    assert d["error_kind"] == case.expect, (case.name, d["error_kind"], d["reason"])
    assert case.reason in d["reason"], (case.name, d["reason"])
    if case.value is not None:
        assert d["value"] == case.value, "the dead letter keeps the bytes that arrived"


def test_an_empty_event_is_a_no_op(floe):
    for event in [{}, {"eventSource": "aws:kafka", "records": {}}, event_of([])]:
        report = floe.ingest([event])
        assert (report["records"], report["rows"], report["dead_letters"], report["files"]) == (0, 0, 0, 0)


def test_a_malformed_msk_record_is_dead_lettered_and_its_neighbours_load(floe):
    records = [
        record(0, msk.b64(encode(good("m0")))),
        {**record(1, msk.b64(encode(good("m1")))), "timestamp": 1.5},  # fractional timestamp
        {**record(2, None), "value": 12345},  # value is not a base64 string
        record(3, msk.b64(encode(good("m3")))),
    ]
    report = floe.ingest([event_of(records)])
    assert (report["rows"], report["dead_letters"]) == (2, 2)
    floe.compact()
    dead = {d["offset"]: d for d in floe.table(DEAD).scan().to_arrow().to_pylist()}
    assert {o: d["error_kind"] for o, d in dead.items()} == {1: "record", 2: "record"}
    assert "floating point" in dead[1]["reason"] and b'"timestamp": 1.5' in dead[1]["value"].replace(b":1.5", b": 1.5")
    assert "invalid type: integer" in dead[2]["reason"]
    assert sorted(r["source_offset"] for r in floe.table(TARGET).scan().to_arrow().to_pylist()) == [0, 3]


@pytest.mark.parametrize(
    "event, message",
    [
        ({"records": {TOPIC + "-0": [{"topic": TOPIC, "partition": 0, "timestamp": 1, "value": "e30="}]}},
         "has no usable partition and offset: missing field `offset`"),
        ({"records": [1, 2]}, "invalid type: sequence, expected a map"),
        ({"records": {TOPIC + "-0": {"offset": 1}}}, "expected a sequence"),
    ],
    ids=["a record without an offset", "records is not a map", "a group is not a list"],
)
def test_an_unusable_event_fails_with_a_clear_error(floe, event, message):
    proc = floe.ingest([event], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "panicked" not in proc.stderr


def test_an_event_that_is_not_json_fails_with_a_clear_error(floe):
    path = floe.home.parent / "not-json.json"
    path.write_bytes(b"\x00\x01 definitely not json")
    proc = floe._run(["ingest", str(path)], check=False)
    assert proc.returncode != 0 and "is not an MSK event" in proc.stderr and "panicked" not in proc.stderr


def six_mb_event(start: int = 0) -> tuple[dict, int]:
    """An event just under the mapping's 6 MB payload cap, of ~1 KB records."""
    records, size, offset = [], 0, start
    while size < 6 * 1024 * 1024:
        r = record(offset, msk.b64(encode(good(f"six-{offset}", page__url="/" + "p" * 700))))
        size += len(json.dumps(r)) + 2
        records.append(r)
        offset += 1
    while len(json.dumps(event_of(records))) > 6 * 1024 * 1024:
        records.pop()
    return event_of(records), len(records)


def test_a_6_mb_event_loads_completely(floe):
    event, n = six_mb_event()
    assert 5_500_000 < len(json.dumps(event)) <= 6 * 1024 * 1024
    report = floe.ingest([event])
    assert (report["records"], report["rows"], report["dead_letters"]) == (n, n, 0)
    floe.compact()
    assert len(floe.table(TARGET).scan().to_arrow()) == n


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "p"\n[source\ntopics = ["t"]\n', "line 2"),
        ('name = "p"\n[source]\ntopics = ["t"]\n[table]\nnamespace = "ns"\nname = "t"\n'
         'columns = [{ name = "id", type = "uuidish" }]\n', "uuidish"),
        ('name = "p"\n[source]\ntopics = ["t"]\n[table]\nnamespace = "ns"\nname = "t"\n'
         'columns = [{ name = "id", type = "long" }]\n[[output]]\nname = "o"\nsql = "SELECT nope FROM input"\n',
         "output[0].sql"),
        ("", "missing field `name`"),
        ("\x00\x01", "line 1"),
    ],
    ids=["TOML syntax error", "unknown column type", "SQL that does not plan", "empty file", "binary garbage"],
)
def test_a_malformed_pipeline_file_fails_at_load_naming_the_problem(floe, tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    floe.pipeline = bad
    proc = floe.ingest([], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "panicked" not in proc.stderr


SUMS_PIPELINE = """name = "sums"
[source]
topics = ["t"]
[table]
namespace = "sums"
name = "raw"
columns = [
  { name = "id", type = "string", required = true },
  { name = "ts", type = "timestamptz", required = true },
  { name = "v", type = "long", required = true },
]
[[output]]
name = "per_minute"
sql = "SELECT ts, v FROM input"
[output.window]
kind = "tumbling"
size = "1m"
time_column = "ts"
aggregates = ["count(*) AS n", "sum(v) AS total", "max(v) AS hi"]
max_out_of_orderness = "0s"
"""


def test_window_sums_past_the_64_bit_range_neither_fail_nor_block_the_partition(floe, tmp_path):
    """Three values near the long maximum in one window: a 64-bit sum would overflow, fail every retry of the
    batch and block the partition. The sum is exact (a decimal(38, 0) column) and later records still load."""
    pipeline = tmp_path / "sums.toml"
    pipeline.write_text(SUMS_PIPELINE)
    floe.pipeline = pipeline
    big = 2**63 - 10
    values = [big, big, big, 5]
    records = [
        {"topic": "t", "partition": 0, "offset": i, "timestamp": TS_MS, "key": None, "headers": [],
         "value": msk.b64(json.dumps({"id": f"r{i}", "ts": "2026-11-21T10:00:0%dZ" % i, "v": v}).encode())}
        for i, v in enumerate(values)
    ]
    # The first three in one delivery, the fourth in the next (merged into the stored cell).
    floe.ingest([event_of(records[:3], "t")], now_ms=TS_MS)
    floe.ingest([event_of(records[3:], "t")], now_ms=TS_MS)
    later = [{**records[0], "offset": 4, "value": msk.b64(json.dumps(
        {"id": "r4", "ts": "2026-11-21T10:05:00Z", "v": 1}).encode())}]
    floe.ingest([event_of(later, "t")], now_ms=TS_MS)  # moves the watermark past the first minute
    floe.compact(now_ms=TS_MS)
    [row] = floe.table("sums.per_minute").scan().to_arrow().to_pylist()
    assert (row["n"], row["total"], row["hi"]) == (4, 3 * big + 5, big)
    assert len(floe.table("sums.raw").scan().to_arrow()) == 5
