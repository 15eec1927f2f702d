"""The fault matrix: every externally visible step of ingest and the compactor made to crash or fail — crashes at
named steps, throttled state-store calls, and on the AWS backends real throttling, internal errors, timeouts and
catalog conflicts from the moto stand-in — then recovery the way Lambda recovers: the event source mapping
delivers the same event again, and the next scheduled compactor run picks up what is left.

Oracle: the fault-free run of the same events on the same backend, verified exact against the dataset (every
valid record once, every invalid one dead-lettered). After recovery every table of the pipeline — raw, dead
letters, the deduplicated stream, the window aggregates and their late tables — must equal the fault-free run
row for row (0 lost, 0 duplicated), and every data file on disk must be committed. Each cell also checks that its
fault actually fired, so a cell cannot pass vacuously."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pytest

import msk
from test_slice import assert_table_is_exact

NAMESPACE = "analytics"
# Processing time for every run: after the dataset, so windows close and are emitted deterministically.
NOW_MS = 1_795_000_000_000
# SDK attempt timeout for the timeout cells; the injected delays exceed it.
ATTEMPT_TIMEOUT_MS = "1000"


@dataclass
class Cell:
    name: str
    # "ingest": the fault hits the first delivery; "compact": it hits a compactor run; "rewrite": it hits the run
    # that rewrites the small files two unmerged commits left; "expire": it hits `floe maintain` on a table whose
    # history expires at once
    phase: str
    expect: str  # "fails": that attempt fails and recovery follows; "absorbed": retried inside the attempt
    fail_at: str | None = None  # floe failpoint (crash, or throttling for state.* calls)
    fail_times: int | None = None
    rules: list[dict] = field(default_factory=list)  # moto fault rules (AWS only)
    aws_only: bool = False
    # What the crashed run leaves unreferenced on disk, checked exactly before orphan removal deletes it:
    # "merged" (its merged files, never committed), "expired" (files only the snapshots it expired referenced).
    leaves: str | None = None

    def __str__(self):
        return self.name


def rule(target: str, effect: str, times: int, match: str = "", seconds: float = 2.5) -> dict:
    return {"target": target, "effect": effect, "times": times, "match": match, "seconds": seconds}


CELLS = [
    # Ingest: crashes at each step.
    Cell("crash after the state update, before writing files", "ingest", "fails", "ingest.after_state"),
    Cell("crash after writing data files, before staging", "ingest", "fails", "ingest.after_write"),
    Cell("crash after the staging transaction, before returning", "ingest", "fails", "ingest.after_stage"),
    # Ingest: throttled state store (SQLite busy / DynamoDB throttling surfaced past the SDK's retries).
    Cell("state store throttled: reading the fence", "ingest", "fails", "state.fence", 1),
    Cell("state store throttled: dedup claims", "ingest", "fails", "state.claim_keys", 1),
    Cell("state store throttled: window cells", "ingest", "fails", "state.put_cells", 1),
    Cell("state store throttled: the staging transaction", "ingest", "fails", "state.stage", 1),
    # Ingest on AWS: real error responses.
    Cell("DynamoDB TransactWriteItems throttled twice", "ingest", "absorbed",
         rules=[rule("dynamodb:TransactWriteItems", "throttle", 2)], aws_only=True),
    Cell("DynamoDB TransactWriteItems throttled persistently", "ingest", "fails",
         rules=[rule("dynamodb:TransactWriteItems", "throttle", 1000)], aws_only=True),
    Cell("DynamoDB BatchGetItem throttled persistently", "ingest", "fails",
         rules=[rule("dynamodb:BatchGetItem", "throttle", 1000)], aws_only=True),
    Cell("DynamoDB GetItem answers after the attempt timeout", "ingest", "absorbed",
         rules=[rule("dynamodb:GetItem", "delay_before", 1)], aws_only=True),
    Cell("DynamoDB transaction applied, answer lost to a timeout", "ingest", "absorbed",
         rules=[rule("dynamodb:TransactWriteItems", "delay_after", 1)], aws_only=True),
    Cell("S3 PUT 503 SlowDown twice", "ingest", "absorbed",
         rules=[rule("s3:PUT", "slowdown", 2, ".parquet")], aws_only=True),
    Cell("S3 PUT 503 SlowDown persistently", "ingest", "fails",
         rules=[rule("s3:PUT", "slowdown", 1000, ".parquet")], aws_only=True),
    Cell("S3 PUT 500 InternalError once", "ingest", "absorbed",
         rules=[rule("s3:PUT", "error500", 1, ".parquet")], aws_only=True),
    # Compactor: crashes at each step.
    Cell("crash after merging small staged files, before their commit", "compact", "fails",
         "compactor.after_merge", leaves="merged"),
    Cell("crash after planning, before writing metadata", "compact", "fails", "compactor.before_commit",
         leaves="merged"),
    Cell("crash after writing metadata, before the catalog swap", "compact", "fails", "catalog.before_swap",
         aws_only=True, leaves="merged"),  # the SQL catalog writes and swaps in one call: no step in between on the embedded default
    Cell("crash after the catalog swap, before marking files committed", "compact", "fails",
         "compactor.after_commit"),
    Cell("crash while deleting merged inputs, after their commit", "compact", "fails", "compactor.during_delete"),
    Cell("crash after deleting merged inputs, before marking files committed", "compact", "fails",
         "compactor.before_mark"),
    Cell("crash after writing the window file, before its commit", "compact", "fails", "emit.before_commit"),
    Cell("crash after committing windows, before cleaning their state", "compact", "fails", "emit.after_commit"),
    Cell("catalog conflict on the swap", "compact", "absorbed", "catalog.conflict", 2),
    # Compactor maintenance: rewriting committed small files.
    Cell("crash after rewriting committed small files, before the replace commit", "rewrite", "fails",
         "rewrite.before_commit", leaves="merged"),
    Cell("crash after writing the replace metadata, before the swap", "rewrite", "fails", "catalog.before_swap",
         leaves="merged"),
    Cell("crash after the replace commit", "rewrite", "fails", "rewrite.after_commit"),
    Cell("catalog conflict on the replace swap", "rewrite", "absorbed", "catalog.conflict", 2),
    # Compactor maintenance: snapshot expiry.
    Cell("crash before the expiry commit", "expire", "fails", "expire.before_commit"),
    Cell("crash after the expiry commit, before deleting what it made unreachable", "expire", "fails",
         "expire.after_commit", leaves="expired"),
    # Compactor: throttled state store.
    Cell("state store throttled: listing staged files", "compact", "fails", "state.staged_files", 1),
    Cell("state store throttled: marking files committed", "compact", "fails", "state.remove_staged", 1),
    Cell("state store throttled: moving the closed watermark", "compact", "fails", "state.set_closed", 1),
    # Compactor on AWS: real error responses.
    Cell("Glue UpdateTable ConcurrentModificationException twice", "compact", "absorbed",
         rules=[rule("glue:UpdateTable", "conflict", 2)], aws_only=True),
    Cell("Glue UpdateTable applied, answer lost to a timeout", "compact", "absorbed",
         rules=[rule("glue:UpdateTable", "delay_after", 1)], aws_only=True),
    Cell("S3 metadata PUT 503 SlowDown twice", "compact", "absorbed",
         rules=[rule("s3:PUT", "slowdown", 2, "metadata")], aws_only=True),
    Cell("S3 GET 503 SlowDown persistently", "compact", "fails",
         rules=[rule("s3:GET", "slowdown", 1000)], aws_only=True),
    Cell("DynamoDB DeleteItem throttled persistently while marking", "compact", "fails",
         rules=[rule("dynamodb:DeleteItem", "throttle", 1000)], aws_only=True),
]


@pytest.fixture(scope="module")
def dataset() -> msk.Dataset:
    return msk.build(records_per_tp=120)


def deliveries(ds: msk.Dataset) -> tuple[list[dict], list[dict]]:
    events = ds.events(per_partition=40)
    return events[:4], events[4:]


def tables(floe) -> dict[str, Counter]:
    """Every table of the pipeline as a multiset of rows."""
    catalog = floe.catalog()
    out = {}
    for ident in catalog.list_tables(NAMESPACE):
        rows = catalog.load_table(ident).scan().to_arrow().to_pylist()
        out[".".join(ident)] = Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def rewritten(floe) -> bool:
    """Whether some table of the pipeline has a replace snapshot (a rewrite of committed files)."""
    catalog = floe.catalog()
    return any(
        s.summary is not None and s.summary.operation.value == "replace"
        for ident in catalog.list_tables(NAMESPACE)
        for s in catalog.load_table(ident).snapshots()
    )


def short_history(floe, tmp_path_factory):
    """Point `floe` at the example pipeline with every snapshot but the newest due for expiry at once."""
    import shutil

    from conftest import PIPELINE

    folder = tmp_path_factory.mktemp("short-history")
    shutil.copytree(PIPELINE.parent / "reference", folder / "reference")
    text = PIPELINE.read_text()
    old = '"write.parquet.compression-codec" = "zstd"'
    assert old in text, "the example's table properties changed"
    (folder / "pipeline.toml").write_text(text.replace(old, f'{old}, "history.expire.max-snapshot-age-ms" = "1"'))
    floe.pipeline = folder / "pipeline.toml"


def clean_run(floe, ds):
    first, rest = deliveries(ds)
    floe.ingest(first, now_ms=NOW_MS)
    floe.ingest(rest, now_ms=NOW_MS)
    floe.compact(now_ms=NOW_MS)
    floe.compact(now_ms=NOW_MS)


_baselines: dict[str, dict[str, Counter]] = {}


def baseline(floe, ds, tmp_path_factory) -> dict[str, Counter]:
    """The fault-free run on this backend (computed once, before the cell's own run)."""
    if floe.backend not in _baselines:
        from conftest import Floe

        if floe.moto:
            clean = Floe(floe.home, floe.moto)
            clean_run(clean, ds)
            assert_table_is_exact(clean, ds)
            _baselines[floe.backend] = tables(clean)
            floe.moto.reset()
        else:
            home = tmp_path_factory.mktemp("baseline") / "home"
            home.mkdir()
            clean = Floe(home)
            clean_run(clean, ds)
            assert_table_is_exact(clean, ds)
            _baselines[floe.backend] = tables(clean)
        counts = {name: sum(rows.values()) for name, rows in _baselines[floe.backend].items()}
        written = [n for n in counts if not n.endswith("_late")]  # the dataset is in order: nothing is late
        assert len(written) == 4 and all(counts[n] for n in written), counts  # raw, dead letters, dedup, windows
    return _baselines[floe.backend]


def attempt(floe, cell: Cell, run):
    """Run one attempt with the cell's fault armed; check it failed or not as expected and that the fault fired."""
    if cell.rules:
        floe.moto.faults(cell.rules)
        floe.extra_env = {"FLOE_AWS_ATTEMPT_TIMEOUT_MS": ATTEMPT_TIMEOUT_MS}
    try:
        result = run(fail_at=cell.fail_at, fail_times=cell.fail_times, check=False)
    finally:
        fired = floe.moto.faults() if cell.rules else []
        if cell.rules:
            floe.moto.faults([])
            floe.extra_env = {}
    failed = not isinstance(result, dict)
    print(f"{cell}: the attempt {'failed' if failed else 'succeeded'}; faults fired: {[r['fired'] for r in fired]}")
    if cell.expect == "fails":
        assert failed, f"{cell}: the attempt succeeded"
    else:
        assert not failed, f"{cell}: the attempt failed:\n{result.stderr[-3000:]}"
    if cell.rules:
        assert all(r["fired"] > 0 for r in fired), f"{cell}: an injected fault never fired: {fired}"
    elif failed:
        assert cell.fail_at in result.stderr, f"{cell}: failed for another reason:\n{result.stderr[-3000:]}"
    else:
        assert cell.fail_at == "catalog.conflict" and result, cell
        conflicts = sum(r.get("conflicts", 0) for r in result.values())
        assert conflicts > 0, f"{cell}: no conflict was seen: {result}"
    return result, failed


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_fault_then_recovery_is_exact(floe, dataset, cell: Cell, tmp_path_factory):
    if cell.aws_only and not floe.moto:
        pytest.skip("a fault of the AWS services (the embedded default has no such step)")
    want = baseline(floe, dataset, tmp_path_factory)
    first, rest = deliveries(dataset)

    if cell.phase == "ingest":
        _, failed = attempt(floe, cell, lambda **kw: floe.ingest(first, now_ms=NOW_MS, **kw))
        if failed:
            floe.ingest(first, now_ms=NOW_MS)  # the mapping delivers the same event again
        floe.ingest(rest, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS)
    elif cell.phase == "expire":
        short_history(floe, tmp_path_factory)
        floe.ingest(first, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS, no_merge=True)
        floe.ingest(rest, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS, no_merge=True)
        attempt(floe, cell, lambda **kw: floe.maintain(now_ms=NOW_MS, **kw))
        floe.maintain(now_ms=NOW_MS)  # the next run
        assert len(floe.table("analytics.events").snapshots()) == 1, f"{cell}: the history did not expire"
    elif cell.phase == "rewrite":
        floe.ingest(first, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS, no_merge=True)
        floe.ingest(rest, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS, no_merge=True)
        attempt(floe, cell, lambda **kw: floe.compact(now_ms=NOW_MS, **kw))
        floe.compact(now_ms=NOW_MS)  # the next scheduled run
        assert rewritten(floe), f"{cell}: no table has a replace snapshot"
    else:
        floe.ingest(first, now_ms=NOW_MS)
        floe.ingest(rest, now_ms=NOW_MS)
        attempt(floe, cell, lambda **kw: floe.compact(now_ms=NOW_MS, **kw))
        floe.compact(now_ms=NOW_MS)  # the next scheduled run
    floe.compact(now_ms=NOW_MS)
    assert_same_as(floe, want, dataset, str(cell), cell.leaves)


def assert_same_as(floe, want: dict[str, Counter], ds: msk.Dataset, what: str, leaves: str | None = None):
    """Every table equals the fault-free run row for row, the raw table is exact against the dataset, and every
    data file on disk is committed — after orphan removal has deleted what a crash left, if it left something."""
    got = tables(floe)
    assert got.keys() == want.keys()
    for name in want:
        lost = want[name] - got[name]
        duplicated = got[name] - want[name]
        assert not lost and not duplicated, f"{what}: {name}: {len(lost)} lost, {len(duplicated)} extra rows"
    assert_table_is_exact(floe, ds)
    on_disk, committed = set(floe.data_files()), floe.committed_files(NAMESPACE)
    extra = on_disk - committed
    if leaves == "merged":
        assert extra and all("/floe-merged-" in p for p in extra), f"{what}: unexpected leftovers {extra}"
    elif leaves is None:
        assert not extra, f"{what}: unexpected leftovers {extra}"
    # Orphan removal (every file counts as old: nothing is being written now) takes what the crash left, and
    # nothing any table still needs: the tables stay exact.
    removed = floe.orphans(older_than="0s")
    gone = {p.split("/warehouse/", 1)[-1] for r in removed.values() for p in r["paths"]}
    assert extra <= gone, f"{what}: orphan removal left {extra - gone}"
    if leaves == "expired":
        assert gone, f"{what}: the expired snapshots' files were deleted after all"
    print(f"{what}: orphan removal deleted {sorted(gone)}")
    assert set(floe.data_files()) == committed, "every data file on disk is committed once"
    assert tables(floe) == got, f"{what}: orphan removal changed a table"
    assert_table_is_exact(floe, ds)
