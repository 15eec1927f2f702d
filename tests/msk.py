"""Independent test oracle: builds MSK events the way the event source mapping sends them, and the rows and
dead letters a correct floe must produce from them (for examples/pipeline.toml)."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

TOPICS = {"clicks": 3, "orders": 2}
EPOCH = datetime(1970, 1, 1)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signed(data: bytes) -> list[int]:
    """The mapping sends header bytes as signed Java bytes."""
    return [b - 256 if b > 127 else b for b in data]


def values_event(topic: str, partition: int, first: int, values: list[bytes], start_ms: int) -> dict:
    """One topic-partition's values (offsets from `first`, timestamps from `start_ms`) as an MSK event."""
    records = [
        {
            "topic": topic,
            "partition": partition,
            "offset": first + i,
            "timestamp": start_ms + i,
            "timestampType": "CREATE_TIME",
            "key": None,
            "value": b64(v),
            "headers": [],
        }
        for i, v in enumerate(values)
    ]
    return {"eventSource": "aws:kafka", "eventSourceArn": f"arn:{topic}", "records": {f"{topic}-{partition}": records}}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value_b64: str | None  # exactly what goes into the event
    headers: list[tuple[str, bytes]]
    expected_row: dict | None = None  # None: must be a dead letter
    bad_kind: str | None = None  # expected error_kind
    bad_reason: str | None = None  # substring expected in the reason

    def to_event_record(self) -> dict:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "timestampType": "CREATE_TIME",
            "key": None if self.key is None else b64(self.key),
            "value": self.value_b64,
            "headers": [{name: signed(value)} for name, value in self.headers],
        }

    @property
    def raw_value(self) -> bytes | None:
        if self.value_b64 is None:
            return None
        try:
            return base64.b64decode(self.value_b64, validate=True)
        except ValueError:
            return self.value_b64.encode()


@dataclass
class Dataset:
    records: list[Record] = field(default_factory=list)

    @property
    def good(self) -> list[Record]:
        return [r for r in self.records if r.expected_row is not None]

    @property
    def bad(self) -> list[Record]:
        return [r for r in self.records if r.expected_row is None]

    def events(self, per_partition: int = 100, partitions_per_event: int = 2, only=None) -> list[dict]:
        """Pack records into events: up to `per_partition` records of each of `partitions_per_event` partitions."""
        by_tp: dict[tuple[str, int], list[Record]] = {}
        for r in self.records:
            if only is None or only(r):
                by_tp.setdefault((r.topic, r.partition), []).append(r)
        tps = sorted(by_tp)
        cursors = {tp: 0 for tp in tps}
        events = []
        while any(cursors[tp] < len(by_tp[tp]) for tp in tps):
            for i in range(0, len(tps), partitions_per_event):
                group = {}
                for tp in tps[i : i + partitions_per_event]:
                    chunk = by_tp[tp][cursors[tp] : cursors[tp] + per_partition]
                    cursors[tp] += len(chunk)
                    if chunk:
                        group[f"{tp[0]}-{tp[1]}"] = [r.to_event_record() for r in chunk]
                if group:
                    events.append(
                        {
                            "eventSource": "aws:kafka",
                            "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/test/abc-1",
                            "bootstrapServers": "b-1.test.kafka.us-east-1.amazonaws.com:9098",
                            "records": group,
                        }
                    )
        return events

    def positions(self) -> dict[str, int]:
        """Committed positions floe must record: next offset per topic:partition."""
        out: dict[str, int] = {}
        for r in self.records:
            if r.topic in TOPICS:
                key = f"{r.topic}:{r.partition}"
                out[key] = max(out.get(key, 0), r.offset + 1)
        return out


def _good_value(rng: random.Random, topic: str, n: int, ts: datetime) -> tuple[dict, dict]:
    """A valid JSON value and the row floe must produce from it (minus Kafka metadata columns)."""
    user = rng.randint(1, 5000)
    country = rng.choice(["DE", "US", "IN", None])
    referrer = rng.choice([None, "https://search.example/"])
    client_ms = int((ts - EPOCH_UTC).total_seconds() * 1000) - rng.randint(0, 2000)
    value = {
        "event_id": f"{topic}-{n:06d}",
        "type": "order" if topic == "orders" else rng.choice(["view", "click"]),
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": {"id": user, "agent": "Mozilla/5.0 ünïcødé ✓"},
        "page": {"url": f"https://shop.example/p/{n}", "referrer": referrer},
        "attrs": {"ab": f"exp-{n % 3}", "app": "web"},
        "client_ts": client_ms,
        "an_unknown_field": {"is": ["ignored"]},
    }
    if country is not None:
        value["user"]["country"] = country
    row = {
        "event_id": value["event_id"],
        "event_type": value["type"],
        "event_time": ts,
        "user_id": user,
        "country": country,
        "page": {"url": value["page"]["url"], "referrer": referrer},
        "items": None,
        "amount": None,
        "attributes": {"ab": f"exp-{n % 3}", "app": "web"},
        "client_time": EPOCH + timedelta(milliseconds=client_ms),
    }
    if topic == "orders":
        items = [
            {"sku": f"SKU-{rng.randint(1, 999):04d}", "qty": rng.randint(1, 3), "price": f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}"}
            for _ in range(rng.randint(1, 3))
        ]
        value["items"] = items
        value["amount"] = f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}"
        row["items"] = [{"sku": i["sku"], "qty": i["qty"], "price": Decimal(i["price"])} for i in items]
        row["amount"] = Decimal(value["amount"])
    return value, row


