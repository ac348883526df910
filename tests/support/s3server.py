"""A real S3 API server on loopback for tests: moto's standalone server, as a subprocess.

`require_auth=True` makes it check credentials (none is valid: every request is refused with
403), to test how Backburner reports refused credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.support.processes import free_port, wait_until

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret"
REGION = "us-east-1"


class S3Server:
    def __init__(self, log_path: Path, *, require_auth: bool = False) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        if require_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._answers, 30, f"the S3 server on port {self.port}")
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"the S3 server exited:\n{self.log_path.read_text(errors='replace')}")
        return httpx.get(f"{self.endpoint_url}/moto-api/", timeout=2).status_code < 500

    def client(self) -> Any:
        """A plain boto3 client, to look at and tamper with the bucket behind the store's back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def new_bucket(self) -> str:
        name = f"bb-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str) -> dict[str, Any]:
        """Backburner settings for the `s3` store on this server."""
        return {
            "blob_store": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY,
        }

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
