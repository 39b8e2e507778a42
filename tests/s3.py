"""A real S3-compatible server for the tests: ``moto_server`` as a subprocess on 127.0.0.1.

:func:`start_s3_server` starts it on a free port, waits until it answers, and returns an
:class:`S3Server` with its endpoint and the environment a client (this process, a ``focus`` command
or a Prefect worker) needs to reach it: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (botocore, hence s3fs, reads the endpoint from it).
:meth:`S3Server.stop` kills it by its PID. The server logs each request (``"GET /bucket/key HTTP/1.1"``)
to its log file, which :meth:`S3Server.requests` reads, so a test can count downloads.

Examples
--------
>>> server = start_s3_server(tmp_path)  # doctest: +SKIP
>>> server.make_bucket("models"); server.env["AWS_ENDPOINT_URL"]  # doctest: +SKIP
'http://127.0.0.1:40123'
>>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["S3Server", "start_s3_server", "SECRET_KEY", "ACCESS_KEY"]

#: moto accepts any credentials; these are distinctive, so a test can search output for them.
ACCESS_KEY = "AKIAFOCUSTESTKEY0001"
SECRET_KEY = "SEKRETs3focus/aUdiT+0123456789abcdefghij"
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(port: int) -> list[str]:
    executable = Path(sys.executable).with_name("moto_server")
    if executable.exists():
        return [str(executable), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@dataclass
class S3Server:
    """A running moto server: where it listens, what a client's environment needs, its process and log."""

    endpoint: str
    process: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self):  # noqa: ANN201 - a boto3/botocore client, typed loosely to keep imports lazy
        """A botocore S3 client for this server (for set-up and checks, not for the code under test)."""
        import botocore.session

        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def requests(self, method: str, path: str) -> int:
        """How many ``method`` requests for ``path`` (``/bucket/key``, query string ignored) the server logged."""
        pattern = re.compile(rf'"{method} {re.escape(path)}(\?[^ ]*)? HTTP/')
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if pattern.search(line))

    def contents(self) -> dict[str, dict[str, bytes]]:
        """Every bucket's objects, ``{bucket: {key: bytes}}``: what a durable store keeps over a restart."""
        client = self.client()
        return {bucket["Name"]: {key: self.get(bucket["Name"], key) for key in self.keys(bucket["Name"])}
                for bucket in client.list_buckets()["Buckets"]}

    def restart(self, contents: dict[str, dict[str, bytes]]) -> None:
        """Start a stopped server again on the same port with ``contents`` put back before :meth:`restart` returns.

        moto keeps objects in memory only; an object store that restarts keeps them, so a test passes what
        :meth:`contents` read before :meth:`stop`.
        """
        port = int(self.endpoint.rsplit(":", 1)[1])
        self.process = _launch(port, self.log, mode="ab")
        _wait_until_it_answers(self)
        for bucket, objects in contents.items():
            self.make_bucket(bucket)
            for key, data in objects.items():
                self.put(bucket, key, data)

    def stop(self) -> None:
        """Kill the server by its PID (its own process group) and wait for it."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_s3_server(folder: Path) -> S3Server:
    """Start ``moto_server`` on a free port of 127.0.0.1, logging to ``folder/moto.log``; wait until it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = folder / "moto.log"
    process = _launch(port, log, mode="wb")
    endpoint = f"http://127.0.0.1:{port}"
    server = S3Server(endpoint, process, log, env={
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    })
    _wait_until_it_answers(server)
    return server


def _launch(port: int, log: Path, mode: str) -> subprocess.Popen:
    """``moto_server`` on ``port`` of 127.0.0.1, in its own process group, logging to ``log`` (``mode`` "ab": append)."""
    with log.open(mode) as handle:
        return subprocess.Popen(
            _command(port), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )


def _wait_until_it_answers(server: S3Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.process.returncode}: "
                               f"{server.log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:  # it answered
            return
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto_server did not answer on {server.endpoint} within {START_TIMEOUT_S} s"
                                   ) from None
            time.sleep(0.2)
