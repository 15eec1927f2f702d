"""floe's local stack: a real Kafka-protocol broker (tansu), moto for S3/DynamoDB/Glue, the local MSK event source
mapping (`floe poll`) and the compactor on a schedule (`floe compact --every`). Every process is
started here, on 127.0.0.1, and stopped by its PID.

`make local` runs `main()`: it starts the stack, produces a stream of sample events and prints progress until the
table has caught up, then the produce → queryable latency. The end-to-end tests drive the same classes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aws_stack import Moto, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TANSU_SH = ROOT / "infra" / "local" / "tansu.sh"
PIPELINE = ROOT / "examples" / "pipeline.toml"
TOPICS = ["clicks:3", "orders:2"]  # the topics of examples/pipeline.toml
TARGET = "analytics.events"
DEAD = "analytics.events_dead_letters"


def _json_lines(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines file another process is appending to: a line counts once its newline is
    written (a reader can catch the writer between the line and its newline)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


def committed_rows(status: dict) -> int:
    """Rows committed to the target and dead-letter tables, from a `floe status` answer."""
    return sum(status["tables"].get(name, {}).get("rows", 0) for name in (TARGET, DEAD))


class Tansu:
    """The broker, with SQLite storage in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        out = subprocess.run([str(TANSU_SH), "start", str(self.port), str(folder)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"tansu did not start: {out.stderr}")
        self.pid = int(out.stdout.split()[-1])

    def stop(self):
        subprocess.run([str(TANSU_SH), "stop", str(self.folder)], check=False)


class Proc:
    """A floe process in the background, its output in `<folder>/<name>.log`."""

    def __init__(self, cmd: list[str], env: dict, folder: Path, name: str, cwd: Path | None = None):
        self.name = name
        self.log_path = folder / f"{name}.log"
        self._log = open(self.log_path, "a")
        self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, text=True, cwd=cwd)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self):
        """SIGKILL: a crash, nothing gets to finish."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._log.close()

    def stop(self, timeout: float = 30):
        """SIGTERM: the poller finishes its in-flight invocations, the compactor stops between runs."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()

    def wait_for(self, text: str, timeout: float = 120):
        deadline = time.time() + timeout
        while text not in self.log():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited before `{text}`:\n{self.log()[-3000:]}")
            if time.time() > deadline:
                raise TimeoutError(f"{self.name}: no `{text}` within {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)


OUTPUTS_MARKER = "# ---- Derived outputs"


def raw_pipeline(folder: Path) -> Path:
    """examples/pipeline.toml without its derived outputs (the raw table and dead letters only), written to
    `folder`. The Kafka end-to-end tests measure the raw path with it: on moto, every DynamoDB transaction copies
    the whole table, so per-record dedup claims would dominate their timings (tests/test_stream.py covers the
    outputs on moto)."""
    text = PIPELINE.read_text()
    path = folder / "pipeline-raw.toml"
    path.write_text(text[: text.index(OUTPUTS_MARKER)])
    return path


class Stack:
    """floe on moto and tansu, driven through the real `floe` binary (`floe-faults` for a process that arms a fault)."""

    def __init__(
        self, floe: Path, folder: Path, moto: Moto, kafka: Tansu, pipeline: Path = PIPELINE, faults: Path | None = None
    ):
        self.bin = str(floe)
        self.faults_bin = str(faults or Path(floe).with_name("floe-faults"))
        self.folder = folder
        self.moto = moto
        self.kafka = kafka
        self.pipeline = pipeline
        self.esm_dir = folder / "esm"
        self.env = {**moto.floe_env(), "RUST_LOG": os.environ.get("RUST_LOG", "info")}
        self.procs: list[Proc] = []

    def _common(self) -> list[str]:
        pipelines = self.pipeline if isinstance(self.pipeline, list) else [self.pipeline]
        return ["--backend", "aws", *[a for p in pipelines for a in ("--pipeline", str(p))]]

    def run(self, *args: str) -> dict:
        out = subprocess.run([self.bin, *args], capture_output=True, text=True, env=self.env, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"floe {' '.join(args)} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def create_topics(self, topics: list[str] = TOPICS) -> dict:
        return self.run("topics", "--brokers", self.kafka.bootstrap, *topics)

    def start(self, name: str, *args: str) -> Proc:
        faulty = any(a in ("--fail-at", "--fail-times", "--pause-at") for a in args)
        return self.start_with_env(name, self.env, [self.faults_bin if faulty else self.bin, *args])

    def start_poller(self, *extra: str, name: str = "poller", esm_dir: Path | None = None) -> Proc:
        esm_dir = esm_dir or self.esm_dir
        args = ["poll", *self._common(), "--brokers", self.kafka.bootstrap, "--esm-dir", str(esm_dir), *extra]
        return self.start(name, *args)

    def start_lambda_api(self, tools_bin: Path) -> str:
        """The ingest function behind the Lambda invoke API: `cargo lambda watch --only-lambda-apis` emulates the
        Invoke and Runtime APIs, and the real `floe-ingest` binary (built beside floe) runs its
        lambda_runtime loop against them, configured by the same environment as on AWS. Returns the endpoint."""
        port = free_port()
        env = {**self.env, "PATH": f"{tools_bin}:{os.environ.get('PATH', '')}"}
        emulator = self.start_with_env(
            "lambda-api",
            env,
            [str(tools_bin / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
            cwd=ROOT,
        )
        emulator.wait_for("starting Runtime server", timeout=60)
        function_env = {
            **self.env,
            "FLOE_PIPELINE_FILES": ",".join(map(str, self.pipeline if isinstance(self.pipeline, list) else [self.pipeline])),
            "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt",
            "AWS_LAMBDA_FUNCTION_NAME": "_",  # the emulator's name for a function it does not start itself
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        }
        function = self.start_with_env("floe-ingest", function_env, [str(Path(self.bin).with_name("floe-ingest"))])
        function.wait_for('"message":"ready"', timeout=60)
        return f"http://127.0.0.1:{port}"

    def start_with_env(self, name: str, env: dict, cmd: list[str], cwd: Path | None = None) -> Proc:
        proc = Proc(cmd, env, self.folder, name, cwd=cwd)
        self.procs.append(proc)
        return proc

    def start_compactor(self, every: float, *extra: str, name: str = "compactor") -> Proc:
        return self.start(name, "compact", *self._common(), "--every", str(every), *extra)

    def start_producer(self, records: int, rate: float, *extra: str) -> Proc:
        args = ["produce", "--brokers", self.kafka.bootstrap, "--records", str(records), "--rate", str(rate), *extra]
        return self.start("producer", *args)

    def status(self) -> dict:
        return self.run("status", *self._common(), "--brokers", self.kafka.bootstrap, "--esm-dir", str(self.esm_dir))

    def invocations(self, esm_dir: Path | None = None) -> list[dict]:
        """Every invocation attempt the poller logged."""
        return _json_lines((esm_dir or self.esm_dir) / "invocations.jsonl")

    def on_failure(self) -> list[dict]:
        """What the poller sent to its on-failure destination."""
        return _json_lines(self.esm_dir / "on-failure.jsonl")

    def stored_positions(self, esm_dir: Path | None = None) -> dict[str, int]:
        """The poller's stored positions: next offset per `topic:partition`."""
        path = (esm_dir or self.esm_dir) / "offsets.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def wait_delivered(self, records: int, timeout: float, poller: Proc | None = None):
        """Until the poller's stored positions add up to `records` (every partition's next offset, summed)."""
        deadline = time.time() + timeout
        while sum(self.stored_positions().values()) < records:
            if time.time() > deadline:
                log = poller.log()[-2000:] if poller else ""
                raise TimeoutError(f"{records} records not delivered in {timeout}s: {self.stored_positions()}\n{log}")
            time.sleep(0.05)

    def wait_committed(self, positions: dict[str, int], timeout: float, progress=None) -> dict:
        """Until the tables' committed positions reach `positions` (`topic:partition` → next offset) and no staged
        file waits for a commit (the two tables are committed one after the other; see `floe status`)."""
        deadline = time.time() + timeout
        while True:
            status = self.status()
            if progress:
                progress(status)
            parts = status["partitions"]
            caught_up = all((parts.get(k, {}).get("committed") or 0) >= v for k, v in positions.items())
            if caught_up and status["staged"] == 0:
                return status
            for proc in self.procs:
                if proc.name in ("poller", "compactor") and not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
            if time.time() > deadline:
                raise TimeoutError(f"not caught up after {timeout}s: {json.dumps(status)}")
            time.sleep(1)

    def stop(self):
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def freshness(table) -> list[int]:
    """Produce → queryable latency of every row, in milliseconds: the commit time of the first snapshot that
    contains the row minus its Kafka timestamp (records are stamped when produced)."""
    seen: set[tuple] = set()
    latencies = []
    for snapshot in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        fields = ("source_topic", "source_partition", "source_offset", "kafka_time")
        rows = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=fields).to_arrow()
        times = rows.column("kafka_time").cast("int64").to_pylist()  # microseconds
        keys = zip(*(rows.column(f).to_pylist() for f in fields[:3]))
        for key, micros in zip(keys, times):
            if key not in seen:
                seen.add(key)
                latencies.append(snapshot.timestamp_ms - micros // 1000)
    return latencies


def percentiles(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"rows": len(ordered), "p50_s": at(0.5), "p90_s": at(0.9), "p99_s": at(0.99), "max_s": ordered[-1] / 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floe", required=True, type=Path, help="the floe binary")
    parser.add_argument("--dir", type=Path, default=ROOT / ".floe" / "local-stack")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1_000, help="records per second")
    parser.add_argument("--compact-every", type=float, default=60, help="compactor schedule, seconds")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batching-window-ms", type=int, default=500)
    parser.add_argument(
        "--with-outputs",
        action="store_true",
        help="run examples/pipeline.toml with its derived outputs (dedup, windows); slow on moto, whose DynamoDB "
        "copies the whole table per transaction, so the default is the raw path",
    )
    parser.add_argument(
        "--lambda-api",
        type=Path,
        metavar="TOOLS_BIN",
        help="invoke the floe-ingest binary through the Lambda invoke API (cargo lambda watch from TOOLS_BIN)",
    )
    args = parser.parse_args()

    folder = args.dir
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    print(f"floe local stack in {folder} (logs there)")
    print("starting moto (S3, DynamoDB, Glue) and tansu (Kafka) on 127.0.0.1 …", flush=True)
    moto = Moto(folder / "moto.log")
    kafka = None
    stack = None
    registry = None
    try:
        moto.reset()
        kafka = Tansu(folder / "kafka")
        # A Confluent-compatible schema registry for Avro and JSON Schema pipelines (`registry = { url = … }`).
        registry_port = free_port()
        registry = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("registry.py")), "--port", str(registry_port),
             "--data", str(folder / "registry.json")],
            stderr=open(folder / "registry.log", "w"),
        )
        pipeline = PIPELINE if args.with_outputs else raw_pipeline(folder)
        stack = Stack(args.floe, folder, moto, kafka, pipeline=pipeline)
        stack.create_topics()
        print(f"  moto {moto.endpoint}  kafka {kafka.bootstrap}  topics {' '.join(TOPICS)}")
        print(f"  schema registry http://127.0.0.1:{registry_port} (Confluent-compatible, for Avro and JSON Schema)")
        invoke = []
        if args.lambda_api:
            endpoint = stack.start_lambda_api(args.lambda_api)
            invoke = ["--invoke-endpoint", endpoint, "--function-name", "_"]
            print(f"  ingest: the floe-ingest binary behind the Lambda invoke API at {endpoint} (cargo lambda watch)")
        stack.start_poller(
            "--batch-size", str(args.batch_size), "--batching-window-ms", str(args.batching_window_ms), *invoke
        )
        stack.start_compactor(args.compact_every)
        print(
            f"poller: BatchSize {args.batch_size}, window {args.batching_window_ms} ms, TRIM_HORIZON; "
            f"compactor every {args.compact_every:g}s"
        )
        print(f"producing {args.records} sample records ({args.records // 1000} malformed) at {args.rate:g}/s …\n")
        producer = stack.start_producer(args.records, args.rate, "--stamp-now")
        started = time.time()
        header = f"{'time':>6}  {'produced':>9}  {'ingested':>9}  {'committed':>9}  {'lag':>7}  {'rows':>8}  {'dead letters':>12}"
        print(header)

        def show(s: dict):
            rows = s["tables"].get(TARGET, {}).get("rows", 0)
            dead = s["tables"].get(DEAD, {}).get("rows", 0)
            print(
                f"{time.time() - started:5.0f}s  {s['produced']:>9}  {s['delivered']:>9}  {s['committed']:>9}  "
                f"{s['lag']:>7}  {rows:>8}  {dead:>12}",
                flush=True,
            )

        while producer.alive():
            show(stack.status())
            time.sleep(2)
        if producer.popen.returncode != 0:
            raise RuntimeError(f"producer failed:\n{producer.log()}")
        produced = json.loads(producer.log().strip().splitlines()[-1])
        # Caught up: every record committed, as rows or dead letters.
        while True:
            s = stack.status()
            show(s)
            if committed_rows(s) >= produced["produced"] and s["lag"] == 0:
                break
            time.sleep(2)
        table = moto.pyiceberg_catalog().load_table(TARGET)
        fresh = percentiles(freshness(table))
        print(
            f"\ncaught up: {produced['produced']} records produced → {s['tables'][TARGET]['rows']} rows in {TARGET} "
            f"+ {s['tables'][DEAD]['rows']} in {DEAD}, {s['tables'][TARGET]['snapshots']} snapshots"
        )
        invocations = stack.invocations()
        print(
            f"poller: {len(invocations)} invocations, {sum(1 for i in invocations if not i['ok'])} failed attempts; "
            f"largest payload {max(i['payload_bytes'] for i in invocations) / 1e6:.2f} MB"
        )
        print(
            f"produce → queryable latency (compactor every {args.compact_every:g}s): p50 {fresh['p50_s']:.1f}s, "
            f"p90 {fresh['p90_s']:.1f}s, p99 {fresh['p99_s']:.1f}s, max {fresh['max_s']:.1f}s over {fresh['rows']} rows"
        )
        (folder / "freshness.json").write_text(json.dumps({"compact_every_s": args.compact_every, **fresh}))
        return 0
    finally:
        if stack:
            stack.stop()
        if kafka:
            kafka.stop()
        if registry:
            registry.terminate()
            registry.wait(timeout=10)
        moto.stop()
        print("stopped poller, compactor, tansu, the schema registry and moto")


if __name__ == "__main__":
    sys.exit(main())
