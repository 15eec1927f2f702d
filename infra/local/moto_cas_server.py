"""moto server for floe's tests, with fixes where moto 5.2 differs from AWS in ways floe's tests depend on.

- Glue UpdateTable honours VersionId: moto accepts a stale one, so a test of optimistic locking against plain
  moto passes falsely. Here the check-and-update runs under a lock and a stale VersionId is rejected with
  ConcurrentModificationException, as AWS Glue does.
- DynamoDB requests are atomic: moto's in-memory tables are not thread-safe, and concurrent TransactWriteItems
  failed with "dictionary changed size during iteration" (HTTP 500). Each request runs under a lock, which is
  what DynamoDB's per-item atomicity and serializable transactions guarantee anyway.
- TransactWriteItems deep-copies each table once per transaction for its rollback, not once per item: moto's copy
  per item made a 100-item transaction on a table of thousands of dedup claims take seconds.

Usage: python moto_cas_server.py -H 127.0.0.1 -p PORT
"""

import copy
import sys
import threading

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.responses import DynamoHandler
from moto.glue import responses
from moto.glue.exceptions import GlueClientError
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

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
