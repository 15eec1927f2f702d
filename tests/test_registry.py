"""Avro through a Confluent-compatible schema registry, on both backends, read back by PyIceberg: values written by
confluent-kafka's own AvroSerializer (v1, then v2 adding a nested record mid-stream) land exactly in the table;
plain JSON, unknown schema ids, truncated and padded values are dead letters with their reasons; a registry that
does not answer fails the invocation retryably (exit 75) and the same event loads once it is back, nothing lost
or duplicated; wrong credentials fail with what to fix. The registry is infra/local/registry.py, proved here
against the real client (registration, compatibility refusal, lookup by id)."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

confluent = pytest.importorskip("confluent_kafka.schema_registry")
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_MS = 1_795_000_000_000
TABLE = "shop.orders"
DEAD = "shop.orders_dead_letters"

V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "item", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
SHIP = {
    "type": "record",
    "name": "Ship",
    "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"], "default": None}],
}
V2 = {**V1, "fields": [*V1["fields"], {"name": "ship", "type": ["null", SHIP], "default": None}]}

def pipeline_text(source: str, columns: list[str]) -> str:
    """The orders pipeline: `source` lines under [source], then the columns (TOML inline tables)."""
    return (
        f'name = "orders"\n[source]\ntopics = ["orders"]\n{source}\n[table]\nnamespace = "shop"\nname = "orders"\n'
        + "columns = [\n" + "".join(f"  {c},\n" for c in columns) + "]\n"
    )


COLUMNS = [
    '{ name = "id", type = "long", required = true }',
    '{ name = "item", type = "string", required = true }',
    '{ name = "price", type = "decimal(10,2)" }',
    '{ name = "status", type = "string" }',
    '{ name = "placed_at", type = "timestamptz" }',
    '{ name = "tags", type = "list<string>" }',
    '{ name = "note", type = "string" }',
    '{ name = "ship", type = "struct<city: string, zip: string>" }',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """infra/local/registry.py on a fixed port, its registrations in a file: stop and start simulate an outage."""

    def __init__(self, folder: Path, user: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = folder / "registry.json"
        self.user = user
        self.proc: subprocess.Popen | None = None

    def start(self):
        args = [sys.executable, str(ROOT / "infra/local/registry.py"), "--port", str(self.port), "--data", str(self.data)]
        if self.user:
            args += ["--user", self.user]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the registry did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self) -> SchemaRegistryClient:
        conf = {"url": self.url}
        if self.user:
            conf["basic.auth.user.info"] = self.user
        return SchemaRegistryClient(conf)


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path)
    r.start()
    yield r
    r.stop()


def order(i: int, version: int = 1) -> dict:
    o = {
        "id": i,
        "item": f"item-{i}",
        "price": decimal.Decimal(i) + decimal.Decimal("0.5"),
        "status": ["NEW", "PAID"][i % 2],
        "placed_at": datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=i),
        "tags": [f"t{j}" for j in range(i % 3)],
        "note": None if i % 4 else f"note {i}",
    }
    if version == 2:
        o["ship"] = None if i % 5 == 0 else {"city": f"city-{i % 7}", "zip": None if i % 2 else f"{i:05d}"}
    return o


def expected_row(o: dict) -> tuple:
    ship = o.get("ship")
    return (
        o["id"],
        o["item"],
        o["price"],
        o["status"],
        o["placed_at"],
        tuple(o["tags"]),
        o["note"],
        (ship["city"], ship["zip"]) if ship else None,
    )


def table_rows(floe) -> set[tuple]:
    rows = floe.table(TABLE).scan().to_arrow().to_pylist()
    out = set()
    for r in rows:
        ship = r["ship"]
        out.add(
            (
                r["id"],
                r["item"],
                r["price"],
                r["status"],
                r["placed_at"],
                tuple(r["tags"] or ()),
                r["note"],
                (ship["city"], ship["zip"]) if ship else None,
            )
        )
    assert len(out) == len(rows), "duplicate rows"
    return out


def event(values: list[bytes | None], first_offset: int = 0, partition: int = 0, keys: list | None = None) -> dict:
    keys = keys or [None] * len(values)
    records = [
        {
            "topic": "orders",
            "partition": partition,
            "offset": first_offset + i,
            "timestamp": START_MS + first_offset + i,
            "timestampType": "CREATE_TIME",
            "key": None if k is None else base64.b64encode(k).decode(),
            "value": None if v is None else base64.b64encode(v).decode(),
            "headers": [],
        }
        for i, (k, v) in enumerate(zip(keys, values))
    ]
    return {"eventSource": "aws:kafka", "eventSourceArn": "arn:orders", "records": {f"orders-{partition}": records}}


def use_pipeline(floe, tmp_path: Path, url: str):
    path = tmp_path / "orders.toml"
    path.write_text(pipeline_text(f'format = "avro"\nregistry = {{ url = "{url}" }}', COLUMNS))
    floe.pipeline = path


def serializers(registry: Registry):
    client = registry.client()
    return AvroSerializer(client, json.dumps(V1)), AvroSerializer(client, json.dumps(V2))


CTX = SerializationContext("orders", MessageField.VALUE)


def test_the_stand_in_behaves_like_a_registry_for_the_real_client(registry):
    """Registration, lookup by id, a compatible v2 and a refused incompatible v3, as confluent-kafka sees them."""
    s1, s2 = serializers(registry)
    b1, b2 = s1(order(1), CTX), s2(order(2, 2), CTX)
    assert b1[0] == 0 and int.from_bytes(b1[1:5], "big") == 1
    assert int.from_bytes(b2[1:5], "big") == 2
    back = AvroDeserializer(registry.client())
    assert back(b2, CTX)["ship"] == order(2, 2)["ship"]
    incompatible = {**V1, "fields": [{"name": "id", "type": "string"}]}
    with pytest.raises(SchemaRegistryError, match="incompatible"):
        AvroSerializer(registry.client(), json.dumps(incompatible))(
            {"id": "x"}, SerializationContext("orders", MessageField.VALUE)
        )
    assert registry.client().get_versions("orders-value") == [1, 2]


def test_avro_versions_land_exactly_and_bad_values_are_dead_letters(floe, registry, tmp_path):
    use_pipeline(floe, tmp_path, registry.url)
    s1, s2 = serializers(registry)
    orders = [order(i) for i in range(1, 41)] + [order(i, 2) for i in range(41, 81)]
    values = [s1(o, CTX) if i < 40 else s2(o, CTX) for i, o in enumerate(orders)]
    truncated = values[3][:-4]
    padded = values[4] + b"\x00\x00"
    unknown = b"\x00\x00\x00\x03\xe7" + values[5][5:]  # schema id 999
    bad = [b'{"id": 1}', truncated, unknown, padded, None]
    # Bad values interleaved with the good: offsets 0..79 good, 80..84 bad, in one event and a second event.
    floe.ingest([event(values[:40] + bad), event(values[40:], first_offset=45)])
    floe.compact()
    assert table_rows(floe) == {expected_row(o) for o in orders}
    dead = floe.table(DEAD).scan().to_arrow().to_pylist()
    got = {(d["offset"], d["error_kind"]) for d in dead}
    assert got == {(40, "framing"), (41, "avro"), (42, "unknown_schema"), (43, "avro"), (44, "null_value")}
    reasons = {d["offset"]: d["reason"] for d in dead}
    assert "schema id 999 is not in the schema registry" in reasons[42]
    assert "not Confluent's magic byte" in reasons[40]

    # Redelivering both events changes nothing.
    floe.ingest([event(values[:40] + bad), event(values[40:], first_offset=45)])
    floe.compact()
    assert len(floe.table(TABLE).scan().to_arrow()) == 80


def test_a_registry_outage_fails_retryably_and_the_event_loads_once_it_is_back(floe, registry, tmp_path):
    use_pipeline(floe, tmp_path, registry.url)
    s1, s2 = serializers(registry)
    orders = [order(i) for i in range(1, 11)] + [order(i, 2) for i in range(11, 21)]
    values = [s1(o, CTX) if o["id"] <= 10 else s2(o, CTX) for o in orders]
    registry.stop()
    failed = floe.ingest([event(values)], check=False)
    assert failed.returncode == 75, failed.stderr
    assert "schema registry" in failed.stderr and "after 3 attempts" in failed.stderr, failed.stderr
    registry.start()
    floe.ingest([event(values)])
    floe.compact()
    assert table_rows(floe) == {expected_row(o) for o in orders}
    assert len(floe.table(DEAD).scan().to_arrow()) == 0


def test_credentials_are_sent_and_wrong_ones_fail_with_what_to_fix(floe, tmp_path):
    registry = Registry(tmp_path, user="floe:s3cret")
    registry.start()
    try:
        use_pipeline(floe, tmp_path, registry.url)
        s1, _ = serializers(registry)
        values = [s1(order(i), CTX) for i in range(1, 4)]
        floe.extra_env["FLOE_REGISTRY_AUTH"] = "floe:wrong"
        failed = floe.ingest([event(values)], check=False)
        assert failed.returncode == 1, failed.stderr
        assert "refused floe's credentials (FLOE_REGISTRY_AUTH)" in failed.stderr, failed.stderr
        if floe.moto:
            # Deployed: the credentials are read from Secrets Manager at cold start, never put in the environment.
            del floe.extra_env["FLOE_REGISTRY_AUTH"]
            arn = floe.moto.client("secretsmanager").create_secret(Name="registry", SecretString="floe:s3cret")["ARN"]
            floe.extra_env["FLOE_REGISTRY_AUTH_SECRET"] = arn
        else:
            floe.extra_env["FLOE_REGISTRY_AUTH"] = "floe:s3cret"
        floe.ingest([event(values)])
        floe.compact()
        assert table_rows(floe) == {expected_row(order(i)) for i in range(1, 4)}
    finally:
        registry.stop()


GLUE_REGISTRY = "floe-tests"


@pytest.fixture
def glue_floe(moto, tmp_path):
    """floe on the AWS backend (moto), whose Glue also serves the schema registry."""
    from conftest import Floe

    moto.reset()
    home = tmp_path / "home"
    home.mkdir()
    f = Floe(home, moto)
    path = tmp_path / "orders.toml"
    path.write_text(pipeline_text(f'format = "avro"\nframing = "glue"\nregistry = {{ glue = "{GLUE_REGISTRY}" }}', COLUMNS))
    f.pipeline = path
    return f


def test_glue_framed_avro_plain_and_zlib_lands_exactly(glue_floe, moto):
    """Values framed by the aws-glue-schema-registry package (an independent serializer: version byte 3,
    compression byte, schema version UUID), uncompressed and zlib-compressed, schema v1 then v2."""
    from aws_schema_registry import DataAndSchema, SchemaRegistryClient as GlueClient
    from aws_schema_registry.avro import AvroSchema
    from aws_schema_registry.codec import decode, encode
    from aws_schema_registry.serde import KafkaSerializer

    glue = moto.client("glue")
    glue.create_registry(RegistryName=GLUE_REGISTRY)
    client = GlueClient(glue, registry_name=GLUE_REGISTRY)
    serializer = KafkaSerializer(client, compatibility_mode="BACKWARD")
    orders = [order(i) for i in range(1, 21)] + [order(i, 2) for i in range(21, 41)]
    values = []
    for o in orders:
        schema = AvroSchema(json.dumps(V2 if "ship" in o else V1))
        value = serializer.serialize("orders", DataAndSchema(o, schema))
        if o["id"] % 2:  # the package's codec, compressing: its serializer does not expose the option
            value = encode(*decode(value), compression=True)
        values.append(value)
    assert {v[0] for v in values} == {3} and {v[1] for v in values} == {0, 5}
    # A Confluent-framed value on a Glue pipeline, and a version id Glue does not know.
    bad = [b"\x00\x00\x00\x00\x01\x02", b"\x03\x00" + bytes(16) + values[0][18:]]
    glue_floe.ingest([event(values + bad)])
    glue_floe.compact()
    assert table_rows(glue_floe) == {expected_row(o) for o in orders}
    dead = {d["offset"]: (d["error_kind"], d["reason"]) for d in glue_floe.table(DEAD).scan().to_arrow().to_pylist()}
    assert dead[40][0] == "framing" and "looks Confluent-framed" in dead[40][1]
    assert dead[41] == ("unknown_schema", dead[41][1]) and "00000000-0000-0000-0000-000000000000" in dead[41][1]


JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "item": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ship": {"type": ["object", "null"], "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}}},
    },
    "required": ["id", "item"],
}
JSON_COLUMNS = [*COLUMNS[:2], COLUMNS[5], '{ name = "city", type = "string", from = "$.ship.city" }']


def test_json_schema_values_land_exactly(floe, registry, tmp_path):
    """Values written by confluent-kafka's own JSONSerializer (which validates them against the registered JSON
    Schema): the header is checked and stripped, the JSON body decoded against the declared columns."""
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    path = tmp_path / "orders.toml"
    path.write_text(pipeline_text(f'format = "json-schema"\nregistry = {{ url = "{registry.url}" }}', JSON_COLUMNS))
    floe.pipeline = path
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), registry.client())
    orders = [
        {"id": i, "item": f"item-{i}", "tags": [f"t{j}" for j in range(i % 3)],
         **({"ship": {"city": f"c{i}", "zip": None}} if i % 2 else {})}
        for i in range(1, 31)
    ]
    values = [serializer(o, CTX) for o in orders]
    assert values[0][0] == 0 and values[0][5:6] == b"{"
    avro = AvroSerializer(registry.client(), json.dumps(V1))(order(99), SerializationContext("other", MessageField.VALUE))
    floe.ingest([event(values + [b'{"id": 5, "item": "plain"}', avro])])
    floe.compact()
    rows = floe.table(TABLE).scan().to_arrow().to_pylist()
    got = {(r["id"], r["item"], tuple(r["tags"] or ()), r["city"]) for r in rows}
    want = {(o["id"], o["item"], tuple(o["tags"]), (o.get("ship") or {}).get("city")) for o in orders}
    assert got == want and len(rows) == len(orders)
    dead = {d["offset"]: (d["error_kind"], d["reason"]) for d in floe.table(DEAD).scan().to_arrow().to_pylist()}
    assert dead[30][0] == "framing"
    assert dead[31][0] == "unknown_schema" and "registered as Avro; this pipeline reads JSON Schema" in dead[31][1]


KEY_SCHEMA = {
    "type": "record",
    "name": "OrderKey",
    "namespace": "shop",
    "fields": [{"name": "tenant", "type": "string"}, {"name": "order_id", "type": "long"}],
}


def test_avro_keys_are_decoded_with_their_own_schema(floe, registry, tmp_path):
    """Keys written by confluent-kafka's AvroSerializer under the key subject (`orders-key`), read into columns with
    `@key.<field>`; a key that is not Avro is a `key` dead letter."""
    path = tmp_path / "orders.toml"
    columns = [
        *COLUMNS[:2],
        '{ name = "tenant", type = "string", required = true, from = "@key.tenant" }',
        '{ name = "order_id", type = "long", from = "@key.order_id" }',
    ]
    source = f'format = "avro"\nkey_format = "avro"\nregistry = {{ url = "{registry.url}" }}'
    path.write_text(pipeline_text(source, columns))
    floe.pipeline = path
    s1, _ = serializers(registry)
    key_serializer = AvroSerializer(registry.client(), json.dumps(KEY_SCHEMA))
    key_ctx = SerializationContext("orders", MessageField.KEY)
    orders = [order(i) for i in range(1, 21)]
    keys = [key_serializer({"tenant": f"t{i % 3}", "order_id": 1000 + i}, key_ctx) for i in range(1, 21)]
    values = [s1(o, CTX) for o in orders]
    assert int.from_bytes(keys[0][1:5], "big") != int.from_bytes(values[0][1:5], "big"), "own schema id"
    floe.ingest([event(values + [s1(order(99), CTX)], keys=keys + [b"plain-key"])])
    floe.compact()
    rows = floe.table(TABLE).scan().to_arrow().to_pylist()
    assert {(r["id"], r["item"], r["tenant"], r["order_id"]) for r in rows} == {
        (i, f"item-{i}", f"t{i % 3}", 1000 + i) for i in range(1, 21)
    }
    dead = floe.table(DEAD).scan().to_arrow().to_pylist()
    assert [(d["offset"], d["error_kind"]) for d in dead] == [(20, "key")]
    assert "key (framing)" in dead[0]["reason"], dead[0]["reason"]


V3 = {**V2, "fields": [*V2["fields"], {"name": "channel", "type": ["null", "string"], "default": None}]}


@pytest.mark.parametrize("declared", [[COLUMNS[0]], []], ids=["id-declared", "no-columns"])
def test_registry_evolution_takes_every_field_of_each_writer_schema(floe, registry, tmp_path, declared):
    """`evolve = "registry"` with one declared column, or none: the table takes v1's fields on the first batch, then
    the nested `ship` of v2 and the `channel` of v3 when records written with them arrive, before they are decoded;
    rows written with every version read back exactly (older rows null in the newer columns)."""
    path = tmp_path / "orders.toml"
    source = f'format = "avro"\nregistry = {{ url = "{registry.url}" }}'
    path.write_text(pipeline_text(source, declared).replace("columns = [", 'evolve = "registry"\ncolumns = ['))
    floe.pipeline = path
    client = registry.client()
    s1, s2, s3 = (AvroSerializer(client, json.dumps(v)) for v in (V1, V2, V3))
    first = [order(i) for i in range(1, 11)]
    floe.compact()  # a compactor tick before any record: with no declared column the table starts empty
    floe.ingest([event([s1(o, CTX) for o in first])])
    floe.compact()
    names = [f.name for f in floe.table(TABLE).schema().fields]
    assert names == ["id", "item", "price", "status", "placed_at", "tags", "note"], names
    second = [order(i, 2) for i in range(11, 21)]
    third = [{**order(i, 2), "channel": f"web-{i}"} for i in range(21, 31)]
    report = floe.ingest([event([s2(o, CTX) for o in second] + [s3(o, CTX) for o in third], first_offset=10)])
    assert report["columns_added"] == 4, report  # ship, ship.city, ship.zip, channel
    floe.compact()
    schema = floe.table(TABLE).schema()
    assert [f.name for f in schema.fields] == [*names, "ship", "channel"]
    assert str(schema.find_field("price").field_type) == "decimal(10, 2)"
    assert str(schema.find_field("placed_at").field_type) == "timestamptz"
    rows = floe.table(TABLE).scan().to_arrow().to_pylist()
    got = {(r["id"], r["item"], r["price"], r["placed_at"], r["note"], (r["ship"] or {}).get("city"), r["channel"])
           for r in rows}
    want = {(o["id"], o["item"], o["price"], o["placed_at"], o["note"], (o.get("ship") or {}).get("city"),
             o.get("channel")) for o in first + second + third}
    assert got == want and len(rows) == 30
    assert len(floe.table(DEAD).scan().to_arrow()) == 0


ADDRESS = {"type": "record", "name": "Address", "namespace": "common",
           "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"], "default": None}]}
WITH_REFERENCE = {"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"}, {"name": "ship", "type": ["null", "common.Address"], "default": None}]}


def test_avro_schema_references_are_resolved(floe, registry, tmp_path):
    """An Avro schema using a named type registered under its own subject (a Confluent schema reference),
    serialized by confluent-kafka's AvroSerializer: floe fetches the reference and decodes with both."""
    from confluent_kafka.schema_registry import Schema, SchemaReference

    client = registry.client()
    client.register_schema("common.Address", Schema(json.dumps(ADDRESS), "AVRO"))
    schema = Schema(json.dumps(WITH_REFERENCE), "AVRO", [SchemaReference("common.Address", "common.Address", 1)])
    serializer = AvroSerializer(client, schema)
    docs = [{"id": i, "ship": None if i % 3 == 0 else {"city": f"c{i}", "zip": None}} for i in range(1, 10)]
    values = [serializer(d, CTX) for d in docs]
    assert client.get_schema(int.from_bytes(values[0][1:5], "big")).references, "registered with a reference"
    path = tmp_path / "orders.toml"
    columns = [COLUMNS[0], '{ name = "city", type = "string", from = "$.ship.city" }']
    path.write_text(pipeline_text(f'format = "avro"\nregistry = {{ url = "{registry.url}" }}', columns))
    floe.pipeline = path
    floe.ingest([event(values)])
    floe.compact()
    rows = floe.table(TABLE).scan().to_arrow().to_pylist()
    assert sorted((r["id"], r["city"]) for r in rows) == [(d["id"], (d["ship"] or {}).get("city")) for d in docs]
