"""Start and stop a throwaway PostgreSQL server where none is installed (for the benchmarks).

The benchmarks measure database writes on PostgreSQL (``throughput.py --db URL``, ``db_write.py``), but a
benchmark machine often has no PostgreSQL and no internet. The ``pgserver`` wheel bundles the PostgreSQL
binaries (``initdb``, ``pg_ctl``, ``postgres``); this script finds them without importing ``pgserver`` (its
Python API needs psutil and fasteners), makes a fresh cluster and runs it on 127.0.0.1.

Usage
-----
::

    pip install --no-deps pgserver      # or pip install --no-deps --target DIR ... and PYTHONPATH=DIR
    URL=$(python benchmarks/throwaway_postgres.py start --dir /tmp/pgbench --port 5433)
    .venv/bin/python benchmarks/throughput.py --db "$URL" ...
    python benchmarks/throwaway_postgres.py stop --dir /tmp/pgbench

``start`` makes a new cluster in ``DIR/data`` (trust authentication, UTF8, C locale, superuser role
``postgres``), starts it listening on 127.0.0.1 only (on ``--port`` or a free port, Unix socket in
``DIR/data``, log in ``DIR/data/server.log``), waits until it answers, and prints one line: the SQLAlchemy URL
``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``. ``stop`` is ``pg_ctl stop -m fast`` (and fails
when no server runs in ``DIR``). On any failure either prints one line on stderr and exits with status 1.

Notes
-----
PostgreSQL refuses to run as root. As root the cluster belongs to the system user ``focuspg`` (made with
``useradd`` or ``adduser`` when missing; else ``nobody``), and the binaries run as that user through the
first of ``runuser``, ``setpriv``, ``su`` or Python's own ``subprocess`` switch of user that works. When
that user cannot reach the wheel's binaries (a site-packages under ``/root``, mode 700), they are copied
into ``DIR/pg`` (about 30 MB). ``DIR`` itself must be reachable by that user (``/tmp/...`` is).

``start`` on a ``DIR`` that holds an earlier, stopped throwaway cluster wipes it; it refuses any other
non-empty ``DIR`` and a ``DIR`` whose server still runs. ``--bin-dir`` uses another PostgreSQL's ``bin``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["Failure", "bundled_bin_dir", "main", "start", "stop"]

ROLE = "postgres"
SERVICE_USER = "focuspg"
STATE_FILE = "throwaway_postgres.json"
NEEDED = ("initdb", "pg_ctl", "postgres")
MAX_SOCKET_DIR = 90  # a Unix socket path must stay under 108 bytes


class Failure(Exception):
    """A step failed; its message is the one line printed on stderr."""


def bundled_bin_dir() -> Path:
    """The ``pginstall/bin`` folder of the installed ``pgserver`` wheel, found without importing it."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise Failure("pgserver is not installed: pip install --no-deps pgserver (or put the folder pip --target "
                      "wrote on PYTHONPATH), or pass --bin-dir")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _check_bin(bin_dir: Path) -> None:
    missing = [name for name in NEEDED if not (bin_dir / name).is_file()]
    if missing:
        raise Failure(f"{bin_dir} lacks {', '.join(missing)}")


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _service_user() -> pwd.struct_passwd | None:
    """None when not root; as root the unprivileged user that owns the cluster, made if missing."""
    if os.geteuid() != 0:
        return None
    makers = (["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
              ["adduser", "--system", "--no-create-home", "--group", SERVICE_USER],  # Debian's adduser
              ["adduser", "-S", "-D", "-H", SERVICE_USER])  # BusyBox's adduser
    for maker in makers:
        if _user(SERVICE_USER) is None and shutil.which(maker[0]):
            subprocess.run(maker, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    for name in (SERVICE_USER, "nobody"):
        entry = _user(name)
        if entry is not None and entry.pw_uid != 0:
            return entry
    raise Failure(f"running as root, and neither could a user {SERVICE_USER} be made nor is there a user nobody")


def _methods(user: pwd.struct_passwd | None) -> list[str]:
    """The ways to run a command as ``user`` that this machine has, best first."""
    if user is None:
        return ["direct"]
    return [tool for tool in ("runuser", "setpriv", "su") if shutil.which(tool)] + ["python"]


def _wrap(method: str, user: pwd.struct_passwd | None, cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The argv (and ``subprocess`` keywords) that run ``cmd`` as ``user`` by ``method``."""
    if method == "direct" or user is None:
        return cmd, {}
    if method == "runuser":
        return ["runuser", "-u", user.pw_name, "--", *cmd], {}
    if method == "setpriv":
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--", *cmd], {}
    if method == "su":
        return ["su", "-s", "/bin/sh", "-c", shlex.join(cmd), user.pw_name], {}
    return cmd, {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _gist(text: str) -> str:
    """The most telling line of a tool's output: its first error line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if any(key in line for key in ("error", "ERROR", "FATAL", "denied"))]
    return (errors or lines or ["(no output)"])[0 if errors else -1]


def _run(cmd: list[Any], method: str, user: pwd.struct_passwd | None, cwd: Path, timeout: float = 300) -> str:
    """Run ``cmd`` as ``user``; its output (stdout and stderr) or a :class:`Failure`."""
    argv, extra = _wrap(method, user, [str(part) for part in cmd])
    name = Path(str(cmd[0])).name
    with tempfile.TemporaryFile("w+") as out:  # not a pipe: the postmaster pg_ctl starts may inherit it
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                  timeout=timeout, check=False, text=True, **extra)
        except (OSError, subprocess.SubprocessError) as err:
            raise Failure(f"{name} could not run (via {method}): {err}") from None
        out.seek(0)
        text = out.read()
    if done.returncode != 0:
        raise Failure(f"{name} failed (via {method}, exit {done.returncode}): {_gist(text)}")
    return text


def _reachable(path: Path, user: pwd.struct_passwd | None) -> bool:
    """Whether ``user`` may search every folder down to ``path`` and execute ``path`` (by permission bits)."""
    if user is None:
        return True
    for step in [*reversed(path.parents), path]:
        info = step.stat()
        shift = 6 if info.st_uid == user.pw_uid else 3 if info.st_gid == user.pw_gid else 0
        if not info.st_mode & (1 << shift):
            return False
    return True


def _first_method(bin_dir: Path, user: pwd.struct_passwd | None, cwd: Path) -> str:
    """The first way that runs ``pg_ctl --version`` as ``user``."""
    errors = []
    for method in _methods(user):
        try:
            _run([bin_dir / "pg_ctl", "--version"], method, user, cwd, timeout=60)
            return method
        except Failure as err:
            errors.append(str(err))
    who = user.pw_name if user else "this user"
    raise Failure(f"cannot run {bin_dir / 'pg_ctl'} as {who}: {'; '.join(errors)}")


def _open_up(folder: Path) -> None:
    """chmod a+rX under ``folder`` (and on it)."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))


def _copy_install(bin_dir: Path, dest: Path) -> Path:
    """Copy the wheel's ``pginstall`` (and auditwheel's ``pgserver.libs`` beside the package) under ``dest``."""
    install, package = bin_dir.parent, bin_dir.parent.parent
    target = dest / package.name / install.name
    for part in ("bin", "lib", "share"):
        if (install / part).is_dir():
            shutil.copytree(install / part, target / part, symlinks=True, dirs_exist_ok=True)
    libs = package.parent / f"{package.name}.libs"  # the binaries' RPATH: $ORIGIN/../../../pgserver.libs
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name, symlinks=True, dirs_exist_ok=True)
    _open_up(dest)
    return target / "bin"


def _usable_bin(bin_dir: Path, user: pwd.struct_passwd | None, work: Path, may_copy: bool) -> tuple[Path, str]:
    """A bin folder and a way to run it as ``user``, copying the wheel's binaries where ``user`` can't reach them."""
    if _reachable(bin_dir / "postgres", user) or not may_copy:
        try:
            return bin_dir, _first_method(bin_dir, user, work)
        except Failure:
            if not may_copy:
                raise
    copied = _copy_install(bin_dir, work / "pg")
    return copied, _first_method(copied, user, work)


def _server_pid(data: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process is alive."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, someone else's
        pass
    return pid


def _read_state(work: Path) -> dict[str, Any] | None:
    try:
        return json.loads((work / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _fresh_dir(work: Path, user: pwd.struct_passwd | None) -> None:
    """Make ``work`` an empty folder ``user`` can reach: new, empty, or an earlier stopped throwaway cluster."""
    if work.exists() and any(work.iterdir()):
        state = _read_state(work)
        if state is None:
            raise Failure(f"{work} is not empty and holds no throwaway cluster: give a new or empty --dir")
        if _server_pid(work / "data"):
            raise Failure(f"a throwaway server still runs in {work} (port {state.get('port')}): stop it first")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if user is not None:
        work.chmod(work.stat().st_mode | 0o755)
        if not _reachable(work, user):
            raise Failure(f"user {user.pw_name} cannot reach {work}: pick a --dir such as /tmp/pgbench")


def _free_port(port: int | None) -> int:
    """``port`` if 127.0.0.1 has it free, else a :class:`Failure`; a free port when ``port`` is None."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does: TIME_WAIT is no obstacle
        try:
            probe.bind(("127.0.0.1", port or 0))
        except OSError as err:
            raise Failure(f"port {port} on 127.0.0.1 is taken ({err.strerror}): pick another --port") from None
        return probe.getsockname()[1]


def _configure(data: Path, port: int) -> None:
    """Listen on 127.0.0.1:``port`` only; the Unix socket in ``data`` (which the server owns)."""
    sockets = str(data) if len(str(data)) <= MAX_SOCKET_DIR else ""  # too long a path: TCP only
    quoted = sockets.replace("'", "''")
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(f"\n# throwaway_postgres.py\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{quoted}'\n")


def _accepts(port: int) -> bool:
    """Whether a PostgreSQL server answers an SSLRequest on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return conn.recv(1) in (b"N", b"S")
    except OSError:
        return False


def _wait_accepting(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not _accepts(port):
        if time.monotonic() > deadline:
            raise Failure(f"the server does not answer on 127.0.0.1:{port} after {seconds:.0f} s")
        time.sleep(0.1)


def _log_tail(data: Path) -> str:
    try:
        return _gist((data / "server.log").read_text(errors="replace"))
    except OSError:
        return "(no server.log)"


def _launch(bin_dir: Path, method: str, user: pwd.struct_passwd | None, work: Path, port: int) -> None:
    """initdb ``work/data``, configure it, and ``pg_ctl start`` it; stop it again if it does not answer."""
    data = work / "data"
    data.mkdir(mode=0o700)
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
    _run([bin_dir / "initdb", "-D", data, "-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C",
          "--no-sync"], method, user, work)
    _configure(data, port)
    try:
        _run([bin_dir / "pg_ctl", "start", "-D", data, "-l", data / "server.log", "-w", "-t", "60"],
             method, user, work, timeout=120)
    except Failure as err:
        raise Failure(f"{err}; server.log: {_log_tail(data)}") from None
    try:
        _wait_accepting(port)
    except Failure:
        stop(work)
        raise


def start(work: Path, port: int | None = None, bin_dir: Path | None = None) -> str:
    """Initialise and start a fresh cluster in ``work``; returns its SQLAlchemy URL."""
    work = work.absolute()
    source = bin_dir.absolute() if bin_dir else bundled_bin_dir()
    _check_bin(source)
    port = _free_port(port)
    user = _service_user()
    _fresh_dir(work, user)
    bins, method = _usable_bin(source, user, work, may_copy=bin_dir is None)
    url = f"postgresql+psycopg://{ROLE}@127.0.0.1:{port}/postgres"
    state = {"url": url, "port": port, "bin_dir": str(bins), "method": method, "user": user and user.pw_name}
    (work / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    _launch(bins, method, user, work, port)
    return url


def stop(work: Path) -> None:
    """``pg_ctl stop -m fast`` the throwaway cluster in ``work``."""
    work = work.absolute()
    state = _read_state(work)
    if state is None:
        raise Failure(f"{work} holds no throwaway cluster ({STATE_FILE} is missing)")
    data = work / "data"
    if _server_pid(data) is None:
        raise Failure(f"no throwaway server runs in {work}")
    user = _user(state["user"]) if state.get("user") else None
    _run([Path(state["bin_dir"]) / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "60"],
         state["method"], user, work, timeout=120)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 1 (not argparse's 2), one line
        raise Failure(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    begin = commands.add_parser("start", help="initdb a fresh cluster in DIR/data, start it, print its URL")
    begin.add_argument("--dir", required=True, help="working folder (new, empty, or an earlier throwaway one)")
    begin.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    begin.add_argument("--bin-dir", type=Path, default=None,
                       help="a PostgreSQL bin folder to use instead of the pgserver wheel's")
    end = commands.add_parser("stop", help="stop the server of DIR (pg_ctl stop -m fast)")
    end.add_argument("--dir", required=True, help="the folder given to start")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        if args.command == "start":
            print(start(Path(args.dir), args.port, args.bin_dir), flush=True)
        else:
            stop(Path(args.dir))
    except (Failure, OSError) as err:
        print(f"throwaway_postgres: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
