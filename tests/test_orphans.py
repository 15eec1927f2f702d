"""Orphan removal on both backends (a directory walk embedded, S3 listing on moto): files under a table that
nothing references and the ledger does not list are deleted once older than the safety window; every committed
or staged file stays, so PyIceberg still reads exactly the dataset. A commit that lands between orphan
removal's ledger read and its metadata read loses nothing, and a removal that crashes mid-way is finished by
the next one."""

from __future__ import annotations

import json

import pytest

from test_races import wait_for_line
from test_slice import DEAD, TARGET, assert_table_is_exact

import msk

# Files a crash leaves under the target table, and one outside every table.
PLANTED = {
    "analytics/events/data/never-staged-00000.parquet",
    "analytics/events/metadata/99999-crashed-before-swap.metadata.json",
}
OUTSIDE = "analytics/events_old/kept.parquet"


@pytest.fixture(scope="module")
def dataset() -> msk.Dataset:
    return msk.build(records_per_tp=120)


def half(dataset, first: bool):
    return dataset.events(per_partition=40, only=lambda r: (r.offset < 60) == first)


def test_orphans_go_and_every_referenced_or_staged_file_stays(floe, dataset):
    floe.ingest(half(dataset, True))
    floe.compact()
    floe.ingest(half(dataset, False))  # staged, not committed: only the ledger references these
    for path in [*PLANTED, OUTSIDE]:
        floe.put_object(path, b"PAR1 not really")
    before = floe.objects()

    # With the default window (3 days) the planted files are too young; nothing else is unreferenced.
    dry = floe.orphans(dry_run=True)
    assert dry[TARGET]["too_recent"] == len(PLANTED) and dry[TARGET]["orphans"] == 0, dry[TARGET]
    assert dry[TARGET]["staged"] > 0
    assert dry[DEAD]["too_recent"] == 0 and dry[DEAD]["orphans"] == 0, dry[DEAD]
    assert dry[TARGET]["listed"] == sum(1 for p in before if p.startswith("analytics/events/"))

    # A removal that dies before its first delete deletes nothing; the next one finishes.
    crashed = floe.orphans(older_than="0s", fail_at="orphans.during_delete", check=False)
    assert crashed.returncode != 0 and "orphans.during_delete" in crashed.stderr
    assert floe.objects() == before

    done = floe.orphans(older_than="0s")
    assert done[TARGET]["deleted"] == len(PLANTED), done[TARGET]
    assert {p.split("/warehouse/", 1)[-1] for p in done[TARGET]["paths"]} == PLANTED
    assert done[DEAD]["deleted"] == 0
    assert before - floe.objects() == PLANTED, "exactly the orphans went; staged and committed files stayed"
    assert OUTSIDE in floe.objects()

    floe.compact()
    assert_table_is_exact(floe, dataset)
    assert floe.orphans(older_than="0s")[TARGET]["orphans"] == 0


def test_a_commit_between_the_ledger_and_the_metadata_read_loses_nothing(floe, dataset, tmp_path):
    floe.ingest(dataset.events(per_partition=40))
    release = tmp_path / "release"
    # Every file counts as old: only the ledger and the metadata protect the staged files.
    remover = floe.start_orphans(pause_at=f"orphans.after_ledger=@{release}")
    try:
        wait_for_line(remover, "paused at orphans.after_ledger")
        # Commits the staged files as they are and forgets them in the ledger, while the remover waits.
        committed = floe.compact(no_merge=True)
        assert committed[TARGET]["staged"] > 0
        release.touch()
        out, err = remover.communicate(timeout=120)
    finally:
        if remover.poll() is None:
            remover.kill()
    assert remover.returncode == 0, err
    assert all(r["deleted"] == 0 for r in json.loads(out)), out
    assert_table_is_exact(floe, dataset)
