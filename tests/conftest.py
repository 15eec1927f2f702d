"""Fixtures for floe's integration tests: the real `floe` binary on the embedded default (`floe-faults`, the same
tool built with fault hooks, where a test arms a fault), and PyIceberg's SqlCatalog as the independent reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "infra" / "local"))  # the local stack: moto, tansu, poller, compactor

PIPELINE = ROOT / "examples" / "pipeline.toml"


def _target_bin(env: str, name: str) -> Path:
    path = os.environ.get(env)
    if path:
        return Path(path)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / name


def floe_path() -> Path:
    """The `floe` command users run (no fault hooks)."""
    return _target_bin("FLOE_BIN", "floe")


def floe_faults_path() -> Path:
    """`floe-faults`: the same tool built with the `failpoints` feature (`--fail-at`, `--pause-at`)."""
    return _target_bin("FLOE_FAULTS_BIN", "floe-faults")


def now_args(now_ms: int | None) -> list[str]:
    """`--now-ms` for a processing time fixed by the test (default: the clock)."""
    return ["--now-ms", str(now_ms)] if now_ms is not None else []


class Floe:
    """Runs floe on one backend: `embedded` (a home directory) or `aws` (moto); commands that arm a fault run
    `floe-faults`."""

    def __init__(self, home: Path, moto=None, pipeline: Path = PIPELINE):
        self.home = home
        self.moto = moto
        self.backend = "aws" if moto else "embedded"
        self.pipeline = pipeline
        self.bin = floe_path()
        self.faults_bin = floe_faults_path()
        for path in (self.bin, self.faults_bin):
            if not path.exists():
                pytest.fail(f"{path} not built: run `make build`")
        self._events = 0
        self.extra_env: dict[str, str] = {}

    def _command(
        self,
        args: list[str],
        fail_at: str | None = None,
        pause_at: str | None = None,
        fail_times: int | None = None,
        faults: bool = False,
    ) -> list[str]:
        faulty = faults or fail_at is not None or pause_at is not None or fail_times is not None
        binary = self.faults_bin if faulty else self.bin
        pipelines = self.pipeline if isinstance(self.pipeline, list) else [self.pipeline]
        cmd = [str(binary), *args[:1], "--home", str(self.home)]
        for p in pipelines:  # several: one deployment, each pipeline a route into its own table
            cmd += ["--pipeline", str(p)]
        cmd += ["--backend", self.backend]
        if fail_at:
            cmd += ["--fail-at", fail_at]
        if fail_times is not None:
            cmd += ["--fail-times", str(fail_times)]
        if pause_at:
            cmd += ["--pause-at", pause_at]
        return cmd + args[1:]

    def _env(self):
        env = self.moto.floe_env() if self.moto else dict(os.environ)
        return {**env, **self.extra_env}

    def start_compact(self, pause_at: str, now_ms: int | None = None) -> subprocess.Popen:
        """A compactor in the background that pauses once at a step (it says so on stderr)."""
        now = now_args(now_ms)
        return self._start(["compact", *now], pause_at)

    def start_ingest(self, events: list[dict], pause_at: str, now_ms: int | None = None) -> subprocess.Popen:
        """An ingest invocation in the background that pauses once at a step (it says so on stderr)."""
        now = now_args(now_ms)
        return self._start(["ingest", *now, *map(str, self.write_events(events))], pause_at)

    def start_maintain(self, pause_at: str, now_ms: int | None = None) -> subprocess.Popen:
        """`floe maintain` in the background, pausing once at a step."""
        return self._start(["maintain", *now_args(now_ms)], pause_at)

    def start_orphans(self, pause_at: str, older_than: str = "0s") -> subprocess.Popen:
        """`floe-faults orphans` in the background, pausing once at a step."""
        return self._start(["orphans", "--older-than", older_than], pause_at)

    def _start(self, args: list[str], pause_at: str) -> subprocess.Popen:
        return subprocess.Popen(
            self._command(args, pause_at=pause_at),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env(),
        )

    def _run(
        self,
        args: list[str],
        fail_at: str | None = None,
        check: bool = True,
        fail_times: int | None = None,
        faults: bool = False,
    ) -> subprocess.CompletedProcess:
        cmd = self._command(args, fail_at, fail_times=fail_times, faults=faults)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=self._env())
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def write_events(self, events: list[dict]) -> list[Path]:
        folder = self.home.parent / "events"
        folder.mkdir(exist_ok=True)
        paths = []
        for event in events:
            path = folder / f"event-{self._events:05d}.json"
            self._events += 1
            path.write_text(json.dumps(event))
            paths.append(path)
        return paths

    def ingest(
        self,
        events: list[dict],
        fail_at: str | None = None,
        check: bool = True,
        now_ms: int | None = None,
        fail_times: int | None = None,
    ):
        now = now_args(now_ms)
        proc = self._run(["ingest", *now, *map(str, self.write_events(events))], fail_at, check, fail_times)
        return json.loads(proc.stdout) if proc.returncode == 0 else proc

    def compact(
        self,
        fail_at: str | None = None,
        check: bool = True,
        now_ms: int | None = None,
        fail_times: int | None = None,
        no_merge: bool = False,
    ):
        now = now_args(now_ms) + (["--no-merge"] if no_merge else [])
        proc = self._run(["compact", *now], fail_at, check, fail_times)
        return {r["table"]: r for r in json.loads(proc.stdout)} if proc.returncode == 0 else proc

    def validate(self, pipeline: Path) -> subprocess.CompletedProcess:
        """`floe validate PIPELINE` against this backend's catalog (what the next cold start would change)."""
        cmd = [str(self.bin), "validate", str(pipeline), "--backend", self.backend]
        if self.backend == "embedded":
            cmd += ["--home", str(self.home)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=self._env())

    def orphans(
        self, older_than: str | None = None, dry_run: bool = False, fail_at: str | None = None, check: bool = True
    ):
        """`floe orphans`: each table's report by name. An age under an hour (e.g. `0s`, so that files the test
        just wrote count as old) is accepted only by the test build, `floe-faults`."""
        args = ["orphans", *(["--older-than", older_than] if older_than else []), *(["--dry-run"] if dry_run else [])]
        proc = self._run(args, fail_at, check, faults=older_than is not None)
        return {r["table"]: r for r in json.loads(proc.stdout)} if proc.returncode == 0 else proc

    def backfill(self, *args: str, check: bool = True):
        """`floe backfill ARGS`: its JSON summary (or, for `--dry-run`, the plan), or the failed process."""
        proc = self._run(["backfill", *args], check=check)
        if proc.returncode != 0:
            return proc
        return json.loads(proc.stdout) if "--dry-run" in args else json.loads(proc.stdout.strip().splitlines()[-1])

    def put_object(self, path: str, body: bytes):
        """Write a file at `path` under the warehouse, behind floe's back."""
        if self.moto:
            from aws_stack import BUCKET

            self.moto.client("s3").put_object(Bucket=BUCKET, Key=f"warehouse/{path}", Body=body)
        else:
            target = self.home / "warehouse" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)

    def objects(self) -> set[str]:
        """Every file under the warehouse, as a path under it."""
        if self.moto:
            return set(self.moto.objects(""))
        warehouse = self.home / "warehouse"
        return {str(p.relative_to(warehouse)) for p in warehouse.rglob("*") if p.is_file()}

    def maintain(
        self, fail_at: str | None = None, check: bool = True, now_ms: int | None = None, fail_times: int | None = None
    ):
        """`floe maintain`: rounds until nothing is left to do; each table's summed report by name."""
        proc = self._run(["maintain", *now_args(now_ms)], fail_at, check, fail_times)
        return {r["table"]: r for r in json.loads(proc.stdout)} if proc.returncode == 0 else proc

    def catalog(self):
        if self.moto:
            return self.moto.pyiceberg_catalog()
        from pyiceberg.catalog.sql import SqlCatalog

        return SqlCatalog(
            "floe",  # must match floe_embedded::CATALOG_NAME
            uri=f"sqlite:///{self.home / 'catalog.db'}",
            warehouse=f"file://{self.home / 'warehouse'}",
        )

    def table(self, name: str):
        return self.catalog().load_table(name)

    def data_files(self) -> dict[str, bytes]:
        """Every Parquet object in the warehouse (committed or not): path under the warehouse → bytes."""
        if self.moto:
            return self.moto.objects(".parquet")
        warehouse = self.home / "warehouse"
        return {str(p.relative_to(warehouse)): p.read_bytes() for p in warehouse.rglob("*.parquet")}

    def committed_files(self, namespace: str) -> set[str]:
        """Paths under the warehouse of the data files that any snapshot of any table of a namespace references
        (a rewrite's inputs stay referenced by the snapshots before it until those expire)."""
        catalog = self.catalog()
        paths = set()
        for ident in catalog.list_tables(namespace):
            table = catalog.load_table(ident)
            for snapshot in table.snapshots():
                for f in table.inspect.files(snapshot_id=snapshot.snapshot_id).to_pylist():
                    paths.add(f["file_path"].split("/warehouse/", 1)[-1])
        return paths


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    from aws_stack import Moto

    server = Moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "aws"])
def floe(request, tmp_path: Path) -> Floe:
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "aws":
        moto = request.getfixturevalue("moto")
        moto.reset()
        return Floe(home, moto)
    return Floe(home)
