"""The Python peer: the ingest handler a Python Lambda user would write on its fastest idiomatic path, timed on the
same events as floe and the arrow-rs baseline.

Per event: `json.loads` the invocation body, base64-decode each partition's values, read them with
`pyarrow.json.read_json` against the explicit schema (single-threaded, for a per-core comparison) and write one
Parquet file per partition with floe's settings (zstd level 1). On `floe-bench avro` data (a `schema.avsc` beside
the events), each value is read with fastavro's schemaless reader and the rows become a pyarrow table; on
`floe-bench protobuf` data (a `schema.proto`), each value is parsed by the protobuf runtime (its message class built
from the schema by protoc, as a producer's generated code would be) and its fields become rows. PyIceberg's
per-append commit time is measured separately (`--commits`): what each invocation would pay if it committed its own files.

Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import statistics
import time
from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

# The reader's block must hold the largest record; a block per partition's worth of values avoids re-chunking
# (measured faster than the 1 MiB default on these events).
READ = pajson.ReadOptions(use_threads=False, block_size=8 << 20)


def load_schema(data: Path) -> pa.Schema:
    with pa.ipc.open_file(data / "schema.arrow") as reader:
        return reader.schema


def handle(body: bytes, parse: pajson.ParseOptions, out: Path, name: str) -> tuple[int, int]:
    """One invocation: returns (rows, files)."""
    event = json.loads(body)
    rows = files = 0
    for key, records in event["records"].items():
        values = b"\n".join(base64.b64decode(r["value"]) for r in records)
        table = pajson.read_json(io.BytesIO(values), read_options=READ, parse_options=parse)
        pq.write_table(table, out / f"{name}-{key}.parquet", compression="zstd", compression_level=1)
        rows += table.num_rows
        files += 1
    return rows, files


def handle_avro(body: bytes, reader_schema, schema: pa.Schema, out: Path, name: str) -> tuple[int, int]:
    """One invocation of Confluent-framed Avro values: fastavro's schemaless reader per value (after the 5-byte
    header; the schema fetched once, as a registry client caches it), then pyarrow from the decoded rows."""
    from fastavro import schemaless_reader

    event = json.loads(body)
    rows = files = 0
    for key, records in event["records"].items():
        decoded = [schemaless_reader(io.BytesIO(base64.b64decode(r["value"])[5:]), reader_schema) for r in records]
        table = pa.Table.from_pylist(decoded, schema=schema)
        pq.write_table(table, out / f"{name}-{key}.parquet", compression="zstd", compression_level=1)
        rows += table.num_rows
        files += 1
    return rows, files


def protobuf_class(proto: Path, work: Path):
    """The message class of `bench.Event`, compiled by protoc (grpcio-tools) from the data's schema."""
    import subprocess
    import sys

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    out = work / "bench.pb"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(proto, work / "bench.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{work}", "--include_imports",
                    f"--descriptor_set_out={out}", "bench.proto"], check=True)
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Event"))


def message_row(m) -> dict:
    """A message's fields as a row: absent fields with presence are None, timestamps datetimes."""
    row = {}
    for fd in m.DESCRIPTOR.fields:
        v = getattr(m, fd.name)
        if fd.is_repeated:
            row[fd.name] = [message_row(x) for x in v] if fd.message_type else list(v)
        elif fd.has_presence and not m.HasField(fd.name):
            row[fd.name] = None
        elif fd.message_type is None:
            row[fd.name] = v
        elif fd.message_type.full_name == "google.protobuf.Timestamp":
            row[fd.name] = v.ToDatetime(tzinfo=UTC)
        else:
            row[fd.name] = message_row(v)
    return row


def handle_protobuf(body: bytes, cls, schema: pa.Schema, out: Path, name: str) -> tuple[int, int]:
    """One invocation of Confluent-framed Protobuf values (5-byte header, message index [0]): the runtime's parser
    per value, then pyarrow from the rows."""
    event = json.loads(body)
    rows = files = 0
    for key, records in event["records"].items():
        decoded = [message_row(cls.FromString(base64.b64decode(r["value"])[6:])) for r in records]
        table = pa.Table.from_pylist(decoded, schema=schema)
        pq.write_table(table, out / f"{name}-{key}.parquet", compression="zstd", compression_level=1)
        rows += table.num_rows
        files += 1
    return rows, files


def throughput(data: Path, work: Path, repeat: int) -> dict:
    schema = load_schema(data)
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    avsc, proto = data / "schema.avsc", data / "schema.proto"
    if avsc.exists():  # `floe-bench avro` data: Avro values
        from fastavro import parse_schema

        reader_schema = parse_schema(json.loads(avsc.read_text()))
        handler = lambda body, out, name: handle_avro(body, reader_schema, schema, out, name)  # noqa: E731
        impl = "python-avro"
    elif proto.exists():  # `floe-bench protobuf` data
        cls = protobuf_class(proto, work / "peer-protoc")
        handler = lambda body, out, name: handle_protobuf(body, cls, schema, out, name)  # noqa: E731
        impl = "python-protobuf"
    else:
        handler = lambda body, out, name: handle(body, parse, out, name)  # noqa: E731
        impl = "python"
    events = [p.read_bytes() for p in sorted((data / "events").iterdir())]
    runs = []
    for i in range(repeat):
        out = work / f"peer-{i}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        wall, cpu = time.perf_counter(), time.process_time()
        rows = files = 0
        for n, body in enumerate(events):
            r, f = handler(body, out, f"{n:05}")
            rows += r
            files += f
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(p.stat().st_size for p in out.iterdir())
        runs.append({"wall_s": wall, "cpu_s": cpu, "records": rows, "rows": rows, "files": files, "parquet_bytes": size})
    return {"impl": impl, "events": len(events), "event_bytes": sum(map(len, events)), "runs": runs,
            "pyarrow": pa.__version__}


def commits(data: Path, work: Path, count: int) -> dict:
    """PyIceberg on a SQLite catalog: `table.append` of one invocation's rows, `count` times."""
    from pyiceberg.catalog.sql import SqlCatalog

    schema = load_schema(data)
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    home = work / "pyiceberg"
    shutil.rmtree(home, ignore_errors=True)
    (home / "warehouse").mkdir(parents=True)
    catalog = SqlCatalog("peer", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    catalog.create_namespace("bench")
    table = catalog.create_table("bench.events", schema=schema, properties={"write.parquet.compression-codec": "zstd"})
    events = sorted((data / "events").iterdir())
    times = []
    for i in range(count):
        body = json.loads(events[i % len(events)].read_bytes())
        records = next(iter(body["records"].values()))  # one partition's records, as one invocation appends
        values = b"\n".join(base64.b64decode(r["value"]) for r in records[:500])
        rows = pajson.read_json(io.BytesIO(values), read_options=READ, parse_options=parse).cast(schema)
        started = time.perf_counter()
        table.append(rows)
        times.append(time.perf_counter() - started)
    import pyiceberg

    return {"appends": len(times), "rows_per_append": 500, "mean_s": statistics.mean(times),
            "median_s": statistics.median(times), "last_s": times[-1], "pyiceberg": pyiceberg.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commits", type=int, default=0, help="measure PyIceberg appends instead")
    args = parser.parse_args()
    result = commits(args.data, args.work, args.commits) if args.commits else throughput(args.data, args.work, args.repeat)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
