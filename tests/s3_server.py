"""A real S3-compatible server for the storage tests: moto's server mode (`moto_server`, from
PyPI), started as a subprocess on loopback on a free port of 9400-9499 and stopped by the test.
Stopping it mid-test is how the tests take the storage down.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PORTS = range(9400, 9500)
REGION = "us-east-1"
# moto accepts any credentials; these are not secrets of anything.
ACCESS_KEY = "modelforge-test"
SECRET_KEY = "modelforge-test-secret"


class MotoServer:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        """Start on a free port of the range (another run may take one between probe and bind)."""
        executable = Path(sys.executable).with_name("moto_server")
        for port in _free_ports():
            self.port = port
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [str(executable), "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._answers():
                    # Another run's server may have answered on a port ours failed to bind.
                    time.sleep(0.5)
                    if self.process.poll() is None:
                        return self
                    break
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"moto_server did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel and never answered, as
        with a storage that hangs (clients see their read timeout)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"models-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310 (loopback)
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except (urllib.error.URLError, OSError):
            return False


def storage_options(server: MotoServer, bucket: str) -> dict:
    """The STORAGES["models"] entry settings.py builds from S3_* variables, for this server."""
    from django.conf import settings

    options = dict(settings.STORAGES.get("models", {}).get("OPTIONS", {}))
    from botocore.config import Config

    options.update(
        bucket_name=bucket,
        location="models",
        endpoint_url=server.endpoint,
        region_name=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        file_overwrite=True,
        default_acl=None,
        # A stopped server must fail fast in the tests: one attempt, a short connect timeout.
        client_config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}),
    )
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


def s3_environment(server: MotoServer, bucket: str, cache: Path) -> dict[str, str]:
    """The environment variables a server or worker process reads for the same storage."""
    return {
        "MODEL_STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_PREFIX": "models",
        "S3_ENDPOINT_URL": server.endpoint,
        "S3_REGION": REGION,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_MAX_ATTEMPTS": "1",
        "S3_CONNECT_TIMEOUT_SECONDS": "1",
        "MODEL_CACHE_PATH": str(cache),
    }


def _free_ports():
    """Ports of the range that are free now, in random order (parallel runs probe at once)."""
    for port in random.sample(PORTS, len(PORTS)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        yield port
