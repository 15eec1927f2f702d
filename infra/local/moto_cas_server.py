"""moto server for floe's tests, with fixes where moto 5.2 differs from AWS in ways floe's tests depend on.

- Glue UpdateTable honours VersionId: moto accepts a stale one, so a test of optimistic locking against plain
  moto passes falsely. Here the check-and-update runs under a lock and a stale VersionId is rejected with
  ConcurrentModificationException, as AWS Glue does.
- DynamoDB requests are atomic: moto's in-memory tables are not thread-safe, and concurrent TransactWriteItems
  failed with "dictionary changed size during iteration" (HTTP 500). Each request runs under a lock, which is
  what DynamoDB's per-item atomicity and serializable transactions guarantee anyway.
- TransactWriteItems deep-copies each table once per transaction for its rollback, not once per item: moto's copy
  per item made a 100-item transaction on a table of thousands of dedup claims take seconds.
- Fault injection for floe's fault matrix (tests/test_faults.py): `POST /floe-faults` with a JSON list of rules
  makes matching requests fail the way AWS fails under load, `GET` reports how often each fired, `DELETE` clears
  them. A rule: `{"target": "dynamodb:TransactWriteItems" | "glue:UpdateTable" | "s3:PUT" | …, "match": optional
  substring of the path, "effect": …, "times": N, "seconds": S}` with effects
  `throttle` (DynamoDB 400 ProvisionedThroughputExceededException), `slowdown` (S3 503 SlowDown),
  `conflict` (Glue 400 ConcurrentModificationException), `error500` (an internal error), `delay_before`
  (answer late) and `delay_after` (apply the request, then answer late: the client times out and retries
  something that already happened).

Usage: python moto_cas_server.py -H 127.0.0.1 -p PORT
"""

import copy
import json
import sys
import threading
import time

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.responses import DynamoHandler
from moto.glue import responses
from moto.glue.exceptions import GlueClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main

_lock = threading.Lock()
_update_table = responses.GlueResponse.update_table


class ConcurrentModificationException(GlueClientError):
    def __init__(self, message: str):
        super().__init__("ConcurrentModificationException", message)


def update_table(self):
    version = self.parameters.get("VersionId")
    with _lock:
        if version is not None:
            database = self.parameters.get("DatabaseName")
            name = self.parameters["TableInput"]["Name"]
            current = str(self.glue_backend.get_table(database, name)._current_version)
            if str(version) != current:
                raise ConcurrentModificationException(
                    f"Table {database}.{name} was modified: VersionId {version} is not the current {current}"
                )
        return _update_table(self)


responses.GlueResponse.update_table = update_table

_dynamodb_lock = threading.RLock()
_call_action = DynamoHandler.call_action


def call_action(self):
    with _dynamodb_lock:
        return _call_action(self)


DynamoHandler.call_action = call_action


class _CopyOncePerTransaction:
    """Stands in for the `copy` module inside moto.dynamodb.models: within one transaction the same object is
    copied once."""

    memo: dict | None = None

    @classmethod
    def deepcopy(cls, obj):
        if cls.memo is None:
            return copy.deepcopy(obj)
        if id(obj) not in cls.memo:
            cls.memo[id(obj)] = copy.deepcopy(obj)
        return cls.memo[id(obj)]


dynamodb_models.copy = _CopyOncePerTransaction
_transact_write_items = dynamodb_models.DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    with _dynamodb_lock:
        _CopyOncePerTransaction.memo = {}
        try:
            return _transact_write_items(self, transact_items)
        finally:
            _CopyOncePerTransaction.memo = None


dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items

_faults_lock = threading.Lock()
_faults: list[dict] = []


def _target(environ) -> str:
    amz = environ.get("HTTP_X_AMZ_TARGET", "")
    if amz.startswith("DynamoDB_"):
        return "dynamodb:" + amz.split(".", 1)[1]
    if amz.startswith("AWSGlue."):
        return "glue:" + amz.split(".", 1)[1]
    return "s3:" + environ.get("REQUEST_METHOD", "")


def _take_fault(environ) -> dict | None:
    target, path = _target(environ), environ.get("PATH_INFO", "")
    with _faults_lock:
        for rule in _faults:
            if rule["target"] == target and rule.get("match", "") in path and rule["fired"] < rule["times"]:
                rule["fired"] += 1
                return rule
    return None


def _respond(start_response, status: str, body: str, content_type: str):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body.encode()]


def _inject(rule, environ, start_response, app):
    effect = rule["effect"]
    if effect == "throttle":
        body = json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded (injected)",
            }
        )
        return _respond(start_response, "400 Bad Request", body, "application/x-amz-json-1.0")
    if effect == "slowdown":
        body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected).</Message></Error>"
        return _respond(start_response, "503 Slow Down", body, "application/xml")
    if effect == "conflict":
        body = json.dumps({"__type": "ConcurrentModificationException", "message": "Update table failed (injected)"})
        return _respond(start_response, "400 Bad Request", body, "application/x-amz-json-1.1")
    if effect == "error500":
        if _target(environ).startswith("s3:"):
            body = "<Error><Code>InternalError</Code><Message>We encountered an internal error (injected).</Message></Error>"
            return _respond(start_response, "500 Internal Server Error", body, "application/xml")
        body = json.dumps({"__type": "InternalServerError", "message": "Internal server error (injected)"})
        return _respond(start_response, "500 Internal Server Error", body, "application/x-amz-json-1.0")
    if effect == "delay_before":
        time.sleep(rule.get("seconds", 2.0))
        return app(environ, start_response)
    if effect == "delay_after":
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(app(environ, capture))
        time.sleep(rule.get("seconds", 2.0))
        start_response(captured["status"], captured["headers"])
        return [body]
    raise ValueError(f"unknown fault effect {effect!r}")


def _admin(environ, start_response):
    global _faults
    method = environ["REQUEST_METHOD"]
    with _faults_lock:
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            rules = json.loads(environ["wsgi.input"].read(length) or b"[]")
            _faults = [{"fired": 0, "match": "", **r} for r in rules]
        elif method == "DELETE":
            _faults = []
        body = json.dumps(_faults)
    return _respond(start_response, "200 OK", body, "application/json")


_dispatch = DomainDispatcherApplication.__call__


def dispatch(self, environ, start_response):
    if environ.get("PATH_INFO") == "/floe-faults":
        return _admin(environ, start_response)
    rule = _take_fault(environ)
    if rule is None:
        return _dispatch(self, environ, start_response)
    return _inject(rule, environ, start_response, lambda e, s: _dispatch(self, e, s))


DomainDispatcherApplication.__call__ = dispatch

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
