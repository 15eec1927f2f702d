"""moto server for floe's tests, with one fix: Glue UpdateTable honours VersionId.

moto 5.2 accepts an UpdateTable whose VersionId is stale, so a test of optimistic locking against plain moto
passes falsely. Here the check-and-update runs under a lock and a stale VersionId is rejected with
ConcurrentModificationException, as AWS Glue does. Usage: python moto_cas_server.py -H 127.0.0.1 -p PORT
"""

import sys
import threading

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

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
