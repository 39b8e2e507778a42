"""Prefect's local mode for the ``focus`` command: a temporary API server that lives and dies with the command.

Without ``PREFECT_API_URL`` Prefect 3 starts a temporary API server itself, as a child in the command's
process group and tied to it by nothing but an ``atexit`` hook: a terminal's Ctrl-C (SIGINT to the whole
foreground group) killed that server first, so the interrupted flow then failed to report and the command
ended a minute later with a ``ConnectError``; a command killed with SIGKILL left it running; and two commands
started at once on a fresh ``PREFECT_HOME`` ran its database migrations at the same time.

:func:`ensure_started` starts the same server instead (the uvicorn app of Prefect's ``SubprocessASGIServer``,
on 127.0.0.1 and a free port, on ``PREFECT_HOME``'s database), once per process, before the first flow:

- in a session of its own, so a terminal's SIGINT reaches the command only, whose flow then stops at once
  and reports to a server that is still there;
- with a watchdog: the child reads a pipe whose other end only this process holds and shuts itself down at
  end-of-file, so however the command ends (SIGKILL included) the server follows it within seconds;
- under an exclusive lock on a file in ``PREFECT_HOME`` until it answers, so two commands started at once run
  the migrations one after the other;
- within ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, else :class:`LocalApiError` says what to do.

The command's flows then run with ``PREFECT_API_URL`` set to it; it is stopped when the process exits, after
Prefect's log and event workers have flushed to it (their ``atexit`` hooks run first). Nothing is started when
``PREFECT_API_URL`` is set or Prefect's ephemeral mode is switched off.

Examples
--------
>>> current_url() is None  # nothing started in this process yet
True
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

__all__ = ["LOCK_FILE", "LocalApiError", "current_url", "ensure_started"]

LOCK_FILE = "focus-local-api.lock"  # in PREFECT_HOME: held while a command's temporary API starts

# The child: a thread that shuts the server down when the pipe from the command ends (the command has exited,
# however it exited), then uvicorn's command line on the arguments after -c.
_CHILD = """
import os, signal, sys, threading, time
def _watch():
    while sys.stdin.buffer.read(1):
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
from uvicorn.main import main
sys.argv[0] = "uvicorn"
main()
"""
_STARTUP_FAILURE = 3  # uvicorn's exit status when it cannot bind the port or the app's start-up fails
_PORT_ATTEMPTS = 3
_STOP_WAIT_S = 5.0


class LocalApiError(RuntimeError):
    """The temporary Prefect API did not start (the command failed; the same command may succeed later)."""


class _Server:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: IO[bytes], settings: contextlib.ExitStack):
        self.process, self.url, self.log, self.settings = process, url, log, settings


_SERVER: _Server | None = None


def current_url() -> str | None:
    """The API URL of the temporary server this process started, or ``None``."""
    return _SERVER.url if _SERVER is not None else None


def ensure_started() -> str | None:
    """Start the temporary Prefect API for this process unless one is configured; return its URL or ``None``.

    Safe to call before every flow: the server starts once per process and stays until the process exits.

    Raises
    ------
    LocalApiError
        When it does not answer within ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` or exits at start-up.
    """
    global _SERVER
    if _SERVER is not None:
        return _SERVER.url
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None  # a server of the user's, or no local mode: Prefect says what is missing
    timeout = float(settings.server.ephemeral.startup_timeout_seconds)
    home = Path(settings.home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **settings.to_environment_variables(exclude_unset=True),
    }
    with _exclusive(home / LOCK_FILE):
        process, url, log = _start(child_env, timeout)
    stack = contextlib.ExitStack()
    _SERVER = _Server(process, url, log, stack)
    atexit.register(_stop)  # after the flow's threads are joined; before it, Prefect's workers flush (LIFO)
    _use_api_url(stack, url)
    return url


def _start(env: dict[str, str], timeout: float) -> tuple[subprocess.Popen[bytes], str, IO[bytes]]:
    import prefect

    app_dir = str(Path(prefect.__file__).parent.parent)
    deadline = time.monotonic() + timeout
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        log = tempfile.TemporaryFile()
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, "--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api"
        try:
            status = _wait_healthy(process, url, deadline)
        except BaseException:  # Ctrl-C while it starts: do not leave it behind
            _end(process)
            log.close()
            raise
        if status == "up":
            return process, url, log
        if status == "timeout":
            _end(process)
            log.close()
            raise LocalApiError(
                f"The temporary Prefect API did not start within {timeout:.0f} s (the machine may be busy): start "
                "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, or raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."
            )
        if process.returncode != _STARTUP_FAILURE:
            break
        log.close()  # most likely the port was taken between choosing and binding it: another port
    reason = _last_line(log)
    log.close()
    raise LocalApiError(
        f"The temporary Prefect API exited at start-up with status {process.returncode}"
        + (f" ({reason})" if reason else "")
        + ": run with --debug, or start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api."
    )


def _wait_healthy(process: subprocess.Popen[bytes], url: str, deadline: float) -> str:
    """``"up"`` once ``url`` answers its health check, ``"exited"`` if the child ends first, else ``"timeout"``."""
    while True:
        if process.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return "up"
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(0.1)


def _use_api_url(stack: contextlib.ExitStack, url: str) -> None:
    """Point this process's Prefect at ``url``, in this thread and in threads that start with a fresh context."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    # no UI link in the flow's log: this server serves no UI and is gone when the command ends
    stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""}))
    global_context = getattr(prefect.context, "_temporary_global_settings_context", None)
    if global_context is not None:  # what prefect_test_harness does for threads with an empty context
        stack.enter_context(global_context(prefect.context.get_settings_context()))


def _stop() -> None:
    global _SERVER
    server, _SERVER = _SERVER, None
    if server is None:
        return
    with contextlib.suppress(Exception):
        server.settings.close()
    _end(server.process)
    server.log.close()


def _end(process: subprocess.Popen[bytes]) -> None:
    """Stop the child: close its pipe and ask it to stop; kill it if it has not stopped within a few seconds."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _exclusive(path: Path) -> Any:
    """Hold an exclusive lock on ``path`` (released by the system if this process dies); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(log: IO[bytes]) -> str:
    with contextlib.suppress(OSError):
        log.seek(0)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""
    return ""
