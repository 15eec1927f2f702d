"""A Confluent-compatible schema registry for tests and `make local`: the REST API's subset that producers,
consumers and floe use (subjects, versions, schemas by id, lookups, compatibility, config), kept in memory.

There is no Confluent registry installable here (it needs a JVM, and the Python one is not on the package index),
so this stands in for it. It is proved against confluent-kafka's own serializers in tests/test_registry.py.

Compatibility: BACKWARD (the default, as Confluent's), BACKWARD_TRANSITIVE, FORWARD(_TRANSITIVE),
FULL(_TRANSITIVE) and NONE are checked for Avro by the specification's schema-resolution rules. Protobuf and JSON
Schema subjects accept every new version (documented in the README: the stand-in does not check them).

    python infra/local/registry.py --port 8081 [--user name:secret] [--port-file F] [--data F]

With --data, registrations survive a restart (tests stop and start it to simulate an outage).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
LEVELS = {
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
}


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---- Avro schema resolution (the specification's "Schema Resolution" section) ----


def _full_name(schema: dict, namespace: str | None) -> str:
    name = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _index(schema, names: dict, namespace: str | None = None):
    """Collect named types by full name, checking the schema is well-formed as we go."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return
        if schema not in names and f"{namespace}.{schema}" not in names:
            raise ApiError(422, 42201, f"Invalid schema: unknown type {schema!r}")
        return
    if isinstance(schema, list):
        for branch in schema:
            _index(branch, names, namespace)
        return
    if not isinstance(schema, dict) or "type" not in schema:
        raise ApiError(422, 42201, f"Invalid schema: {schema!r} is not an Avro schema")
    kind = schema["type"]
    if kind in ("record", "error", "enum", "fixed"):
        if "name" not in schema:
            raise ApiError(422, 42201, f"Invalid schema: a {kind} needs a name")
        full = _full_name(schema, namespace)
        names[full] = schema
        namespace = full.rsplit(".", 1)[0] if "." in full else None
        if kind in ("record", "error"):
            if not isinstance(schema.get("fields"), list):
                raise ApiError(422, 42201, f"Invalid schema: record {full} needs a list of fields")
            for field in schema["fields"]:
                _index(field["type"], names, namespace)
        elif kind == "enum" and not isinstance(schema.get("symbols"), list):
            raise ApiError(422, 42201, f"Invalid schema: enum {full} needs symbols")
        elif kind == "fixed" and not isinstance(schema.get("size"), int):
            raise ApiError(422, 42201, f"Invalid schema: fixed {full} needs a size")
    elif kind == "array":
        _index(schema["items"], names, namespace)
    elif kind == "map":
        _index(schema["values"], names, namespace)
    elif kind in PRIMITIVES or isinstance(kind, (dict, list)):
        if isinstance(kind, (dict, list)):
            _index(kind, names, namespace)
    elif kind not in names:
        raise ApiError(422, 42201, f"Invalid schema: unknown type {kind!r}")


