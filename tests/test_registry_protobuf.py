"""Protobuf through schema registries: values written by confluent-kafka's own ProtobufSerializer against the
Confluent-compatible stand-in, and Glue-framed values (by the Glue wire format's definition) against moto's Glue
Schema Registry, land exactly in the table (read back with PyIceberg); bad values are dead letters with reasons.

The message classes are generated at test time by protoc (grpcio-tools), each schema version in its own descriptor
pool (the two versions define the same message names)."""

from __future__ import annotations

import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest

pytest.importorskip("confluent_kafka.schema_registry.protobuf")
pytest.importorskip("grpc_tools")
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402
from test_registry import COLUMNS, CTX, DEAD, event, expected_row, order, pipeline_text, table_rows  # noqa: E402
from test_registry import registry  # noqa: E402,F401  (the stand-in fixture)

V1 = """syntax = "proto3";
package shop;

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Order {
  enum Status { NEW = 0; PAID = 1; }
  int64 id = 1;
  string item = 2;
  string price = 3;
  Status status = 4;
  google.protobuf.Timestamp placed_at = 5;
  repeated string tags = 6;
  google.protobuf.StringValue note = 7;
}
"""
# v2 adds a nested message field, declared before Order (so Order's Confluent message index becomes [1]).
V2 = V1.replace(
    "message Order {",
    "message Ship {\n  string city = 1;\n  optional string zip = 2;\n}\n\nmessage Order {",
).replace("  google.protobuf.StringValue note = 7;\n", "  google.protobuf.StringValue note = 7;\n  Ship ship = 8;\n")


