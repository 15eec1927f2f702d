"""Schema evolution on both backends, read back by PyIceberg: an edited pipeline file evolves the table in place
(new columns at the top and inside a struct, a list's struct and a map's struct; a widened int, float and decimal;
a required column made optional; a rename; a changed doc), rows written
before and after read back exactly; old and new ingest containers interleaved with compactor runs (a rolling
deployment) give the exact table; a change Iceberg does not allow is refused by `floe validate`, at ingest's cold
start and by the compactor, naming the column and both types, and nothing is committed wrongly. On moto, the Glue
table's columns follow the evolution."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import msk

TABLE = "evo.orders"
DAY_MS = 86_400_000
START_MS = 1_795_000_000_000

V1 = """
name = "evo"
[source]
topics = ["evo"]
[table]
namespace = "evo"
name = "orders"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "qty"
type = "int"
[[table.columns]]
name = "price"
type = "decimal(10,2)"
[[table.columns]]
name = "user"
type = "struct<name: string>"
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
doc = "order time"
[[table.columns]]
name = "score"
type = "float"
[[table.columns]]
name = "ref"
type = "string"
required = true
[[table.columns]]
name = "items"
type = "list<struct<sku: string>>"
[[table.columns]]
name = "attrs"
type = "map<string, struct<v: int>>"
[[table.partition]]
column = "ts"
transform = "day"
"""

# qty renamed to quantity and widened to long; price and score widened; user, the list's struct and the map's
# struct gain a field; ref becomes optional; a new column; a new doc.
V2 = (
    V1.replace('name = "qty"\ntype = "int"', 'name = "quantity"\ntype = "long"\nrenamed_from = "qty"')
    .replace("decimal(10,2)", "decimal(12,2)")
    .replace('type = "float"', 'type = "double"')
    .replace('name = "ref"\ntype = "string"\nrequired = true', 'name = "ref"\ntype = "string"')
    .replace("list<struct<sku: string>>", "list<struct<sku: string, qty: int>>")
    .replace("map<string, struct<v: int>>", "map<string, struct<v: int, unit: string>>")
    .replace("struct<name: string>", "struct<name: string, age: int>")
    .replace('doc = "order time"', 'doc = "when the order was placed"')
    + '[[table.columns]]\nname = "note"\ntype = "string"\n'
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def event(partition: int, first: int, values: list[dict]) -> dict:
    return msk.values_event("evo", partition, first, [json.dumps(v).encode() for v in values], START_MS)


def ts(i: int) -> str:
    return datetime.fromtimestamp((START_MS + (i % 3) * DAY_MS) / 1000, tz=timezone.utc).isoformat()


def v1_values(ids: range) -> list[dict]:
    return [
        {
            "id": i,
            "qty": i * 2,
            "price": 1.25 + i,
            "user": {"name": f"u{i}"},
            "ts": ts(i),
            "score": i + 0.5,  # exact in a float
            "ref": f"r{i}",
            "items": [{"sku": f"s{i}"}],
            "attrs": {"a": {"v": i}},
        }
        for i in ids
    ]


def v2_values(ids: range) -> list[dict]:
    return [
        {
            "id": i,
            "quantity": 3_000_000_000 + i,  # beyond int: needs the widened column
            "price": 1_234_567_890.12,  # 12 digits: needs decimal(12,2)
            "user": {"name": f"u{i}", "age": 20 + i % 50},
            "note": f"n{i}",
            "ts": ts(i),
            "score": 1.0e40 * (i + 1),  # beyond float: needs double
            "items": [{"sku": f"s{i}", "qty": i}],
            "attrs": {"a": {"v": i, "unit": "cm"}},
        }
        for i in ids
    ]


def as_v2_row(v: dict) -> dict:
    """The row a record reads back as from the evolved table."""
    return {
        "id": v["id"],
        "quantity": v.get("quantity", v.get("qty")),
        "price": Decimal(str(v["price"])).quantize(Decimal("0.01")),
        "user": {"name": v["user"]["name"], "age": v["user"].get("age")},
        "ts": datetime.fromisoformat(v["ts"]),
        "score": v["score"],
        "ref": v.get("ref"),
        "items": [{"sku": item["sku"], "qty": item.get("qty")} for item in v["items"]],
        "attrs": [(k, {"v": a["v"], "unit": a.get("unit")}) for k, a in v["attrs"].items()],
        "note": v.get("note"),
    }


def rows(floe) -> dict[int, dict]:
    got = floe.table(TABLE).scan().to_arrow().to_pylist()
    assert len(got) == len({r["id"] for r in got}), "duplicate rows"
    return {r["id"]: r for r in got}


def assert_exact(floe, values: list[dict]):
    assert rows(floe) == {v["id"]: as_v2_row(v) for v in values}


def test_an_edited_pipeline_evolves_the_table_in_place(floe, tmp_path):
    v1, v2 = write(tmp_path, "v1.toml", V1), write(tmp_path, "v2.toml", V2)
    floe.pipeline = v1
    before = v1_values(range(0, 30))
    floe.ingest([event(0, 0, before)])
    floe.compact()
    old = floe.table(TABLE).schema()
    qty_id = old.find_field("qty").field_id

    report = floe.validate(v2)
    assert report.returncode == 0, report.stderr
    for change in [
        "column `qty` renamed to `quantity`",
        "column `quantity`: int → long",
        "column `price`: decimal(10,2) → decimal(12,2)",
        "column `user.age` added: int",
        "column `ts`: doc changed",
        "column `score`: float → double",
        "column `ref` is now optional",
        "column `items.element.qty` added: int",
        "column `attrs.value.unit` added: string",
        "column `note` added: string",
    ]:
        assert change in report.stdout, report.stdout
    assert floe.table(TABLE).schema() == old, "validate changes nothing"

    floe.pipeline = v2
    after = v2_values(range(100, 130))
    floe.ingest([event(0, 30, after)])
    floe.compact()
    table = floe.table(TABLE)
    schema = table.schema()
    assert schema.find_field("quantity").field_id == qty_id, "a rename keeps the field id"
    assert schema.find_field("ts").doc == "when the order was placed"
    assert str(schema.find_field("quantity").field_type) == "long"
    assert schema.highest_field_id > old.highest_field_id
    assert_exact(floe, before + after)
    assert "up to date" in floe.validate(v2).stdout
    if floe.moto:
        glue, columns = floe.moto.glue_table("evo", "orders")
        assert columns == {
            "id": "bigint",
            "quantity": "bigint",
            "price": "decimal(12,2)",
            "user": "struct<name:string,age:int>",
            "ts": "timestamp",
            "score": "double",
            "ref": "string",
            "items": "array<struct<sku:string,qty:int>>",
            "attrs": "map<string,struct<v:int,unit:string>>",
            "note": "string",
        }, columns
        assert glue["Parameters"]["table_type"].upper() == "ICEBERG"
        assert glue["Parameters"]["metadata_location"] == table.metadata_location


def test_a_rolling_deployment_commits_old_and_new_files_exactly(floe, tmp_path):
    v1, v2 = write(tmp_path, "v1.toml", V1), write(tmp_path, "v2.toml", V2)
    floe.pipeline = v1
    a = v1_values(range(0, 20))
    floe.ingest([event(0, 0, a)])  # staged in schema 0, not committed yet
    # An old container: started before the change, writes its files, then waits before staging them.
    b = v1_values(range(200, 220))
    release = tmp_path / "release"
    old = floe.start_ingest([event(1, 0, b)], pause_at=f"ingest.after_write=@{release}")
    line = old.stderr.readline()
    assert "paused at ingest.after_write" in line, line
    # The new deployment: ingest evolves the table, the compactor commits old and new files.
    floe.pipeline = v2
    c = v2_values(range(100, 120))
    floe.ingest([event(0, 20, c)])
    committed = floe.compact()
    assert committed[TABLE]["rows"] == len(a) + len(c)
    assert_exact(floe, a + c)
    # The old container stages in the schema it started with; the next run commits it into the evolved table.
    release.touch()
    out, err = old.communicate(timeout=120)
    assert old.returncode == 0, err
    floe.compact()
    assert_exact(floe, a + b + c)
    # A v1 process that starts now finds the table ahead of its file: `qty` is the column the table renamed
    # (its older schema says so), narrower than the table's; only the doc follows the file it read.
    evolved = floe.table(TABLE).schema()
    floe.pipeline = v1
    d = v1_values(range(300, 310))
    floe.ingest([event(1, 20, d)])
    floe.compact()
    now = floe.table(TABLE).schema()
    assert [(f.field_id, f.name, str(f.field_type)) for f in now.fields] == [
        (f.field_id, f.name, str(f.field_type)) for f in evolved.fields
    ]
    assert now.find_field("ts").doc == "order time"
    assert_exact(floe, a + b + c + d)


def test_a_change_iceberg_does_not_allow_is_refused_everywhere(floe, tmp_path):
    v1 = write(tmp_path, "v1.toml", V1)
    bad = write(
        tmp_path,
        "bad.toml",
        V1.replace('name = "qty"\ntype = "int"', 'name = "qty"\ntype = "string"')
        .replace('transform = "day"', 'transform = "hour"')
        .replace("struct<name: string>", "struct<name: long>"),
    )
    floe.pipeline = v1
    staged = v1_values(range(0, 10))
    floe.ingest([event(0, 0, staged)])
    floe.compact()
    floe.ingest([event(0, 10, v1_values(range(10, 20)))])  # staged under v1, not yet committed
    table = floe.table(TABLE)
    metadata = table.metadata_location

    expected = [
        "table evo.orders cannot take the pipeline file's schema:",
        "column `qty`: the table has `int`, the pipeline file declares `string`",
        "column `user.name`: the table has `string`, the pipeline file declares `long`",
        "partition spec: the table is partitioned by day(ts) as ts_day, the pipeline file declares hour(ts) as ts_hour",
    ]
    report = floe.validate(bad)
    assert report.returncode == 3, report
    assert "CANNOT take this file" in report.stdout, report.stdout
    for text in expected:
        assert text in report.stderr, report.stderr

    floe.pipeline = bad
    ingest = floe.ingest([event(0, 20, v1_values(range(20, 30)))], check=False)
    assert ingest.returncode == 3, ingest.stderr
    for text in expected:
        assert text in ingest.stderr, ingest.stderr
    compact = floe.compact(check=False)
    assert compact.returncode == 3, compact.stderr
    assert expected[1] in compact.stderr, compact.stderr
    assert "backtrace" not in compact.stderr.lower()
    # Nothing moved: the same metadata, the rows of the first commit only.
    assert floe.table(TABLE).metadata_location == metadata
    assert set(rows(floe)) == set(range(0, 10))
    # With the file fixed, the staged files commit.
    floe.pipeline = v1
    floe.compact()
    assert set(rows(floe)) == set(range(0, 20))
