"""A local AWS stand-in for the integration tests and `make local`: moto server on 127.0.0.1 (S3, DynamoDB, Glue), started and
stopped by PID, plus the resources floe's SAM template creates (warehouse bucket, state table)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

REGION = "us-east-1"
BUCKET = "floe-warehouse"
STATE_TABLE = "floe-state"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")
        script = Path(__file__).with_name("moto_cas_server.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto server did not start (see {log})")
                time.sleep(0.2)

    def stop(self):
        # Only the process we started, by PID.
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, **CREDENTIALS)

    def glue_table(self, database: str, name: str) -> tuple[dict, dict[str, str]]:
        """A Glue table as Athena sees it, and its columns (name → Hive type)."""
        table = self.client("glue").get_table(DatabaseName=database, Name=name)["Table"]
        return table, {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}

    def reset(self):
        """Fresh, empty services, then the resources the SAM template would create."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)
        self.faults([])
        self.client("s3").create_bucket(Bucket=BUCKET)
        ddb = self.client("dynamodb")
        ddb.create_table(
            TableName=STATE_TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.update_time_to_live(TableName=STATE_TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})

    def faults(self, rules: list[dict] | None = None) -> list[dict]:
        """Set fault rules (see moto_cas_server.py), or with None read them back with how often each fired."""
        if rules is None:
            req = urllib.request.Request(f"{self.endpoint}/floe-faults", method="GET")
        else:
            body = json.dumps(rules).encode()
            req = urllib.request.Request(f"{self.endpoint}/floe-faults", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def floe_env(self) -> dict[str, str]:
        """The function environment of floe on AWS, pointed at this stand-in."""
        return {
            **os.environ,
            "FLOE_BACKEND": "aws",
            "FLOE_WAREHOUSE": f"s3://{BUCKET}/warehouse",
            "FLOE_STATE_TABLE": STATE_TABLE,
            "FLOE_S3_PATH_STYLE": "true",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def pyiceberg_catalog(self):
        from pyiceberg.catalog.glue import GlueCatalog

        return GlueCatalog(
            "floe",
            **{
                "glue.endpoint": self.endpoint,
                "glue.region": REGION,
                "glue.access-key-id": "testing",
                "glue.secret-access-key": "testing",
                "s3.endpoint": self.endpoint,
                "s3.region": REGION,
                "s3.access-key-id": "testing",
                "s3.secret-access-key": "testing",
            },
        )

    def objects(self, suffix: str = ".parquet") -> dict[str, bytes]:
        s3 = self.client("s3")
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    # Keyed by the path under the warehouse: tables may hold files of the same name.
                    name = obj["Key"].split("warehouse/", 1)[-1]
                    out[name] = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        return out
