"""`make bench`: floe beside the arrow-rs baseline and the Python peer on the same generated events, plus the
function-level figures (peak RSS of a 6 MB invocation, cold start, zip sizes, 1,000-file commit, freshness).
Prints one table and writes it to BENCHMARKS.md with the machine description.

Every figure comes from this run; nothing is carried over. See BENCHMARKS.md for what each row measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_api import RuntimeApi  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra" / "local"))
from aws_stack import Moto  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "floe" / "target"))
RELEASE = TARGET / "release"
PY = sys.executable

# The targets of issue 7, checked in the table.
TARGETS = {
    "vs_peer": 2.0,  # floe ≥ 2× the Python peer, per core
    "vs_baseline": 0.9,  # floe ≥ 0.9× the arrow-rs baseline, per core, on both workloads
    "second_core": 1.8,  # wall-clock speed-up from a second vCPU
    "rss_mb": 100,  # peak RSS for one 6 MB invocation
    "init_ms": 50,  # process start → ready for an event
    "zip_mb": 15,  # each function's zip
    "commit_s": 15,  # committing 1,000 staged files
    "compaction_mb_s": 44,  # merging, per core: RisingWave's published 193 GB in 277 s on 16 vCPU
    "history_commit_ms": 1000,  # a commit after 10,000 prior commits
}


SCAN = """
import json, sys, time
from pyiceberg.catalog.sql import SqlCatalog
home = sys.argv[1]
catalog = SqlCatalog("floe", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
table = catalog.load_table("bench.events")
times = []
for _ in range(3):
    t = time.perf_counter()
    rows = table.scan().to_arrow().num_rows
    times.append(time.perf_counter() - t)
print(json.dumps({"rows": rows, "scan_s": min(times), "files": len(table.inspect.files())}))
"""


def compaction(work: Path) -> dict:
    """Merge throughput on small unpartitioned files, then the same partitioned stream committed with and
    without merging, and PyIceberg full-scan times of both tables."""
    bench = RELEASE / "floe-bench"
    out = {"merge": run_json([bench, "compaction", "--home", work / "compaction", "--files", 1000])}
    for variant, flags in (("merged", []), ("unmerged", ["--no-merge"])):
        home = work / f"partitioned-{variant}"
        out[variant] = run_json([bench, "compaction", "--home", home, "--files", 150, "--records-per-file", 500,
                                 "--partitioned", *flags])
        out[variant]["scan"] = run_json([PY, "-c", SCAN, home])
    return out


SNAPSHOT_SCAN = """
import json, sys, time
from pyiceberg.catalog.sql import SqlCatalog
home, name = sys.argv[1], sys.argv[2]
catalog = SqlCatalog("floe", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
table = catalog.load_table(name)
out = {}
for label, snapshot in zip(("pending", "compacted"), map(int, sys.argv[3:])):
    times = []
    for _ in range(3):
        t = time.perf_counter()
        rows = table.scan(snapshot_id=snapshot).to_arrow().num_rows
        times.append(time.perf_counter() - t)
    out[label] = {"rows": rows, "scan_s": min(times)}
print(json.dumps(out))
"""


def changes(work: Path, sizes: list[int]) -> dict:
    """Change batches against tables of each size (floe-bench changes), and PyIceberg full scans of the table with
    its deletes pending and after compaction applied them."""
    out = {}
    for rows in sizes:
        home = work / f"changes-{rows}"
        log(f"change streams: a {rows:,}-row table, change batches of 10,000 keys …")
        result = run_json([RELEASE / "floe-bench", "changes", "--home", home, "--rows", rows, "--batch-keys", 10_000,
                           "--commits", 10])
        result["scan"] = run_json([PY, "-c", SNAPSHOT_SCAN, home, "bench.users",
                                   result["pending"]["snapshot_id"], result["compacted"]["snapshot_id"]])
        out[str(rows)] = result
    return out


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def run_json(cmd: list, **kw) -> dict:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(result: dict, by: str = "cpu_s") -> dict:
    """The run with the median CPU time, or wall time for the pinned runs (runs differ only by noise)."""
    runs = sorted(result["runs"], key=lambda r: r[by])
    return runs[len(runs) // 2]


def generate(data: Path, records: int, workload: str = "commerce") -> dict:
    summary = data / "summary.json"
    if summary.exists():
        existing = json.loads(summary.read_text())
        if existing.get("records") == records and existing.get("workload") == workload:
            return existing
    log(f"generating {records} {workload} records …")
    return run_json([RELEASE / "floe-bench", "generate", "--out", data, "--records", records, "--workload", workload])


def pinned(cores: int):
    """Run a child on the first `cores` CPUs only (a function with that many vCPUs)."""
    return lambda: os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


# The Python peer's libraries on one thread.
SINGLE = {**os.environ, "OMP_NUM_THREADS": "1", "ARROW_NUM_THREADS": "1"}

# Per-core figures run on one CPU: what a function with one vCPU has (and floe's grouping threads stay one).
one_core = pinned(1)


def cores_wall(data: Path, work: Path, repeat: int) -> dict:
    """floe's wall-clock rate pinned to one core (one thread) and to two (two threads, two partitions at once)."""
    out = {}
    for cores in (1, 2):
        if cores > (os.cpu_count() or 1):
            break
        out[str(cores)] = run_json([RELEASE / "floe-bench", "floe", "--threads", cores, "--data", data, "--work", work,
                                    "--repeat", repeat], preexec_fn=pinned(cores))
    return out


def per_core(data: Path, work: Path, repeat: int) -> dict[str, dict]:
    """floe, the arrow-rs baseline and the Python peer, each pinned to one core, and floe on one and two cores."""
    log("floe ingest handler (embedded default, one thread) …")
    results = {"floe": run_json([RELEASE / "floe-bench", "floe", "--data", data, "--work", work, "--repeat", repeat],
                                preexec_fn=one_core)}
    log("arrow-rs baseline …")
    results["baseline"] = run_json(
        [RELEASE / "floe-bench", "baseline", "--data", data, "--work", work, "--repeat", repeat], preexec_fn=one_core
    )
    log("Python peer (pyarrow.json, one thread) …")
    results["peer"] = run_json([PY, ROOT / "bench" / "peer.py", "--data", data, "--work", work, "--repeat", repeat],
                               env=SINGLE, preexec_fn=one_core)
    log("floe pinned to one core, then two …")
    for cores, run in cores_wall(data, work, repeat).items():
        results[f"floe_cores_{cores}"] = run
    return results


def throughput(data: Path, work: Path, repeat: int) -> dict[str, dict]:
    results = per_core(data, work, repeat)
    log("floe ingest handler, the same records as a change stream (upsert by event_id) …")
    results["floe_upsert"] = run_json(
        [RELEASE / "floe-bench", "floe", "--upsert", "--data", data, "--work", work, "--repeat", repeat], preexec_fn=one_core
    )
    log("floe backfill of the same records as an archive of JSON-lines objects …")
    results["floe_backfill"] = run_json(
        [RELEASE / "floe-bench", "backfill", "--data", data, "--work", work, "--repeat", repeat], preexec_fn=one_core
    )
    avro = data.parent / "avro"
    log("the same records as Confluent-framed Avro: floe, and the Python peer with fastavro …")
    shutil.rmtree(avro, ignore_errors=True)
    run_json([RELEASE / "floe-bench", "avro", "--data", data, "--out", avro])
    results["floe_avro"] = run_json([RELEASE / "floe-bench", "floe", "--data", avro, "--work", work, "--repeat", repeat],
                                    preexec_fn=one_core)
    results["peer_avro"] = run_json([PY, ROOT / "bench" / "peer.py", "--data", avro, "--work", work, "--repeat", repeat],
                                    env=SINGLE, preexec_fn=one_core)
    proto = data.parent / "protobuf"
    log("the same records as Confluent-framed Protobuf: floe, and the Python peer with the protobuf runtime …")
    shutil.rmtree(proto, ignore_errors=True)
    run_json([RELEASE / "floe-bench", "protobuf", "--data", data, "--out", proto])
    results["floe_protobuf"] = run_json(
        [RELEASE / "floe-bench", "floe", "--data", proto, "--work", work, "--repeat", repeat], preexec_fn=one_core
    )
    results["peer_protobuf"] = run_json(
        [PY, ROOT / "bench" / "peer.py", "--data", proto, "--work", work, "--repeat", repeat], env=SINGLE, preexec_fn=one_core
    )
    return results


def function_env(backend: str, home: Path, pipeline: Path, api: RuntimeApi, aws: dict | None = None) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "floe-ingest",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/floe-ingest",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "FLOE_PIPELINE_FILE": str(pipeline),
        "RUST_LOG": "warn",
    }
    if backend == "embedded":
        env |= {"FLOE_BACKEND": "embedded", "FLOE_HOME": str(home)}
    else:
        # The cold start loads (or creates) the tables through Glue and S3: moto on 127.0.0.1 answers.
        env |= {k: v for k, v in (aws or {}).items() if k.startswith(("FLOE_", "AWS_"))}
    return env


def start_function(binary: Path, env: dict, api: RuntimeApi) -> tuple[subprocess.Popen, float]:
    """Start the function; returns the process and its init time in seconds (start → first `next`)."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not api.wait(lambda: api.first_next is not None, timeout=30):
        proc.kill()
        raise RuntimeError(f"{binary.name} never asked for an event: {proc.communicate()[1].decode()[-2000:]}")
    return proc, api.first_next - started


def kill_with_rusage(proc: subprocess.Popen):
    proc.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return usage


def cold_start(binary: Path, data: Path, work: Path, backend: str, times: int, aws: dict | None = None) -> list[float]:
    """Init times of `times` starts against tables that exist, as on a Lambda cold start after the first: a first,
    uncounted start creates them (ingest creates or evolves its tables at cold start)."""
    inits = []
    home = work / "init" / backend
    shutil.rmtree(home, ignore_errors=True)
    for _ in range(times + 1):
        api = RuntimeApi()
        proc, init = start_function(binary, function_env(backend, home, data / "pipeline.toml", api, aws), api)
        kill_with_rusage(proc)
        api.close()
        inits.append(init)
    return inits[1:]


def one_invocation(binary: Path, data: Path, work: Path) -> dict:
    """The largest generated event (packed to the 6 MB cap) through the real release ingest binary; peak RSS
    is the kernel's high-water mark for the whole process (init and the invocation)."""
    events = sorted((data / "events").iterdir(), key=lambda p: p.stat().st_size)
    body = events[-1].read_bytes()
    api = RuntimeApi()
    home = work / "rss"
    shutil.rmtree(home, ignore_errors=True)
    proc, _ = start_function(binary, function_env("embedded", home, data / "pipeline.toml", api), api)
    started = time.perf_counter()
    api.queue(body)
    if not api.wait(lambda: api.responses and api.nexts >= 2, timeout=120):
        proc.kill()
        raise RuntimeError(f"no answer from {binary.name}: {proc.communicate()[1].decode()[-2000:]}")
    elapsed = time.perf_counter() - started
    usage = kill_with_rusage(proc)
    api.close()
    kind, answer = api.responses[0]
    if kind != "response":
        raise RuntimeError(f"the invocation failed: {answer.decode()[:2000]}")
    report = json.loads(answer)
    return {"event_bytes": len(body), "records": report["records"], "rows": report["rows"],
            "peak_rss_mb": usage.ru_maxrss / 1024, "invocation_s": elapsed}


def zip_sizes() -> dict[str, float]:
    """`make package`'s zips: the two ingest builds (IngestBuild=raw and =sql), the compactor and backfill."""
    sizes = {}
    for name, function in (
        ("floe-ingest (no SQL engine)", "floe-ingest"),
        ("floe-ingest-sql", "floe-ingest-sql"),
        ("floe-compactor", "floe-compactor"),
        ("floe-backfill", "floe-backfill"),
    ):
        path = TARGET / "lambda" / function / "bootstrap.zip"
        if path.exists():
            sizes[name] = path.stat().st_size / 1e6
    return sizes


def freshness(work: Path, floe: Path, records: int, rate: float) -> dict:
    folder = work / "stack"
    out = subprocess.run(
        [PY, ROOT / "infra" / "local" / "stack.py", "--floe", floe, "--dir", folder,
         "--records", str(records), "--rate", str(rate), "--compact-every", "60"],
        capture_output=True, text=True, timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"local stack failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads((folder / "freshness.json").read_text())


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    import pyarrow

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "rustc": rustc, "python": platform.python_version(),
            "pyarrow": pyarrow.__version__}


def rate(run: dict, summary: dict) -> dict:
    return {"records_per_s": run["records"] / run["cpu_s"], "mb_per_s": summary["value_bytes"] / 1e6 / run["cpu_s"],
            "wall_records_per_s": run["records"] / run["wall_s"],
            "parquet_per_json": run["parquet_bytes"] / summary["value_bytes"]}


def fmt_check(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "NOT met")


def per_core_rows(t: dict, workload: str) -> list[tuple]:
    """One workload's rows: per-core rates and ratios, wall clock on one and two cores, Parquet per JSON byte."""
    f, b, p = t["floe"], t["baseline"], t["peer"]
    vs_b, vs_p = f["records_per_s"] / b["records_per_s"], f["records_per_s"] / p["records_per_s"]
    rows = [(f"records/s per core (CPU time), {workload}", f"{f['records_per_s']:,.0f}", f"{b['records_per_s']:,.0f}",
             f"{p['records_per_s']:,.0f}",
             f"floe/baseline {vs_b:.2f} (≥ {TARGETS['vs_baseline']}: {fmt_check(vs_b >= TARGETS['vs_baseline'])}); "
             f"floe/peer {vs_p:.2f} (≥ {TARGETS['vs_peer']}: {fmt_check(vs_p >= TARGETS['vs_peer'])})"),
            (f"MB/s of JSON per core, {workload}", f"{f['mb_per_s']:.1f}", f"{b['mb_per_s']:.1f}",
             f"{p['mb_per_s']:.1f}", ""),
            (f"Parquet bytes per JSON byte, {workload}", f"{f['parquet_per_json']:.3f}",
             f"{b['parquet_per_json']:.3f}", f"{p['parquet_per_json']:.3f}", "zstd level 1 in all three")]
    one, two = t.get("floe_cores_1"), t.get("floe_cores_2")
    if one and two:
        up = two["wall_records_per_s"] / one["wall_records_per_s"]
        rows.append((f"records/s wall clock, 1 core → 2 cores, {workload}",
                     f"{one['wall_records_per_s']:,.0f} → {two['wall_records_per_s']:,.0f}", "", "",
                     f"{up:.2f}× from the second core (≥ {TARGETS['second_core']}: "
                     f"{fmt_check(up >= TARGETS['second_core'])}); {t['partitions_per_event']} partitions an event"))
    return rows


def rates(raw: dict, summary: dict) -> dict:
    out = {k: rate(median_run(v, "wall_s" if k.startswith("floe_cores_") else "cpu_s"), summary)
           for k, v in raw.items()}
    out["partitions_per_event"] = summary.get("partitions_per_event", "?")
    return out


def table(figures: dict) -> list[str]:
    rows = [("measure", "floe", "arrow-rs baseline", "Python peer", "ratio / target")]
    t = figures.get("throughput")
    if t:
        rows.extend(per_core_rows(t, "commerce, ~1.2 KB"))
        f = t["floe"]
        a, pa_ = t.get("floe_avro"), t.get("peer_avro")
        if a and pa_:
            rows.append(("Avro records/s per core (same records, Confluent framing)", f"{a['records_per_s']:,.0f}", "",
                         f"{pa_['records_per_s']:,.0f} (fastavro)",
                         f"{a['records_per_s'] / f['records_per_s']:.2f}× floe's JSON; "
                         f"floe/peer {a['records_per_s'] / pa_['records_per_s']:.2f}"))
        pb, pp = t.get("floe_protobuf"), t.get("peer_protobuf")
        if pb and pp:
            rows.append(("Protobuf records/s per core (same records, Confluent framing)", f"{pb['records_per_s']:,.0f}",
                         "", f"{pp['records_per_s']:,.0f} (protobuf runtime)",
                         f"{pb['records_per_s'] / f['records_per_s']:.2f}× floe's JSON; "
                         f"floe/peer {pb['records_per_s'] / pp['records_per_s']:.2f}"))
        bf = t.get("floe_backfill")
        if bf:
            rows.append(("backfill records/s per core (same records, JSON-lines archive, 50,000 a object)",
                         f"{bf['records_per_s']:,.0f}", "", "",
                         f"{bf['records_per_s'] / f['records_per_s']:.2f}× floe's ingest in this run "
                         f"(planner, object reads, backfill fences)"))
        u = t.get("floe_upsert")
        if u:
            rows.append(("upsert records/s per core (same records as a change stream)", f"{u['records_per_s']:,.0f}",
                         "", "", f"{u['records_per_s'] / f['records_per_s']:.2f}× floe's appends in this run"))
    lt = figures.get("lean")
    if lt:
        rows.extend(per_core_rows(lt, "clicks, ~800 B"))
    c = figures.get("pyiceberg")
    if c:
        rows.append(("Iceberg commit per append", "— (the compactor commits; below)", "—",
                     f"{c['median_s'] * 1000:.0f} ms median, {c['last_s'] * 1000:.0f} ms at append {c['appends']}",
                     "PyIceberg table.append of 500 rows, SQLite catalog"))
    r = figures.get("rss")
    if r:
        rows.append(("peak RSS, one 6 MB invocation", f"{r['peak_rss_mb']:.0f} MB", "", "",
                     f"≤ {TARGETS['rss_mb']} MB: {fmt_check(r['peak_rss_mb'] <= TARGETS['rss_mb'])} "
                     f"({r['records']:,} records, {r['event_bytes'] / 1e6:.2f} MB event, {r['invocation_s'] * 1000:.0f} ms)"))
    for backend in ("embedded", "aws"):
        i = figures.get(f"init_{backend}")
        if i:
            med = statistics.median(i) * 1000
            where = "tables in SQLite and local files" if backend == "embedded" else "Glue and S3 on a local moto"
            rows.append((f"init, release ingest binary ({backend}; {where})", f"{med:.1f} ms median", "", "",
                         f"≤ {TARGETS['init_ms']} ms: {fmt_check(med <= TARGETS['init_ms'])} "
                         f"(min {min(i) * 1000:.1f}, max {max(i) * 1000:.1f} over {len(i)} starts)"))
    for function, mb in (figures.get("zips") or {}).items():
        rows.append((f"zip, {function} (arm64)", f"{mb:.1f} MB", "", "",
                     f"≤ {TARGETS['zip_mb']} MB: {fmt_check(mb <= TARGETS['zip_mb'])}"))
    k = figures.get("commit")
    if k:
        rows.append(("compactor: commit 1,000 staged files", f"{k['run_s']:.2f} s", "", "",
                     f"≤ {TARGETS['commit_s']} s: {fmt_check(k['run_s'] <= TARGETS['commit_s'])} "
                     f"({k['committed_files']} files, metadata commit {k['metadata_commit_ms']} ms)"))
    cm = figures.get("compaction")
    if cm:
        m = cm["merge"]
        rows.append(("compactor: merge throughput per core", f"{m['mb_per_s_cpu']:.0f} MB/s", "", "",
                     f"≥ {TARGETS['compaction_mb_s']} MB/s (RisingWave, per vCPU): "
                     f"{fmt_check(m['mb_per_s_cpu'] >= TARGETS['compaction_mb_s'])} ({m['staged_files']:,} files "
                     f"of {m['avg_file_before'] / 1e3:.0f} KB → {m['committed_files']} of "
                     f"{m['avg_file_after'] / 1e6:.1f} MB, {m['bytes_read'] / 1e6:.0f} MB read in {m['cpu_s']:.1f} s CPU)"))
        for variant in ("unmerged", "merged"):
            v = cm[variant]
            rows.append((f"partitioned table, {variant}: files per partition",
                         f"{v['live_files'] / v['partitions']:.1f} (avg {v['avg_file_after'] / 1e3:.0f} KB)", "", "",
                         f"{v['staged_files']:,} staged files in {v['partitions']} partitions → {v['live_files']:,} files"))
            rows.append((f"partitioned table, {variant}: PyIceberg full scan", f"{v['scan']['scan_s']:.2f} s", "", "",
                         f"{v['scan']['rows']:,} rows, best of 3"))
    h = figures.get("history")
    if h:
        for sample in h["samples"]:
            ok = sample["commit_ms_median"] <= TARGETS["history_commit_ms"]
            rows.append((f"commit after {sample['prior_commits']:,} prior commits",
                         f"{sample['commit_ms_median']} ms (run {sample['run_ms_median']} ms)", "", "",
                         f"≤ {TARGETS['history_commit_ms']} ms: {fmt_check(ok)}; {sample['snapshots']:,} snapshots, "
                         f"{sample['manifests']} manifests, {sample['live_files']:,} files (median of 21 commits)"))
    for size, ch in (figures.get("changes") or {}).items():
        n = f"{int(size) / 1e6:g} M rows"
        for label, key in (("keys spread over the table", "spread"), ("the most recent keys", "recent")):
            c = ch[key]
            rows.append((f"change commit, {c['keys']:,} {label}, {n}", f"{c['run_s']:.2f} s", "", "",
                         f"read the key column of {c['files_read']} of {c['files_live']} files ({c['rows_read']:,} rows; "
                         f"{c['row_groups_skipped']} row groups skipped by bloom filters); {c['replaced']:,} rows replaced"))
        pend, comp = ch["pending"], ch["compacted"]
        rows.append((f"delete files a reader opens per data file after {ch['commits']} change commits, {n}",
                     f"{pend['delete_files_per_data_file']:.1f} (max {pend['max_delete_files_per_data_file']}) → "
                     f"{comp['delete_files_per_data_file']:.1f} (max {comp['max_delete_files_per_data_file']}) "
                     "after compaction",
                     "", "", f"{pend['delete_files']} delete files on {pend['data_files']} data files "
                     f"({pend['position_deletes']:,} deletes) → {comp['delete_files']} on {comp['data_files']} "
                     f"({ch['rewritten_files']} files rewritten in {ch['maintain_s']:.1f} s)"))
        s = ch["scan"]
        rows.append((f"PyIceberg full scan, {n}: deletes pending → compacted", f"{s['pending']['scan_s']:.2f} s → "
                     f"{s['compacted']['scan_s']:.2f} s", "", "", f"{s['pending']['rows']:,} rows both (best of 3)"))
    fr = figures.get("freshness")
    if fr:
        rows.append(("produce → queryable (local stack)", f"p50 {fr['p50_s']:.1f} s, p90 {fr['p90_s']:.1f} s, "
                     f"p99 {fr['p99_s']:.1f} s", "", "", f"compactor every 60 s, {fr['rows']:,} rows"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / ".floe" / "bench")
    parser.add_argument("--floe", type=Path, default=TARGET / "debug" / "floe")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["throughput", "pyiceberg", "rss", "init", "zips", "commit", "compaction", "history",
                                 "changes", "freshness"])
    parser.add_argument("--clicks-records", type=int, default=200_000)
    parser.add_argument("--change-table-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--history-commits", type=int, default=10_000)
    parser.add_argument("--freshness-records", type=int, default=12_000)
    parser.add_argument("--freshness-rate", type=float, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    summary = generate(data, args.records)
    ingest = RELEASE / "floe-ingest"
    figures: dict = {"machine": machine(), "data": summary}
    if "throughput" not in args.skip:
        raw = throughput(data, args.work / "out", args.repeat)
        figures["raw"] = raw
        figures["throughput"] = rates(raw, summary)
        clicks = args.work / "clicks"
        clicks.mkdir(parents=True, exist_ok=True)
        clicks_summary = generate(clicks, args.clicks_records, "clicks")
        figures["clicks_data"] = clicks_summary
        log("lean click events …")
        raw_lean = per_core(clicks, args.work / "out", args.repeat)
        figures["raw_lean"] = raw_lean
        figures["lean"] = rates(raw_lean, clicks_summary)
    if "pyiceberg" not in args.skip:
        log("PyIceberg appends …")
        figures["pyiceberg"] = run_json([PY, ROOT / "bench" / "peer.py", "--data", data, "--work", args.work,
                                         "--commits", "20"])
    if "rss" not in args.skip:
        log("one 6 MB invocation of the release ingest binary …")
        figures["rss"] = one_invocation(ingest, data, args.work)
    if "init" not in args.skip:
        log("cold starts …")
        figures["init_embedded"] = cold_start(ingest, data, args.work, "embedded", 15)
        moto = Moto(args.work / "moto.log")
        try:
            moto.reset()
            figures["init_aws"] = cold_start(ingest, data, args.work, "aws", 15, moto.floe_env())
        finally:
            moto.stop()
    if "zips" not in args.skip:
        figures["zips"] = zip_sizes()
    if "commit" not in args.skip:
        log("compactor: staging 1,000 files, then one commit …")
        figures["commit"] = run_json([RELEASE / "floe-bench", "commit", "--home", args.work / "commit", "--files", 1000])
    if "compaction" not in args.skip:
        log("compactor: merging small staged files; a partitioned table with and without merging …")
        figures["compaction"] = compaction(args.work)
    if "history" not in args.skip:
        n = args.history_commits
        log(f"compactor: {n:,} commits of one small file each, maintenance on …")
        figures["history"] = run_json([RELEASE / "floe-bench", "history", "--home", args.work / "history",
                                       "--commits", n, "--at", f"100,{n}"])
    if "changes" not in args.skip:
        figures["changes"] = changes(args.work, args.change_table_rows)
    if "freshness" not in args.skip:
        log(f"local stack freshness ({args.freshness_records} records at {args.freshness_rate:g}/s) …")
        figures["freshness"] = freshness(args.work, args.floe, args.freshness_records, args.freshness_rate)

    lines = table(figures)
    print("\n".join(lines))
    m = figures["machine"]
    described = (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, Linux {m['kernel']}; {m['rustc']}; "
                 f"Python {m['python']}, pyarrow {m['pyarrow']}")
    (args.work / "figures.json").write_text(json.dumps(figures, indent=1))
    write_markdown(args.out, lines, described, summary, figures.get("clicks_data"))
    log(f"\nwrote {args.out} and {args.work / 'figures.json'}")
    return 0


def data_line(name: str, summary: dict) -> str:
    return (f"{name}: {summary['records']:,} records ({summary['value_bytes'] / 1e6:.0f} MB of JSON, "
            f"{summary['value_bytes'] / summary['records']:.0f} bytes each) in {summary['events']} MSK events "
            f"({summary['event_bytes'] / 1e6:.0f} MB serialized, largest {summary['largest_event_bytes'] / 1e6:.2f} MB, "
            f"{summary.get('partitions_per_event', '?')} partitions each).")


def write_markdown(path: Path, lines: list[str], described: str, summary: dict, clicks: dict | None = None):
    """Replace the generated section of BENCHMARKS.md, keeping the hand-written analysis around it."""
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    today = datetime.date.today().isoformat()
    block = "\n".join([
        start,
        f"Measured {today} by `make bench` on: {described}.",
        "",
        data_line("Data (commerce)", summary),
        *([data_line("Lean data (clicks)", clicks)] if clicks else []),
        "",
        *lines,
        end,
    ])
    text = path.read_text() if path.exists() else f"# floe benchmarks\n\n{start}\n{end}\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
