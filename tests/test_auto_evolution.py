"""Automatic evolution (`table.evolve = "add-fields"`) and raw values (`from = "@value"`) on both backends, read
back by PyIceberg: fields the records have and the table lacks become optional columns with inferred types (at
the top level and inside a struct, as lists and nested structs), within `max_new_columns`; a later cold start
reads the columns an earlier one added; a value that conflicts with a column it added is a dead letter naming the
field; each record's value is kept as received. On moto, the Glue table's columns follow."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import msk

TABLE = "auto.events"
DEAD = "auto.events_dead_letters"
START_MS = 1_795_000_000_000

PIPELINE = """
name = "auto"
[source]
topics = ["auto"]
[table]
namespace = "auto"
name = "events"
evolve = "add-fields"
max_new_columns = 6
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
[[table.columns]]
name = "raw"
type = "string"
from = "@value"
[[table.partition]]
column = "ts"
transform = "day"
"""


def event(first: int, texts: list[str], partition: int = 0) -> dict:
    return msk.values_event("auto", partition, first, [t.encode() for t in texts], START_MS)


TS = datetime.fromtimestamp(START_MS / 1000, tz=timezone.utc)


def value(i: int, **fields) -> str:
    # Spacing the decoder ignores and `raw` must keep.
    return json.dumps({"id": i, "ts": TS.isoformat(), **fields}, indent=1)


def test_new_fields_become_columns_within_the_bound(floe, tmp_path):
    path = tmp_path / "auto.toml"
    path.write_text(PIPELINE)
    floe.pipeline = path
    first = [
        value(0, user={"name": "a"}),
        # New: meta (a struct of 2), score, tags, user.tier: 6 columns, the whole budget.
        value(1, user={"name": "b", "tier": "gold"}, score=5, tags=["x", "y"], meta={"src": "web", "v": 2}),
        value(2, score=7.5),  # a fraction after an integer: the new column is a double
        value(3, user={"name": "d"}, extra=1),  # over the budget: the record loads, `extra` is not kept
    ]
    report = floe.ingest([event(0, first)])
    assert (report["rows"], report["dead_letters"], report["columns_added"]) == (4, 0, 6), report
    # A later cold start reads what the earlier one added; a value that conflicts with it is a dead letter.
    second = [value(4, score=1, tags=["z"], meta={"src": "app"}), value(5, score="high")]
    report = floe.ingest([event(4, second)])
    assert (report["rows"], report["dead_letters"], report["columns_added"]) == (1, 1, 0), report
    floe.compact()

    table = floe.table(TABLE)
    fields = [(f.name, str(f.field_type), f.required) for f in table.schema().fields]
    assert [(n, r) for n, _, r in fields] == [
        ("id", True),
        ("user", False),
        ("ts", True),
        ("raw", False),
        ("meta", False),
        ("score", False),
        ("tags", False),
    ], fields
    user = table.schema().find_field("user").field_type
    assert [f.name for f in user.fields] == ["name", "tier"]
    got = {r["id"]: r for r in table.scan().to_arrow().to_pylist()}
    texts = {i: t for i, t in enumerate(first + second)}
    assert got == {
        0: {"id": 0, "user": {"name": "a", "tier": None}, "ts": TS, "raw": texts[0], "meta": None, "score": None,
            "tags": None},
        1: {"id": 1, "user": {"name": "b", "tier": "gold"}, "ts": TS, "raw": texts[1],
            "meta": {"src": "web", "v": 2}, "score": 5.0, "tags": ["x", "y"]},
        2: {"id": 2, "user": None, "ts": TS, "raw": texts[2], "meta": None, "score": 7.5, "tags": None},
        3: {"id": 3, "user": {"name": "d", "tier": None}, "ts": TS, "raw": texts[3], "meta": None, "score": None,
            "tags": None},
        4: {"id": 4, "user": None, "ts": TS, "raw": texts[4], "meta": {"src": "app", "v": None}, "score": 1.0,
            "tags": ["z"]},
    }
    assert str(table.schema().find_field("score").field_type) == "double"
    dead = floe.table(DEAD).scan().to_arrow().to_pylist()
    assert [(d["offset"], d["error_kind"]) for d in dead] == [(5, "schema")], dead
    assert "$.score" in dead[0]["reason"], dead[0]["reason"]
    assert dead[0]["value"] == texts[5].encode()

    # The file still validates against the table: automatic columns are the table's, not a change to undo.
    assert "up to date" in floe.validate(path).stdout
    if floe.moto:
        _, columns = floe.moto.glue_table("auto", "events")
        assert columns == {
            "id": "bigint",
            "user": "struct<name:string,tier:string>",
            "ts": "timestamp",
            "raw": "string",
            "meta": "struct<src:string,v:bigint>",
            "score": "double",
            "tags": "array<string>",
        }, columns


def test_two_containers_adding_the_same_field_agree_on_the_table(floe, tmp_path):
    """Container A finds `score` as a long and pauses with its evolution written but not swapped in; container B
    finds `score` as a string and commits first. A loses the compare-and-swap, plans again on B's table, takes
    its `score` (the table decides), and its record whose value does not fit becomes a dead letter."""
    path = tmp_path / "auto.toml"
    path.write_text(PIPELINE)
    floe.pipeline = path
    floe.ingest([event(0, [value(0)])])  # creates the table
    release = tmp_path / "release"
    a = floe.start_ingest([event(0, [value(1, score=1)], partition=1)], pause_at=f"catalog.before_swap=@{release}")
    line = a.stderr.readline()
    assert "paused at catalog.before_swap" in line, line
    b = floe.ingest([event(0, [value(2, score="x", color="red")], partition=2)])
    assert (b["rows"], b["columns_added"]) == (1, 2), b
    release.touch()
    out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert "the table moved while evolving it" in err, err
    report = json.loads(out)
    assert (report["rows"], report["dead_letters"], report["columns_added"]) == (0, 1, 0), report
    floe.compact()

    table = floe.table(TABLE)
    assert [(f.name, str(f.field_type)) for f in table.schema().fields][-2:] == [("color", "string"), ("score", "string")]
    got = {r["id"]: (r["score"], r["color"]) for r in table.scan().to_arrow().to_pylist()}
    assert got == {0: (None, None), 2: ("x", "red")}
    dead = floe.table(DEAD).scan().to_arrow().to_pylist()
    assert [(d["partition"], d["error_kind"]) for d in dead] == [(1, "schema")], dead
    assert "$.score" in dead[0]["reason"], dead[0]["reason"]


def test_an_older_file_reads_a_renamed_column_once(floe, tmp_path):
    """With automatic evolution, a cold start reads the table's columns beyond the file's. A column the table renamed
    (`qty` → `quantity`) is not one of them for a container still on the older file, which names it `qty`."""
    v1 = tmp_path / "v1.toml"
    v1.write_text(PIPELINE + '[[table.columns]]\nname = "qty"\ntype = "long"\n')
    v2 = tmp_path / "v2.toml"
    v2.write_text(PIPELINE + '[[table.columns]]\nname = "quantity"\ntype = "long"\nrenamed_from = "qty"\n')
    floe.pipeline = v1
    floe.ingest([event(0, [value(0, qty=4)])])
    floe.pipeline = v2
    floe.ingest([event(1, [value(1, quantity=5, score=1)])])
    floe.pipeline = v1  # an old container, started after the rename
    report = floe.ingest([event(2, [value(2, qty=6, score=2)])])
    assert (report["rows"], report["dead_letters"]) == (1, 0), report
    floe.compact()
    table = floe.table(TABLE)
    names = [f.name for f in table.schema().fields]
    assert names.count("quantity") == 1 and "qty" not in names, names
    got = {r["id"]: (r["quantity"], r["score"]) for r in table.scan().to_arrow().to_pylist()}
    assert got == {0: (4, None), 1: (5, 1), 2: (6, 2)}
