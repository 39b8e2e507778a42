"""``focus`` in Prefect's local mode (no PREFECT_API_URL): Ctrl-C, SIGKILL, commands at once, a slow start.

Each test runs the real ``focus`` console script as a subprocess on a fresh PREFECT_HOME, in a session of
its own (as a shell runs a foreground job), so a signal to its process group is what a terminal's Ctrl-C
sends. The temporary Prefect API it starts (:mod:`flows.cli.local_api`) is found as its child through /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import cli
from flows.cli import local_api

pytestmark = pytest.mark.timeout(240)

FOCUS = str(Path(sys.executable).parent / "focus")
FLOW_STARTED = "chunk(s) to run"  # the evaluate flow's own log line (shown with --verbose): the flow runs by then
# long enough to be interrupted: 10 chunks of SmoothGrad with 200 noisy copies per mosaic
SLOW_EVALUATION = ("--per-class", "2", "--chunk-size", "2", "--method", "smoothgrad:n_samples=200", "--verbose")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(home), **extra}


def _evaluate(home: Path, weights: str, url: str, *options: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FOCUS, "evaluate", "--weights", weights, "--database-url", url, *options],
        env=_env(home, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for_line(process: subprocess.Popen[str], text: str) -> list[str]:
    """Read the command's stderr until a line contains ``text``; the lines read (fails if it ends first)."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"focus ended (rc {process.wait()}) before printing {text!r}:\n{''.join(lines)}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still alive after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


@pytest.fixture
def started() -> Iterator[list[tuple[subprocess.Popen[str], list[int]]]]:
    """The commands a test starts and the children it saw; whatever of them is left is killed afterwards."""
    commands: list[tuple[subprocess.Popen[str], list[int]]] = []
    yield commands
    for process, children in commands:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "prefect-home"  # fresh: the first start runs Prefect's migrations


@pytest.mark.slow
def test_ctrl_c_stops_the_command_in_seconds_and_leaves_nothing(
    home: Path, digits_weights: str, sqlite_url: str, started: list
):
    """SIGINT to the command's process group once the flow runs: rc 130, the message, no server left.

    Before, the group's SIGINT killed Prefect's temporary server first; the flow then failed to report,
    and the command ended 80 s later with "ConnectError: [Errno 111] Connection refused" and rc 1.
    """
    process = _evaluate(home, digits_weights, sqlite_url, *SLOW_EVALUATION)
    _wait_for_line(process, FLOW_STARTED)
    children = _children(process.pid)
    started.append((process, children))
    assert children, "the temporary Prefect API runs as a child of the command"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted; rows already written are kept, run the same command to finish" in err
    assert "ConnectError" not in err
    assert [child for child in children if _alive(child)] == []  # stopped before the command exited


@pytest.mark.slow
def test_a_killed_command_takes_its_server_along(home: Path, digits_weights: str, sqlite_url: str, started: list):
    """SIGKILL to the command while its flow runs: its temporary Prefect API ends within seconds.

    Before, the server (about 200 MB) stayed alive for 25 minutes.
    """
    process = _evaluate(home, digits_weights, sqlite_url, *SLOW_EVALUATION)
    _wait_for_line(process, FLOW_STARTED)
    children = _children(process.pid)
    started.append((process, children))
    assert children
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _gone_within(children, 15) == []


@pytest.mark.slow
def test_commands_started_at_once_on_a_fresh_home_all_succeed(
    home: Path, digits_weights: str, tmp_path: Path, started: list
):
    """Three ``focus evaluate`` at once on one fresh PREFECT_HOME: each rc 0, no server start fails.

    Before, their temporary servers ran the migrations of PREFECT_HOME's database at the same time
    ("index ix_flow__created already exists", "Application startup failed"); under load each command
    ended with rc 1. Three, not two: on this machine two rarely overlapped, three did every time.
    """
    import db

    urls = [f"sqlite:///{tmp_path / f'focus-{i}.db'}" for i in range(3)]
    for url in urls:
        db.upgrade(url)
    processes = [_evaluate(home, digits_weights, url, "--per-class", "1") for url in urls]
    started.extend((process, []) for process in processes)
    for process in processes:
        _, err = process.communicate(timeout=200)
        assert process.returncode == 0, err
        assert "startup failed" not in err and "Traceback" not in err, err


def _waits_for_lock(pid: int, inode: int) -> bool:
    """Whether ``pid`` is blocked waiting for a lock on the file with ``inode`` (a ``->`` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[5] == str(pid):
            if fields[6].rsplit(":", 1)[-1] == str(inode):
                return True
    return False


@pytest.mark.slow
def test_a_command_waits_while_another_starts_its_server(
    home: Path, digits_weights: str, sqlite_url: str, started: list
):
    """While another command's temporary API starts (it holds PREFECT_HOME's lock), a command waits, then runs.

    Before, nothing made the second wait: both servers ran the migrations of a fresh database at once.
    """
    import fcntl

    home.mkdir(parents=True)
    with open(home / local_api.LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as a command does while its server starts
        process = _evaluate(home, digits_weights, sqlite_url, "--per-class", "1")
        started.append((process, []))
        while not _waits_for_lock(process.pid, os.fstat(lock.fileno()).st_ino):
            assert process.poll() is None, "focus ran without waiting for the lock"
            time.sleep(0.2)
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


@pytest.mark.slow
def test_a_start_that_times_out_says_what_to_do(home: Path, digits_weights: str, sqlite_url: str, started: list):
    """A temporary API that does not answer in time: one line naming the way out, rc 1, no server left."""
    process = _evaluate(
        home, digits_weights, sqlite_url, "--per-class", "1", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0"
    )
    started.append((process, []))
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if not line.startswith("focus: running flow")]
    assert process.returncode == 1, err
    assert len(lines) == 1, err
    assert "did not start within 0 s" in lines[0]
    assert "prefect server start" in lines[0] and "PREFECT_API_URL" in lines[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", [("evaluate",), ("train", "--epochs", "1"), ("demo", "--quick")])
def test_device_this_machine_lacks_fails_before_prefect(
    command: tuple[str, ...], digits_weights: str, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
):
    """``--device cuda`` without a GPU: one line and rc 2 before any Prefect API starts.

    Before, the flow started (the temporary API, the flow run) and only then failed on its first line.
    """
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FOCUS_DATABASE_URL", raising=False)  # main() sets it from --database-url
    monkeypatch.chdir(tmp_path)
    weights = ["--weights", digits_weights, "--database-url", sqlite_url] if command[0] == "evaluate" else []
    code = cli.main([*command, *weights, "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [f"focus {command[0]}: error: {err.split(': error: ', 1)[1].strip()}"]
    assert "no CUDA GPU" in err
    assert "running flow" not in err and local_api.current_url() is None
