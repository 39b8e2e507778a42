"""Bounded weight downloads against a real HTTP server on 127.0.0.1 (``http.server`` in a thread).

A server that hangs or trickles fails in the configured seconds, an object larger than the size cap is refused
before (announced size) or while (streamed bytes) it is downloaded, no partial file is left behind, and the cache
keeps under its size by removing its least recently used files.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.weights import weight_store
from flows.weights.cache_limits import DownloadLimits, evict_least_recent
from focus_core.errors import FocusError
from tests import waits

BODY = bytes(range(256)) * 16  # 4 KiB
LARGE = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/ok``: 4 KiB; ``/hang``: never answers; ``/trickle``: a byte every 50 ms; ``/large``: 64 KiB announced;
    ``/unannounced``: 64 KiB without a Content-Length (the size cap must stop the stream)."""

    protocol_version = "HTTP/1.0"
    release = threading.Event()
    requests: list[str] = []  # "HEAD /hang/w.pt", ... in the order they came
    sent: list[int] = []  # body bytes written to /trickle

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _head(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.path.split("/")[1]
        self.requests.append(f"{self.command} {self.path}")
        if path == "hang":
            self.release.wait(waits.HANG_S)  # till the test ends: only the client's read timeout ends the request
            return
        if path == "ok":
            self._head(len(BODY))
            if body:
                self.wfile.write(BODY)
        elif path == "trickle":
            self._head(len(BODY))
            for byte in BODY if body else b"":
                if self.release.wait(0.05):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                self.sent.append(1)
        elif path == "large":
            self._head(LARGE)
            if body:
                self.wfile.write(b"\0" * LARGE)
        elif path == "unannounced":
            self._head(None)
            if body:
                for _ in range(LARGE // len(BODY)):
                    self.wfile.write(BODY)
        else:
            self.send_error(404)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.release.clear()
    _Handler.requests.clear(), _Handler.sent.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(weight_store.CACHE_ENV_VAR, str(folder))
    for name in ("FOCUS_WEIGHTS_CONNECT_TIMEOUT", "FOCUS_WEIGHTS_READ_TIMEOUT", "FOCUS_WEIGHTS_DOWNLOAD_TIMEOUT",
                 "FOCUS_WEIGHTS_MAX_BYTES", "FOCUS_WEIGHTS_CACHE_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return folder


def _left_in(cache: Path) -> list[str]:
    folder = cache / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_served_object_is_downloaded_into_the_cache(server, cache):
    path = weight_store.local_copy(f"{server}/ok/w.pt")
    assert path.read_bytes() == BODY and _left_in(cache) == [path.name]


def test_a_hanging_server_fails_within_the_read_timeout(server, cache, monkeypatch):
    monkeypatch.setenv("FOCUS_WEIGHTS_READ_TIMEOUT", "1")
    with pytest.raises(TimeoutError, match="timed out.*FOCUS_WEIGHTS_READ_TIMEOUT") as error:
        weight_store.local_copy(f"{server}/hang/w.pt")  # the server never answers: only the timeout ends it
    assert _Handler.requests == ["HEAD /hang/w.pt", "GET /hang/w.pt"], "the metadata request and its GET fallback"
    assert "\n" not in str(error.value) and _left_in(cache) == []


def test_a_trickling_server_is_bounded_by_the_total_deadline_and_leaves_no_partial_file(server, cache, monkeypatch):
    monkeypatch.setenv("FOCUS_WEIGHTS_DOWNLOAD_TIMEOUT", "1.5")  # the body alone takes 4096 x 50 ms = 200 s
    with pytest.raises(TimeoutError, match="passed 1.5 s"):
        weight_store.local_copy(f"{server}/trickle/w.pt")
    assert len(_Handler.sent) < len(BODY)  # the download stopped before the body ended, however slow the machine
    assert _left_in(cache) == []


def test_an_announced_object_over_the_size_cap_is_refused_before_it_is_downloaded(server, cache, monkeypatch):
    monkeypatch.setenv("FOCUS_WEIGHTS_MAX_BYTES", str(16 * 1024))
    with pytest.raises(FocusError, match=r"are 64.0 KiB, larger than the 16.0 KiB a download may be.*"
                                         "FOCUS_WEIGHTS_MAX_BYTES"):
        weight_store.local_copy(f"{server}/large/w.pt")
    assert _left_in(cache) == []


def test_an_unannounced_object_over_the_size_cap_stops_while_downloading_without_a_partial_file(
    server, cache, monkeypatch
):
    monkeypatch.setenv("FOCUS_WEIGHTS_MAX_BYTES", str(16 * 1024))
    with pytest.raises(FocusError, match="are more than 16.0 KiB, larger than the 16.0 KiB a download may be"):
        weight_store.local_copy(f"{server}/unannounced/w.pt")
    assert _left_in(cache) == []


def test_the_cache_keeps_under_its_limit_removing_the_least_recently_used(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("FOCUS_WEIGHTS_CACHE_MAX_BYTES", str(2 * len(BODY) + 100))  # two objects fit, not three
    urls = []
    for name in "abc":
        (tmp_path / f"{name}.pt").write_bytes(name.encode() * len(BODY))
        urls.append((tmp_path / f"{name}.pt").as_uri())
    a = weight_store.local_copy(urls[0])
    time.sleep(0.01)
    b = weight_store.local_copy(urls[1])
    time.sleep(0.01)
    assert weight_store.local_copy(urls[0]) == a  # a cache hit: a is now used more recently than b
    time.sleep(0.01)
    c = weight_store.local_copy(urls[2])
    assert _left_in(cache) == sorted([a.name, c.name]) and not b.exists()
    assert weight_store.local_copy(urls[1]).read_bytes() == b"b" * len(BODY)  # evicted: downloaded again


def test_eviction_removes_stale_partial_files_and_never_the_file_just_written(tmp_path):
    folder = tmp_path / "sha256"
    folder.mkdir()
    stale, live, kept = folder / ".download-x.partial", folder / ".download-y.partial", folder / "k.pt"
    for path in (stale, live, kept):
        path.write_bytes(b"x" * 100)
    old = time.time() - 3600
    import os

    os.utime(stale, (old, old))
    removed = evict_least_recent(folder, max_bytes=10, keep=kept, stale_after_seconds=60)
    assert removed == [stale] and live.exists() and kept.exists()


def test_limits_come_from_the_environment_and_a_bad_value_is_one_sentence():
    limits = DownloadLimits.from_environment({"FOCUS_WEIGHTS_CONNECT_TIMEOUT": "2.5", "FOCUS_WEIGHTS_MAX_BYTES": "1e6"})
    assert (limits.connect_seconds, limits.max_bytes, limits.read_seconds) == (2.5, 1_000_000, 60.0)
    with pytest.raises(FocusError, match="FOCUS_WEIGHTS_READ_TIMEOUT='soon' is not a positive number"):
        DownloadLimits.from_environment({"FOCUS_WEIGHTS_READ_TIMEOUT": "soon"})
