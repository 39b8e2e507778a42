"""Every command that deployments/ tells a reader to run parses with the real command-line parser.

The commands are the ``focus ...`` and ``prefect ...`` lines of the YAML files' comments (a trailing ``\\`` joins
the next line) and every command in backticks in any file of deployments/ (the automation's message, the pool
templates' descriptions); environment assignments before the program name are left out, and a placeholder such as
``<number of GPUs>`` stands for ``1``. ``focus`` commands go
through :func:`flows.cli.parser.build_parser`, ``prefect`` commands through Prefect's own CLI app (cyclopts), which
parses without running anything.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for p in (ROOT / "deployments").rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _comment_lines(text: str) -> list[str]:
    """The comment lines of a YAML text, without their ``#``, continuation lines joined."""
    lines, pending = [], ""
    for line in text.splitlines():
        match = re.match(r"^\s*#\s?(.*)$", line)
        if not match:
            pending = ""
            continue
        body = match.group(1).strip()
        body = f"{pending} {body}".strip() if pending else body
        if body.endswith("\\"):
            pending = body[:-1].strip()
            continue
        pending = ""
        lines.append(body)
    return lines


def _command(candidate: str) -> list[str] | None:
    """The tokens of ``candidate`` from its program name on, when that is ``focus`` or ``prefect``."""
    candidate = re.sub(r"<[^<>]+>", "1", candidate)  # a placeholder for the reader to fill in (<number of GPUs>)
    try:
        tokens = shlex.split(candidate, comments=True)
    except ValueError:
        return None
    while tokens and _ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    return tokens if tokens and tokens[0] in ("focus", "prefect") else None


def commands() -> list[tuple[str, list[str]]]:
    """``(file, tokens)`` of every command the files of deployments/ tell a reader to run."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in FILES:
        text = path.read_text()
        candidates = re.findall(r"`([^`\n]+)`", text)
        if path.suffix in (".yaml", ".yml"):
            candidates += _comment_lines(text)
        for candidate in candidates:
            tokens = _command(candidate)
            if tokens:
                found.setdefault((str(path.relative_to(ROOT)), shlex.join(tokens)), tokens)
    return [(name, tokens) for (name, _), tokens in sorted(found.items())]


def parse_focus(tokens: list[str]) -> None:
    """Parse a ``focus`` command with the CLI's parser; a usage error fails with argparse's message."""
    from flows.cli.parser import build_parser

    build_parser().parse_args(tokens[1:])


def parse_prefect(tokens: list[str]) -> None:
    """Parse a ``prefect`` command with Prefect's CLI app, without running it (an unknown option raises)."""
    from prefect.cli._app import _app

    _, root, _ = _app.meta.parse_args(tokens[1:])  # --profile, --prompt/--no-prompt, then the command
    _app.parse_args(list(root.args))


PARSERS = {"focus": parse_focus, "prefect": parse_prefect}
COMMANDS = commands()


def test_the_files_tell_the_reader_to_run_both_clis():
    """Not vacuous: the alert names a focus command, and the setup's prefect commands are all found."""
    shown = {shlex.join(tokens) for _, tokens in COMMANDS}
    assert "focus results regressions" in shown
    assert {"prefect automation create --from-file /tmp/focus-automations.yaml",
            "prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml"} <= shown
    assert any(t[:3] == ["prefect", "worker", "start"] for _, t in COMMANDS)
    assert any(name.endswith(".json") for name, _ in COMMANDS)  # the pool templates' descriptions


@pytest.mark.parametrize(("source", "tokens"), COMMANDS, ids=[f"{n}: {shlex.join(t)}" for n, t in COMMANDS])
def test_every_command_parses(source: str, tokens: list[str]):
    try:
        PARSERS[tokens[0]](tokens)
    except SystemExit as exit_:  # argparse's usage error (its message is on stderr)
        pytest.fail(f"{source}: `{shlex.join(tokens)}` does not parse (exit {exit_.code})")
    except Exception as error:  # noqa: BLE001 - cyclopts' usage errors
        pytest.fail(f"{source}: `{shlex.join(tokens)}` does not parse: {error}")


def test_a_command_that_does_not_exist_is_refused(capsys):
    """The parsers are the real ones: a table or an option that does not exist is refused."""
    from cyclopts import UnknownOptionError

    with pytest.raises(SystemExit) as exit_:
        parse_focus(["focus", "results", "audits"])
    assert exit_.value.code == 2 and "invalid choice: 'audits'" in capsys.readouterr().err
    with pytest.raises(UnknownOptionError, match="--bogus"):
        parse_prefect(["prefect", "worker", "start", "--pool", "focus-gpu", "--bogus"])
