"""One deployment, several pipelines: Avro, Protobuf and JSON topics each into their own table, one JSON topic split
by a field into two tables, all in the same MSK events; records no route takes are dead letters with the reason;
redelivery and a crash between two routes' staging change nothing (exactly once per route). Read back with
PyIceberg on both backends."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("confluent_kafka.schema_registry.protobuf")
from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from test_registry import COLUMNS, V1, expected_row, order  # noqa: E402
from test_registry import registry  # noqa: E402,F401  (the stand-in fixture)
from test_registry_protobuf import V1 as PROTO_V1, message_class, to_message  # noqa: E402

START_MS = 1_796_000_000_000


def pipeline(name: str, topics: list[str], source: str, table: str, columns: list[str]) -> str:
    namespace, table = table.split(".")
    return (
        f'name = "{name}"\n[source]\ntopics = {json.dumps(topics)}\n{source}\n[table]\nnamespace = "{namespace}"\n'
        f'name = "{table}"\ncolumns = [\n' + "".join(f"  {c},\n" for c in columns) + "]\n"
    )


WEB_COLUMNS = [
    '{ name = "id", type = "long", required = true }',
    '{ name = "type", type = "string", required = true }',
    '{ name = "page", type = "string" }',
    '{ name = "off", type = "long", from = "@offset" }',
]


def deployment(folder: Path, registry_url: str) -> list[Path]:
    """orders (Avro), shipments (Protobuf), and `web` split by $.type into clicks (click, view) and purchases."""
    files = {
        "orders": pipeline("orders", ["orders"], f'format = "avro"\nregistry = {{ url = "{registry_url}" }}',
                           "shop.orders", COLUMNS),
        "shipments": pipeline("shipments", ["shipments.*"],
                              f'format = "protobuf"\nregistry = {{ url = "{registry_url}" }}', "shop.shipments", COLUMNS),
        "clicks": pipeline("clicks", ["web"], 'route = { field = "$.type", values = ["click", "view"] }',
                           "web.clicks", WEB_COLUMNS),
        "purchases": pipeline("purchases", ["web"], 'route = { field = "$.type", values = ["purchase"] }',
                              "web.purchases", WEB_COLUMNS),
    }
    paths = []
    for name, text in files.items():
        path = folder / f"{name}.toml"
        path.write_text(text)
        paths.append(path)
    return paths


def record(topic: str, partition: int, offset: int, value: bytes) -> dict:
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": START_MS + offset,
        "timestampType": "CREATE_TIME",
        "key": None,
        "value": base64.b64encode(value).decode(),
        "headers": [],
    }


def msk_event(records: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(f"{r['topic']}-{r['partition']}", []).append(r)
    return {"eventSource": "aws:kafka", "eventSourceArn": "arn:routes", "records": groups}


def order_rows(floe, table: str) -> set[tuple]:
    rows = floe.table(table).scan().to_arrow().to_pylist()
    out = {
        (r["id"], r["item"], r["price"], r["status"], r["placed_at"], tuple(r["tags"] or ()), r["note"],
         (r["ship"]["city"], r["ship"]["zip"]) if r["ship"] else None)
        for r in rows
    }
    assert len(out) == len(rows), f"duplicate rows in {table}"
    return out


def web_rows(floe, table: str) -> set[tuple]:
    rows = floe.table(table).scan().to_arrow().to_pylist()
    out = {(r["id"], r["type"], r["page"], r["off"]) for r in rows}
    assert len(out) == len(rows), f"duplicate rows in {table}"
    return out


def dead(floe, table: str) -> dict[tuple, tuple]:
    return {(d["topic"], d["offset"]): (d["error_kind"], d["reason"]) for d in floe.table(table).scan().to_arrow().to_pylist()}


class Produced:
    """The records of the test's topics and what each table must hold."""

    def __init__(self, registry, folder: Path):
        client = registry.client()
        avro = AvroSerializer(client, json.dumps(V1))
        cls = message_class(PROTO_V1, folder / "proto")
        proto = ProtobufSerializer(cls, client, {})
        self.records: list[dict] = []
        self.orders = [order(i) for i in range(1, 21)]
        self.shipments = [order(i) for i in range(101, 121)]
        self.clicks: set[tuple] = set()
        self.purchases: set[tuple] = set()
        for n, o in enumerate(self.orders):
            self.records.append(record("orders", n % 2, n // 2, avro(o, SerializationContext("orders", MessageField.VALUE))))
        for n, o in enumerate(self.shipments):
            ctx = SerializationContext("shipments.eu", MessageField.VALUE)
            self.records.append(record("shipments.eu", 0, n, proto(to_message(cls, o), ctx)))
        kinds = ["click", "view", "purchase", "click", "refund"]  # refund: no route takes it
        for offset in range(30):
            kind = kinds[offset % len(kinds)]
            value = {"id": offset, "type": kind, "page": f"/p/{offset % 4}"}
            self.records.append(record("web", offset % 3, offset, json.dumps(value).encode()))
            row = (offset, kind, f"/p/{offset % 4}", offset)
            if kind in ("click", "view"):
                self.clicks.add(row)
            elif kind == "purchase":
                self.purchases.add(row)
        self.records.append(record("web", 0, 100, b'{"id": 1}'))  # no $.type
        self.records.append(record("logs", 0, 7, b"{}"))  # a topic no pipeline reads

    def check(self, floe):
        assert order_rows(floe, "shop.orders") == {expected_row(o) for o in self.orders}
        assert order_rows(floe, "shop.shipments") == {expected_row(o) for o in self.shipments}
        assert web_rows(floe, "web.clicks") == self.clicks
        assert web_rows(floe, "web.purchases") == self.purchases
        refunds = {("web", o) for o in range(30) if o % 5 == 4} | {("web", 100)}
        got = dead(floe, "web.clicks_dead_letters")
        assert set(got) == refunds and {k for k, _ in got.values()} == {"route"}, got
        assert got[("web", 4)][1] == (
            "$.type is `refund`: no route takes it (routes: click, view → web.clicks; purchase → web.purchases)"
        )
        assert "$.type is missing" in got[("web", 100)][1]
        orders_dead = dead(floe, "shop.orders_dead_letters")
        assert set(orders_dead) == {("logs", 7)} and orders_dead[("logs", 7)][0] == "topic", orders_dead
        for table in ("shop.shipments_dead_letters", "web.purchases_dead_letters"):
            assert len(floe.table(table).scan().to_arrow()) == 0, table


def test_topics_and_a_field_route_to_their_own_tables_exactly_once(floe, registry, tmp_path):
    floe.pipeline = deployment(tmp_path, registry.url)
    produced = Produced(registry, tmp_path)
    half = len(produced.records) // 2
    events = [msk_event(produced.records[:half]), msk_event(produced.records[half:])]
    report = floe.ingest(events)
    assert report["records"] == len(produced.records) and report["dead_letters"] == 8, report
    reports = floe.compact()
    assert {"shop.orders", "shop.shipments", "web.clicks", "web.purchases"} <= set(reports)
    produced.check(floe)
    # Redelivering both events changes nothing: every route's fence holds.
    again = floe.ingest(events)
    assert again["duplicates"] == len(produced.records), again
    floe.compact()
    produced.check(floe)


def test_a_crash_between_two_routes_staging_is_redelivered_without_loss_or_duplicates(floe, registry, tmp_path):
    floe.pipeline = deployment(tmp_path, registry.url)
    produced = Produced(registry, tmp_path)
    event = msk_event(produced.records)
    # The process dies right after the first route's first partition is staged; the others are not.
    crashed = floe.ingest([event], fail_at="ingest.after_stage", check=False)
    assert crashed.returncode != 0 and "ingest.after_stage" in crashed.stderr, crashed.stderr
    floe.ingest([event])
    floe.compact()
    produced.check(floe)


def test_deployments_that_would_read_a_record_twice_are_refused(floe, tmp_path):
    a = tmp_path / "a.toml"
    a.write_text(pipeline("a", ["web"], "", "web.a", WEB_COLUMNS))
    b = tmp_path / "b.toml"
    b.write_text(pipeline("b", ["x", "web"], 'route = { field = "$.type", values = ["click"] }', "web.b", WEB_COLUMNS))
    floe.pipeline = [a, b]
    failed = floe.ingest([msk_event([record("web", 0, 0, b'{"id": 1, "type": "click"}')])], check=False)
    assert failed.returncode == 3, failed.stderr
    assert f"{b}: line 3, column 16: `source.topics`: `web` is also read by pipeline `a`" in failed.stderr, failed.stderr


def test_validate_checks_a_deployment_together(floe, tmp_path):
    clicks = tmp_path / "clicks.toml"
    clicks.write_text(pipeline("clicks", ["web"], 'route = { field = "$.type", values = ["click", "view"] }', "web.clicks",
                               WEB_COLUMNS))
    buys = tmp_path / "buys.toml"
    buys.write_text(pipeline("buys", ["web"], 'route = { field = "$.type", values = ["purchase"] }', "web.buys", WEB_COLUMNS))
    ok = subprocess.run([str(floe.bin), "validate", str(clicks), str(buys)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "route: only records whose $.type is one of: click, view" in ok.stdout
    assert "the 2 pipelines make one deployment" in ok.stdout
    buys.write_text(pipeline("buys", ["web"], 'route = { field = "$.type", values = ["view"] }', "web.buys", WEB_COLUMNS))
    bad = subprocess.run([str(floe.bin), "validate", str(clicks), str(buys)], capture_output=True, text=True)
    assert bad.returncode == 3 and "both take $.type = `view`" in bad.stderr, bad.stderr