class _Resolver:
    """Can data written with `writer` be read with `reader`?"""

    def __init__(self, reader, writer, rnames: dict | None = None, wnames: dict | None = None):
        self.rnames: dict = dict(rnames or {})  # named types from the schemas' references
        self.wnames: dict = dict(wnames or {})
        _index(reader, self.rnames)
        _index(writer, self.wnames)
        self.seen: set = set()
        self.problems: list[str] = []

    def _deref(self, schema, names):
        if isinstance(schema, str) and schema not in PRIMITIVES:
            for full, named in names.items():
                if full == schema or full.endswith("." + schema):
                    return named
        if isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
            return schema["type"]
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return self._deref(schema["type"], names)
        return schema

    @staticmethod
    def _kind(schema):
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        return schema["type"]

    def can_read(self, reader, writer, path: str) -> bool:
        r, w = self._deref(reader, self.rnames), self._deref(writer, self.wnames)
        rk, wk = self._kind(r), self._kind(w)
        if wk == "union":
            return all(self.can_read(r, branch, path) for branch in w)
        if rk == "union":
            if any(self._quiet(branch, w, path) for branch in r):
                return True
            self.problems.append(f"{path}: the reader's union has no branch for the writer's {wk}")
            return False
        if rk in PRIMITIVES or wk in PRIMITIVES:
            if rk == wk or rk in PROMOTIONS.get(wk, ()):
                return True
            self.problems.append(f"{path}: {wk} cannot be read as {rk}")
            return False
        if rk != wk and not ({rk, wk} <= {"record", "error"}):
            self.problems.append(f"{path}: {wk} cannot be read as {rk}")
            return False
        if rk in ("record", "error", "enum", "fixed"):
            rname, wname = r["name"].rsplit(".", 1)[-1], w["name"].rsplit(".", 1)[-1]
            aliases = {a.rsplit(".", 1)[-1] for a in r.get("aliases", [])}
            if rname != wname and wname not in aliases:
                self.problems.append(f"{path}: named type {wname} cannot be read as {rname}")
                return False
        if rk in ("record", "error"):
            key = (id(r), id(w))
            if key in self.seen:
                return True
            self.seen.add(key)
            wfields = {f["name"]: f for f in w["fields"]}
            ok = True
            for f in r["fields"]:
                names = [f["name"], *f.get("aliases", [])]
                match = next((wfields[n] for n in names if n in wfields), None)
                if match is None:
                    if "default" not in f:
                        self.problems.append(f"{path}.{f['name']}: new field without a default")
                        ok = False
                    continue
                ok &= self.can_read(f["type"], match["type"], f"{path}.{f['name']}")
            return ok
        if rk == "enum":
            missing = set(w["symbols"]) - set(r["symbols"])
            if missing and "default" not in r:
                self.problems.append(f"{path}: enum symbols {sorted(missing)} removed without a default")
                return False
            return True
        if rk == "fixed":
            if r["size"] != w["size"]:
                self.problems.append(f"{path}: fixed size {w['size']} cannot be read as {r['size']}")
                return False
            return True
        if rk == "array":
            return self.can_read(r["items"], w["items"], f"{path}[]")
        if rk == "map":
            return self.can_read(r["values"], w["values"], f"{path}{{}}")
        return True

    def _quiet(self, reader, writer, path) -> bool:
        before = len(self.problems)
        ok = self.can_read(reader, writer, path)
        del self.problems[before:]
        return ok


def avro_problems(reader: str, writer: str, rnames: dict | None = None, wnames: dict | None = None) -> list[str]:
    resolver = _Resolver(json.loads(reader), json.loads(writer), rnames, wnames)
    resolver.can_read(json.loads(reader), json.loads(writer), "$")
    return resolver.problems


# ---- the registry ----


