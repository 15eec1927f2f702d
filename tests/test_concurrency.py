"""Concurrency on both backends: the same event source mapping batch delivered twice at once, two compactors
committing the same table at once, ingest staging while a compactor commits (both orders), and maintenance
racing them: a rewrite waiting at its swap while ingest stages and a compactor commits, and two maintenance runs
rewriting the same files at once. Each race is
forced, not hoped for: the processes pause at a named step until the test releases them together. The oracle is
the fault-free run of the same events (see test_faults.py): no lost and no duplicated rows in any table, every
data file committed once, and metadata PyIceberg reads back."""

from __future__ import annotations

import json
from functools import partial

import pytest

import msk
from test_faults import NOW_MS, assert_same_as, baseline, deliveries, rewritten
from test_races import wait_for_line
from test_slice import TARGET


@pytest.fixture(scope="module")
def dataset() -> msk.Dataset:
    return msk.build(records_per_tp=120)


def finish(proc, what: str) -> dict | list:
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{what} failed:\n{err[-3000:]}"
    return json.loads(out)


def released_together(start, point: str, release) -> list:
    """Two processes started by `start(pause_at)` that both wait at `point` until the test releases them at once;
    their reports."""
    procs = [start(f"{point}=@{release}") for _ in range(2)]
    for proc in procs:
        wait_for_line(proc, f"paused at {point}")
    release.touch()
    return [finish(p, point) for p in procs]


def assert_same_as_fault_free(floe, dataset, tmp_path_factory):
    assert_same_as(floe, baseline(floe, dataset, tmp_path_factory), dataset, "race")
    # The metadata is a clean chain: every snapshot's parent is the one before it.
    table = floe.table(TARGET)
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number)
    for parent, child in zip(snapshots, snapshots[1:]):
        assert child.parent_snapshot_id == parent.snapshot_id


def test_the_same_batch_delivered_twice_at_once(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)  # before this test's own run (it resets moto)
    first, rest = deliveries(dataset)
    # Both deliveries decode, update dedup and window state, and write their files, then wait at the staging step.
    start = partial(floe.start_ingest, first, now_ms=NOW_MS)
    reports = released_together(start, "ingest.after_write", tmp_path / "release")
    # Exactly one delivery staged each partition's records; the other found them staged (a duplicate).
    records = sum(len(rs) for e in first for rs in e["records"].values())
    assert reports[0]["records"] == reports[1]["records"] == records
    assert reports[0]["duplicates"] + reports[1]["duplicates"] == records, reports
    floe.ingest(rest, now_ms=NOW_MS)
    floe.compact(now_ms=NOW_MS)
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)


def test_two_compactors_commit_the_same_files_at_once(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)
    first, rest = deliveries(dataset)
    floe.ingest(first, now_ms=NOW_MS)
    floe.ingest(rest, now_ms=NOW_MS)
    # Both plan the same commit from the same snapshot, then race on the metadata swap.
    start = partial(floe.start_compact, now_ms=NOW_MS)
    reports = released_together(start, "compactor.before_commit", tmp_path / "release")
    runs = [{r["table"]: r for r in run} for run in reports]
    committed = [r[TARGET]["snapshot_id"] is not None for r in runs]
    assert sorted(committed) == [False, True], runs  # one won the swap; the loser re-planned and found it done
    assert sum(r[TARGET]["conflicts"] for r in runs) >= 1, runs
    floe.compact(now_ms=NOW_MS)
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)
    assert len(list(floe.table(TARGET).snapshots())) == 1, "the raw rows were committed in one snapshot"


def test_ingest_stages_while_the_compactor_commits(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)
    first, rest = deliveries(dataset)
    floe.ingest(first, now_ms=NOW_MS)
    release = tmp_path / "release"
    # The compactor has planned its commit of `first`; ingest stages `rest` before the swap.
    compactor = floe.start_compact(pause_at=f"compactor.before_commit=@{release}", now_ms=NOW_MS)
    wait_for_line(compactor, "paused at compactor.before_commit")
    floe.ingest(rest, now_ms=NOW_MS)
    release.touch()
    report = {r["table"]: r for r in finish(compactor, "compactor")}
    assert report[TARGET]["snapshot_id"] is not None
    floe.compact(now_ms=NOW_MS)  # the next run commits what was staged meanwhile
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)


def test_the_compactor_runs_while_ingest_is_between_writing_and_staging(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)
    first, rest = deliveries(dataset)
    floe.ingest(first, now_ms=NOW_MS)
    release = tmp_path / "release"
    # Ingest has written the files of `rest` but not staged them: the compactor must not commit them.
    ingest = floe.start_ingest(rest, pause_at=f"ingest.after_write=@{release}", now_ms=NOW_MS)
    wait_for_line(ingest, "paused at ingest.after_write")
    floe.compact(now_ms=NOW_MS)
    release.touch()
    finish(ingest, "ingest")
    floe.compact(now_ms=NOW_MS)
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)


def small_commits(floe, dataset) -> list[dict]:
    """Two unmerged commits of two thirds of the dataset (small files for a rewrite); the last third is returned."""
    events = dataset.events(per_partition=20)
    third = len(events) // 3
    for part in (events[:third], events[third : 2 * third]):
        floe.ingest(part, now_ms=NOW_MS)
        floe.compact(now_ms=NOW_MS, no_merge=True)
    return events[2 * third :]


def test_ingest_and_a_commit_land_while_a_rewrite_waits_at_its_swap(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)
    last = small_commits(floe, dataset)
    release = tmp_path / "release"
    maintain = floe.start_maintain(pause_at=f"rewrite.before_commit=@{release}", now_ms=NOW_MS)
    wait_for_line(maintain, "paused at rewrite.before_commit")
    # The rewrite has written its files and planned its replace snapshot; the table moves under it.
    floe.ingest(last, now_ms=NOW_MS)
    floe.compact(now_ms=NOW_MS, no_merge=True)
    release.touch()
    reports = finish(maintain, "maintain")
    assert sum(r["rewritten_inputs"] for r in reports) > 0, reports
    assert sum(r["conflicts"] for r in reports) >= 1, f"the rewrite never saw the commit: {reports}"
    assert rewritten(floe)
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)


def test_two_maintenance_runs_rewrite_the_same_files_at_once(floe, dataset, tmp_path, tmp_path_factory):
    baseline(floe, dataset, tmp_path_factory)
    last = small_commits(floe, dataset)
    floe.ingest(last, now_ms=NOW_MS)
    floe.compact(now_ms=NOW_MS, no_merge=True)
    # Both plan the same rewrite from the same snapshot, then race on the swap.
    start = partial(floe.start_maintain, now_ms=NOW_MS)
    runs = released_together(start, "rewrite.before_commit", tmp_path / "release")
    assert sum(r["conflicts"] for run in runs for r in run) >= 1, runs
    # The loser dropped the bins the winner rewrote and deleted its own rewritten files (a rejected swap):
    # nothing is left on disk that no snapshot references.
    assert set(floe.data_files()) == floe.committed_files("analytics")
    assert_same_as_fault_free(floe, dataset, tmp_path_factory)