# Malformed records: how to spoil a good value, the expected error_kind and a substring of the reason.
BAD = [
    ("truncated", lambda v: json.dumps(v)[:40].encode(), "json", "invalid JSON"),
    ("two_values", lambda v: (json.dumps(v) + " " + json.dumps(v)).encode(), "json", "trailing characters"),
    ("empty", lambda v: b"", "json", "value is empty"),
    ("not_object", lambda v: b'["a", 1]', "json", "value is a JSON array, expected an object"),
    ("missing_user_id", lambda v: json.dumps({**v, "user": {"country": "DE"}}).encode(), "schema", "required field `$.user.id` is missing or null"),
    ("null_type", lambda v: json.dumps({**v, "type": None}).encode(), "schema", "required field `$.type` is missing or null"),
    ("wrong_type", lambda v: json.dumps({**v, "user": {"id": "abc"}}).encode(), "schema", "field `$.user`"),
    ("bad_decimal", lambda v: json.dumps({**v, "amount": "12.3.4"}).encode(), "schema", "field `$.amount`"),
    ("bad_timestamp", lambda v: json.dumps({**v, "ts": "yesterday"}).encode(), "schema", "field `$.ts`"),
    ("not_utf8", lambda v: b'{"event_id": "\xff\xfe"}', "json", "invalid JSON"),
]


def build(records_per_tp: int = 600, seed: int = 7, bad_every: int = 97) -> Dataset:
    """Records round-robin over the topic-partitions; every `bad_every`-th record is malformed in some way."""
    rng = random.Random(seed)
    ds = Dataset()
    tps = [(t, p) for t, n in TOPICS.items() for p in range(n)]
    start = datetime(2026, 11, 20, 22, 0, tzinfo=timezone.utc)  # spans two day partitions
    n = 0
    for offset in range(records_per_tp):
        for topic, partition in tps:
            ts = start + timedelta(seconds=n * 7)
            kafka_ms = int((ts - EPOCH_UTC).total_seconds() * 1000) + 987
            value, row = _good_value(rng, topic, n, ts)
            key = f"user-{row['user_id']}".encode()
            trace = f"{rng.getrandbits(64):016x}".encode()
            rec = Record(topic, partition, offset, kafka_ms, key, None, [("trace-id", trace)])
            special = n % bad_every
            if n > 0 and special == 0:
                kind, spoil, err_kind, reason = BAD[(n // bad_every) % len(BAD)]
                rec.value_b64 = b64(spoil(value))
                rec.bad_kind, rec.bad_reason = err_kind, reason
            elif n > 0 and special == 13:
                rec.value_b64 = "%%% not base64 %%%"
                rec.bad_kind, rec.bad_reason = "base64", "record value is not valid base64"
            elif n > 0 and special == 29:
                rec.value_b64 = None  # tombstone
                rec.bad_kind, rec.bad_reason = "null_value", "tombstone"
            elif n > 0 and special == 41:
                rec.value_b64 = b64(json.dumps(value).encode())
                rec.headers = [("trace-id", b"\xc3\x28")]  # invalid UTF-8 for a string column
                rec.bad_kind, rec.bad_reason = "header", "header `trace-id` for column `trace_id` is not valid UTF-8"
            else:
                rec.value_b64 = b64(json.dumps(value, ensure_ascii=False).encode())
                rec.expected_row = {
                    **row,
                    "kafka_key": key.decode(),
                    "kafka_time": datetime.fromtimestamp(kafka_ms / 1000, tz=timezone.utc),
                    "trace_id": trace.decode(),
                    "source_topic": topic,
                    "source_partition": partition,
                    "source_offset": offset,
                }
            ds.records.append(rec)
            n += 1
    return ds