class Registry:
    def __init__(self, data: str | None = None):
        self.lock = threading.Lock()
        self.schemas: list[dict] = []  # id - 1 → {"schema", "schemaType", "references", "guid"}
        self.subjects: dict[str, list[int]] = {}  # subject → ids of its versions, in order
        self.config = {"": "BACKWARD"}
        self.data = data
        if data:
            try:
                with open(data) as f:
                    saved = json.load(f)
                self.schemas, self.subjects, self.config = saved["schemas"], saved["subjects"], saved["config"]
            except FileNotFoundError:
                pass

    def save(self) -> None:
        if self.data:
            with open(self.data + ".tmp", "w") as f:
                json.dump({"schemas": self.schemas, "subjects": self.subjects, "config": self.config}, f)
            os.replace(self.data + ".tmp", self.data)

    def _canonical(self, body: dict) -> tuple:
        kind = body.get("schemaType", "AVRO")
        text = body.get("schema")
        if not isinstance(text, str):
            raise ApiError(422, 42201, "Invalid schema: `schema` must be a string")
        if kind in ("AVRO", "JSON"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                raise ApiError(422, 42201, f"Invalid schema: {e}") from None
            refs = tuple((r["name"], r["subject"], int(r["version"])) for r in body.get("references") or [])
            if kind == "AVRO":
                _index(parsed, self.referenced_names(refs))
            text = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
        elif kind != "PROTOBUF":
            raise ApiError(422, 42201, f"Invalid schema type {kind}")
        refs = tuple((r["name"], r["subject"], int(r["version"])) for r in body.get("references") or [])
        return kind, text, refs

    def referenced_names(self, refs) -> dict:
        """The Avro named types that references (name, subject, version) define, through their own references."""
        names: dict = {}
        for _, subject, version in refs:
            s = self.schema(self.version(subject, str(version))["id"])
            inner = tuple((r["name"], r["subject"], int(r["version"])) for r in s["references"])
            names.update(self.referenced_names(inner))
            _index(json.loads(s["schema"]), names)
        return names

    def schema(self, schema_id: int) -> dict:
        if not 1 <= schema_id <= len(self.schemas):
            raise ApiError(404, 40403, f"Schema {schema_id} not found")
        return self.schemas[schema_id - 1]

    def versions(self, subject: str) -> list[int]:
        if subject not in self.subjects or not self.subjects[subject]:
            raise ApiError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def version(self, subject: str, version: str) -> dict:
        ids = self.versions(subject)
        n = len(ids) if version in ("latest", "-1") else int(version)
        if not 1 <= n <= len(ids):
            raise ApiError(404, 40402, f"Version {version} not found.")
        return self.describe(subject, n, ids[n - 1])

    def describe(self, subject: str, version: int, schema_id: int) -> dict:
        s = self.schema(schema_id)
        out = {"subject": subject, "version": version, "id": schema_id, "guid": s["guid"], "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s["references"]:
            out["references"] = s["references"]
        return out

    def level(self, subject: str) -> str:
        return self.config.get(subject, self.config[""])

    def compatibility(self, subject: str, body: dict, against: list[int]) -> list[str]:
        kind, _, _ = self._canonical(body)
        level = self.level(subject)
        if level == "NONE" or kind != "AVRO" or not against:
            return []
        olds = against if level.endswith("_TRANSITIVE") else against[-1:]
        new = body["schema"]
        problems = []
        new_names = self.referenced_names(self._canonical(body)[2])
        for old_id in olds:
            old_schema = self.schema(old_id)
            old = old_schema["schema"]
            old_names = self.referenced_names(
                tuple((r["name"], r["subject"], int(r["version"])) for r in old_schema["references"])
            )
            if level.startswith(("BACKWARD", "FULL")):
                problems += [f"reading v{old_id}: {p}" for p in avro_problems(new, old, new_names, old_names)]
            if level.startswith(("FORWARD", "FULL")):
                problems += [f"read by v{old_id}: {p}" for p in avro_problems(old, new, old_names, new_names)]
        return problems

    def register(self, subject: str, body: dict) -> dict:
        key = self._canonical(body)
        with self.lock:
            for version, sid in enumerate(self.subjects.get(subject, []), 1):
                if self._key(sid) == key:
                    return {"id": sid, "version": version, "subject": subject, "guid": self.schema(sid)["guid"]}
            problems = self.compatibility(subject, body, self.subjects.get(subject, []))
            if problems:
                raise ApiError(409, 409, "Schema being registered is incompatible with an earlier schema: " + "; ".join(problems))
            sid = next((i + 1 for i in range(len(self.schemas)) if self._key(i + 1) == key), None)
            if sid is None:
                kind, _, refs = key
                self.schemas.append(
                    {
                        "schema": body["schema"],
                        "schemaType": kind,
                        "references": [{"name": n, "subject": s, "version": v} for n, s, v in refs],
                        "guid": str(uuid.uuid4()),
                    }
                )
                sid = len(self.schemas)
            self.subjects.setdefault(subject, []).append(sid)
            version = len(self.subjects[subject])
            self.save()
            return {"id": sid, "version": version, "subject": subject, "guid": self.schema(sid)["guid"]}

    def _key(self, sid: int) -> tuple:
        s = self.schema(sid)
        return self._canonical(s)

    def lookup(self, subject: str, body: dict) -> dict:
        key = self._canonical(body)
        for version, sid in enumerate(self.versions(subject), 1):
            if self._key(sid) == key:
                return self.describe(subject, version, sid)
        raise ApiError(404, 40403, "Schema not found")


class Handler(BaseHTTPRequestHandler):
    registry: Registry
    auth: str | None = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read the registry's answers, not its log
        pass

    def _send(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except json.JSONDecodeError as e:
            raise ApiError(422, 422, f"Unrecognized JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(422, 422, "the body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        try:
            if self.auth is not None:
                header = self.headers.get("Authorization", "")
                given = header[6:] if header.startswith("Basic ") else ""
                if base64.b64decode(given or "").decode(errors="replace") != self.auth:
                    raise ApiError(401, 401, "Unauthorized")
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
            query = parse_qs(url.query)
            body = self._body() if method in ("POST", "PUT") else {}
            self._send(200, self.route(method, parts, query, body))
        except ApiError as e:
            self._send(e.status, {"error_code": e.code, "message": e.message})
        except (KeyError, ValueError, TypeError) as e:
            self._send(422, {"error_code": 422, "message": f"bad request: {e}"})

    def route(self, method, parts, query, body):
        r = self.registry
        match method, parts:
            case "GET", []:
                return {}
            case "GET", ["schemas", "ids", sid]:
                s = r.schema(int(sid))
                out = {"schema": s["schema"], "guid": s["guid"]}
                if s["schemaType"] != "AVRO":
                    out["schemaType"] = s["schemaType"]
                if s["references"]:
                    out["references"] = s["references"]
                return out
            case "GET", ["schemas", "ids", sid, "versions"]:
                n = int(sid)
                r.schema(n)
                return [
                    {"subject": subj, "version": v}
                    for subj, ids in r.subjects.items()
                    for v, i in enumerate(ids, 1)
                    if i == n
                ]
            case "GET", ["schemas", "guids", guid]:
                for i, s in enumerate(r.schemas, 1):
                    if s["guid"] == guid:
                        return self.route("GET", ["schemas", "ids", str(i)], query, body)
                raise ApiError(404, 40403, f"Schema {guid} not found")
            case "GET", ["subjects"]:
                return sorted(s for s, ids in r.subjects.items() if ids)
            case "GET", ["subjects", subject, "versions"]:
                return list(range(1, len(r.versions(subject)) + 1))
            case "GET", ["subjects", subject, "versions", version]:
                return r.version(subject, version)
            case "GET", ["subjects", subject, "versions", version, "schema"]:
                return json.loads(r.version(subject, version)["schema"])
            case "POST", ["subjects", subject, "versions"]:
                return r.register(subject, body)
            case "POST", ["subjects", subject]:
                return r.lookup(subject, body)
            case "DELETE", ["subjects", subject]:
                versions = list(range(1, len(r.versions(subject)) + 1))
                r.subjects[subject] = []
                r.save()
                return versions
            case "POST", ["compatibility", "subjects", subject, "versions", version]:
                ids = r.subjects.get(subject, [])
                if version not in ("latest", "-1") and ids:
                    ids = [r.version(subject, version)["id"]]
                problems = r.compatibility(subject, body, ids)
                return {"is_compatible": not problems, "messages": problems}
            case "GET", ["config"]:
                return {"compatibilityLevel": r.config[""]}
            case "GET", ["config", subject]:
                if subject not in r.config:
                    raise ApiError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")
                return {"compatibilityLevel": r.config[subject]}
            case "PUT", ["config", *rest] if len(rest) <= 1:
                level = body.get("compatibility")
                if level not in LEVELS:
                    raise ApiError(422, 42203, f"Invalid compatibility level {level!r}")
                r.config[rest[0] if rest else ""] = level
                r.save()
                return {"compatibility": level}
        raise ApiError(404, 404, f"no such endpoint: {method} /{'/'.join(parts)}")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


def serve(port: int, auth: str | None, port_file: str | None, data: str | None) -> None:
    handler = type("BoundHandler", (Handler,), {"registry": Registry(data), "auth": auth})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    if port_file:
        with open(port_file, "w") as f:
            f.write(str(server.server_address[1]))
    print(f"schema registry on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port (see --port-file)")
    parser.add_argument("--user", help="require HTTP basic auth with this name:secret")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--data", help="keep registrations in this JSON file (they survive a restart)")
    args = parser.parse_args()
    serve(args.port, args.user, args.port_file, args.data)
