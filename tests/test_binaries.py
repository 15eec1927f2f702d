"""The binaries users run carry no fault hooks: `floe` and the Lambda functions, debug and release. The hooks exist
only in `floe-faults`, the integration tests' build of the same tool (the positive control of every check here)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import ROOT, floe_faults_path, floe_path

# Text that only the `failpoints` feature compiles in: the arming options, the fired and paused messages, the
# simulated crash and the throttled state-store call.
MARKERS = [b"--fail-at", b"failpoint fired", b"paused at", b"simulated crash", b"injected fault at"]


def markers_in(path) -> list[bytes]:
    data = path.read_bytes()
    return [m for m in MARKERS if m in data]


@pytest.mark.parametrize("name", ["floe", "floe-ingest", "floe-ingest-sql", "floe-compactor"])
def test_user_binaries_contain_no_fault_hooks(name):
    path = floe_path().with_name(name)
    assert path.exists(), f"{path} is not built"
    assert markers_in(path) == [], f"{path} carries fault hooks"
    # The control: the faults build of the same code has every marker, so the search can find them.
    assert markers_in(floe_faults_path()) == MARKERS


def test_floe_rejects_fault_options():
    ingest_help = subprocess.run([floe_path(), "ingest", "--help"], capture_output=True, text=True, check=True)
    assert "--fail-at" not in ingest_help.stdout and "--pause-at" not in ingest_help.stdout
    faults_help = subprocess.run([floe_faults_path(), "ingest", "--help"], capture_output=True, text=True, check=True)
    assert "--fail-at" in faults_help.stdout and "--pause-at" in faults_help.stdout
    bad = subprocess.run([floe_path(), "compact", "--fail-at", "compactor.before_commit"], capture_output=True)
    assert bad.returncode == 2, bad


@pytest.mark.parametrize("function", ["floe-ingest", "floe-ingest-sql", "floe-compactor"])
def test_release_builds_do_not_enable_failpoints(function):
    """The zip is built with `cargo lambda build --release -p <function>` (default features: the AWS backends;
    `make package`): cargo's feature resolution for that package, the same in debug and release, must not
    enable floe-core's `failpoints`, with or without the embedded backend. Only floe-ingest-sql links
    DataFusion: the compactor and the raw ingest (IngestBuild=raw) do not."""
    env = {**os.environ, "CARGO_TERM_COLOR": "never"}
    for extra in ([], ["--features", "embedded"]):
        tree = subprocess.run(
            ["cargo", "tree", "--locked", "-p", function, *extra, "-e", "features", "-i", "floe-core"],
            capture_output=True, text=True, cwd=ROOT, env=env, check=True,
        ).stdout
        assert "floe-core feature" in tree, tree  # the inverse tree lists floe-core's enabled features
        assert '"failpoints"' not in tree, tree
        linked = subprocess.run(
            ["cargo", "tree", "--locked", "-p", function, *extra, "-e", "normal", "--prefix", "none"],
            capture_output=True, text=True, cwd=ROOT, env=env, check=True,
        ).stdout
        crates = {line.split()[0] for line in linked.splitlines() if line.strip()}
        assert ("datafusion" in crates) == (function == "floe-ingest-sql"), sorted(crates)
        # The Lambda build links no SQLite unless asked for the embedded backend.
        assert ("libsqlite3-sys" in crates) == (extra != []), sorted(crates)
    faults = subprocess.run(
        ["cargo", "tree", "--locked", "-p", "floe-cli", "--features", "failpoints", "-e", "features", "-i", "floe-core"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    ).stdout
    assert 'floe-core feature "failpoints"' in faults, faults
