"""Races between processes, on both backends: a compactor that planned its commit, then lost the metadata swap to
another compactor that committed more, must re-plan rather than overwrite the newer snapshot (a lost update would
drop the other compactor's files) or append twice. On moto this relies on Glue's VersionId check, which the test
harness enforces (plain moto accepts stale updates; see moto_cas_server.py and the harness test below)."""

from __future__ import annotations

import json
import time

import pytest

from test_slice import DEAD, TARGET, assert_table_is_exact, rows_by_id

import msk


@pytest.fixture(scope="module")
def dataset() -> msk.Dataset:
    return msk.build(records_per_tp=300)


def wait_for_line(proc, text: str, timeout: float = 60.0) -> list[str]:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}; stderr so far:\n{''.join(seen)}")


def race_a_paused_compactor(floe, dataset, point: str, release) -> tuple[dict, str]:
    """Commit the first half with a compactor paused at `point` while a second compactor commits both halves;
    then let the paused one finish. Returns its report for the target table and its stderr."""
    floe.ingest(dataset.events(only=lambda r: r.offset < 150))
    slow = floe.start_compact(pause_at=f"{point}=@{release}")
    try:
        wait_for_line(slow, f"paused at {point}")
        floe.ingest(dataset.events(only=lambda r: r.offset >= 150))
        fast = floe.compact()
        assert fast[TARGET]["rows"] == len(dataset.good)
        release.touch()
        out, err = slow.communicate(timeout=120)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 0, err
    return {r["table"]: r for r in json.loads(out)}[TARGET], err


def test_a_stale_compactor_loses_the_swap_and_replans(floe, dataset, tmp_path):
    # Paused after planning its commit of the first half, before the swap.
    report, _ = race_a_paused_compactor(floe, dataset, "compactor.before_commit", tmp_path / "release")
    assert (report["conflicts"], report["snapshot_id"]) == (1, None), report
    assert report["recovered"] > 0, report
    table = assert_table_is_exact(floe, dataset)
    assert len(list(table.snapshots())) == 1
    assert len(list(floe.table(DEAD).snapshots())) == 1
    assert len(rows_by_id(table)) == len(dataset.good)


def test_harness_rejects_a_stale_glue_version(moto):
    moto.reset()
    glue = moto.client("glue")
    glue.create_database(DatabaseInput={"Name": "db"})
    glue.create_table(DatabaseName="db", TableInput={"Name": "t", "Parameters": {"metadata_location": "a"}})
    version = glue.get_table(DatabaseName="db", Name="t")["Table"]["VersionId"]
    glue.update_table(DatabaseName="db", TableInput={"Name": "t", "Parameters": {"metadata_location": "b"}}, VersionId=version)
    with pytest.raises(glue.exceptions.ConcurrentModificationException):
        glue.update_table(DatabaseName="db", TableInput={"Name": "t", "Parameters": {"metadata_location": "c"}}, VersionId=version)
    assert glue.get_table(DatabaseName="db", Name="t")["Table"]["Parameters"]["metadata_location"] == "b"


def test_glue_swap_with_a_stale_version_is_rejected(moto, tmp_path, dataset):
    """The narrowest window: a compactor has read the current Glue table (VersionId) and written new metadata,
    then another compactor commits before it swaps. Only Glue's VersionId check stops the stale swap, which
    would otherwise replace the newer snapshot and lose the other compactor's files."""
    from conftest import Floe

    moto.reset()
    home = tmp_path / "home"
    home.mkdir()
    floe = Floe(home, moto)
    report, err = race_a_paused_compactor(floe, dataset, "catalog.before_swap", tmp_path / "release")
    assert "ConcurrentModificationException" in err  # logged by the compactor before it re-planned
    assert (report["conflicts"], report["snapshot_id"]) == (1, None), report
    table = assert_table_is_exact(floe, dataset)
    assert len(list(table.snapshots())) == 1