def message_class(proto: str, folder: Path, name: str = "shop.Order", imports: dict[str, str] | None = None):
    """The class of message `name` in `proto` (importing `imports`, path → text), compiled by protoc into a
    descriptor pool of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orders.proto").write_text(proto)
    for path, text in (imports or {}).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    out = folder / "orders.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", "--include_imports", f"--descriptor_set_out={out}",
         "orders.proto"],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def to_message(cls, o: dict):
    m = cls(id=o["id"], item=o["item"], price=str(o["price"]), tags=o["tags"])
    m.status = cls.DESCRIPTOR.enum_types_by_name["Status"].values_by_name[o["status"]].number
    m.placed_at.FromDatetime(o["placed_at"])
    if o["note"] is not None:
        m.note.value = o["note"]
    if o.get("ship"):
        m.ship.city = o["ship"]["city"]
        if o["ship"]["zip"] is not None:
            m.ship.zip = o["ship"]["zip"]
    return m


def orders() -> list[dict]:
    return [order(i) for i in range(1, 31)] + [order(i, 2) for i in range(31, 61)]


def test_protobuf_versions_land_exactly_and_bad_values_are_dead_letters(floe, registry, tmp_path):
    path = tmp_path / "orders.toml"
    path.write_text(pipeline_text(f'format = "protobuf"\nregistry = {{ url = "{registry.url}" }}', COLUMNS))
    floe.pipeline = path
    v1, v2 = message_class(V1, tmp_path / "v1"), message_class(V2, tmp_path / "v2")
    client = registry.client()
    s1, s2 = ProtobufSerializer(v1, client, {}), ProtobufSerializer(v2, client, {})
    all_orders = orders()
    values = [(s2 if "ship" in o else s1)(to_message(v2 if "ship" in o else v1, o), CTX) for o in all_orders]
    assert values[0][5] == 0 and values[-1][5:7] == b"\x02\x02", "message indexes [0] (short form) and [1]"
    assert ProtobufDeserializer(v2, {"use.deprecated.format": False})(values[-2], CTX).ship.city == "city-3"

    truncated = values[3][:-3]
    unknown = b"\x00\x00\x00\x03\xe7" + values[5][5:]  # schema id 999
    no_such_message = values[6][:5] + b"\x02\x0a" + values[6][6:]  # message index [5]
    bad = [b'{"id": 1}', truncated, unknown, no_such_message, None]
    floe.ingest([event(values[:30] + bad), event(values[30:], first_offset=35)])
    floe.compact()
    assert table_rows(floe) == {expected_row(o) for o in all_orders}
    dead = {d["offset"]: (d["error_kind"], d["reason"]) for d in floe.table(DEAD).scan().to_arrow().to_pylist()}
    assert {o: k for o, (k, _) in dead.items()} == {
        30: "framing", 31: "protobuf", 32: "unknown_schema", 33: "framing", 34: "null_value"
    }
    assert "undecodable Protobuf value (shop.Order of schema id 1)" in dead[31][1]
    assert "message indexes [5] name no message" in dead[33][1]

    # Redelivery changes nothing.
    floe.ingest([event(values[:30] + bad), event(values[30:], first_offset=35)])
    floe.compact()
    assert len(floe.table("shop.orders").scan().to_arrow()) == len(all_orders)


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def glue_frame(version_id: str, index: int, message: bytes, compress: bool) -> bytes:
    """The Glue Schema Registry's Protobuf wire format: header version 3, compression (0 none, 5 zlib), the schema
    version UUID, then (compressed as a whole when compressing) the message index as a varint and the message."""
    body = varint(index) + message
    if compress:
        return b"\x03\x05" + uuid.UUID(version_id).bytes + zlib.compress(body)
    return b"\x03\x00" + uuid.UUID(version_id).bytes + body


def test_glue_framed_protobuf_plain_and_zlib_lands_exactly(moto, tmp_path):
    """Schemas registered in moto's Glue Schema Registry as `.proto` text (what Glue stores), v1 then v2; the
    message index counts every message, nested ones too, sorted by full name (Glue's MessageIndexFinder)."""
    from conftest import Floe

    moto.reset()
    home = tmp_path / "home"
    home.mkdir()
    floe = Floe(home, moto)
    path = tmp_path / "orders.toml"
    path.write_text(pipeline_text('format = "protobuf"\nframing = "glue"\nregistry = { glue = "floe-proto" }', COLUMNS))
    floe.pipeline = path
    glue = moto.client("glue")
    glue.create_registry(RegistryName="floe-proto")
    created = glue.create_schema(
        RegistryId={"RegistryName": "floe-proto"}, SchemaName="orders", DataFormat="PROTOBUF",
        Compatibility="BACKWARD", SchemaDefinition=V1,
    )
    id1 = created["SchemaVersionId"]
    id2 = glue.register_schema_version(
        SchemaId={"RegistryName": "floe-proto", "SchemaName": "orders"}, SchemaDefinition=V2
    )["SchemaVersionId"]
    v1, v2 = message_class(V1, tmp_path / "v1"), message_class(V2, tmp_path / "v2")
    # Sorted full names: v1 shop.Order (0); v2 shop.Order (0), shop.Ship (1).
    all_orders = orders()
    values = [
        glue_frame(id2 if "ship" in o else id1, 0, to_message(v2 if "ship" in o else v1, o).SerializeToString(),
                   compress=o["id"] % 2 == 1)
        for o in all_orders
    ]
    # A Ship (index 1 of v2) has no id, a required column; an index beyond the schema; a Confluent frame.
    ship = message_class(V2, tmp_path / "ship", "shop.Ship")(city="Oslo").SerializeToString()
    bad = [glue_frame(id2, 1, ship, compress=False), glue_frame(id1, 7, b"", compress=False), b"\x00\x00\x00\x00\x01\x00"]
    floe.ingest([event(values + bad)])
    floe.compact()
    assert table_rows(floe) == {expected_row(o) for o in all_orders}
    dead = {d["offset"]: (d["error_kind"], d["reason"]) for d in floe.table(DEAD).scan().to_arrow().to_pylist()}
    assert dead[60][0] == "schema" and "`id`" in dead[60][1], dead[60]
    assert dead[61][0] == "framing" and "message index 7 names no message" in dead[61][1], dead[61]
    assert dead[62][0] == "framing" and "looks Confluent-framed" in dead[62][1], dead[62]


def test_registry_evolution_takes_each_protobuf_writer_schemas_fields(floe, registry, tmp_path):
    """`evolve = "registry"` with Protobuf: v1's fields on the first batch, v2's nested `ship` when v2 records
    arrive (the message each value names, found by its message index)."""
    path = tmp_path / "orders.toml"
    source = f'format = "protobuf"\nregistry = {{ url = "{registry.url}" }}'
    path.write_text(pipeline_text(source, [COLUMNS[0]]).replace("columns = [", 'evolve = "registry"\ncolumns = ['))
    floe.pipeline = path
    v1, v2 = message_class(V1, tmp_path / "v1"), message_class(V2, tmp_path / "v2")
    client = registry.client()
    s1, s2 = ProtobufSerializer(v1, client, {}), ProtobufSerializer(v2, client, {})
    all_orders = orders()
    values = [(s2 if "ship" in o else s1)(to_message(v2 if "ship" in o else v1, o), CTX) for o in all_orders]
    floe.ingest([event(values[:30])])
    floe.compact()
    names = [f.name for f in floe.table("shop.orders").schema().fields]
    assert names == ["id", "item", "price", "status", "placed_at", "tags", "note"], names
    report = floe.ingest([event(values[30:], first_offset=30)])
    assert report["columns_added"] == 3, report  # ship, ship.city, ship.zip
    floe.compact()
    table = floe.table("shop.orders")
    assert str(table.schema().find_field("placed_at").field_type) == "timestamptz"
    rows = table.scan().to_arrow().to_pylist()
    got = {(r["id"], r["item"], r["status"], r["placed_at"], r["note"],
            (r["ship"]["city"], r["ship"]["zip"]) if r["ship"] else None) for r in rows}
    want = {(o["id"], o["item"], o["status"], o["placed_at"], o["note"],
             (o["ship"]["city"], o["ship"]["zip"]) if o.get("ship") else None) for o in all_orders}
    assert got == want and len(rows) == len(all_orders)


COMMON = """syntax = "proto3";
package common;

message Address {
  string city = 1;
  string country = 2;
}
"""
WITH_IMPORT = """syntax = "proto3";
package shop;

import "common/address.proto";

message Order {
  int64 id = 1;
  common.Address ship_to = 2;
}
"""


def test_protobuf_schema_references_are_resolved(floe, registry, tmp_path):
    """A schema importing another file: confluent-kafka's ProtobufSerializer registers the import under its own
    subject and the schema with a reference to it; floe fetches the reference by subject and version and compiles
    both."""
    cls = message_class(WITH_IMPORT, tmp_path / "proto", imports={"common/address.proto": COMMON})
    serializer = ProtobufSerializer(cls, registry.client(), {})
    values = [serializer(cls(id=i, ship_to={"city": f"c{i}", "country": "NO"}), CTX) for i in range(1, 6)]
    registered = registry.client().get_schema(int.from_bytes(values[0][1:5], "big"))
    assert [r.name for r in registered.references] == ["common/address.proto"], registered.references
    path = tmp_path / "orders.toml"
    columns = ['{ name = "id", type = "long", required = true }',
               '{ name = "ship_to", type = "struct<city: string, country: string>" }']
    path.write_text(pipeline_text(f'format = "protobuf"\nregistry = {{ url = "{registry.url}" }}', columns))
    floe.pipeline = path
    floe.ingest([event(values)])
    floe.compact()
    rows = floe.table("shop.orders").scan().to_arrow().to_pylist()
    assert sorted((r["id"], r["ship_to"]["city"], r["ship_to"]["country"]) for r in rows) == [
        (i, f"c{i}", "NO") for i in range(1, 6)
    ]
