"""``focus results`` shows what a user wrote without obeying it: no terminal control characters reach the screen,
and no CSV cell is a spreadsheet formula. A real PostgreSQL store holds the labels."""

from __future__ import annotations

import csv
import io

import pytest

import db
from flows import cli
from flows.worker import store

HOSTILE = "\x1b[2J\x1b]0;pwned\x07=HYPERLINK(\"http://x\")\x9b"


def _focus(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def hostile_store(pg_url: str) -> str:
    engine = store.engine_for(pg_url)
    db.register_checkpoint(engine, "a" * 64, "digits_cnn", 10, path="/w/a.pt", audit=True, label=HOSTILE)
    db.register_checkpoint(engine, "b" * 64, "digits_cnn", 10, path="/w/b.pt", audit=True, label="-2+3")
    db.register_checkpoint(engine, "c" * 64, "digits_cnn", 10, path="/w/c.pt", audit=True, label="@SUM(A1)")
    return pg_url


def test_text_output_escapes_control_characters(capsys: pytest.CaptureFixture, hostile_store: str):
    code, out, err = _focus(capsys, "results", "checkpoints", "--wide", "--database-url", hostile_store)
    assert code == 0, err
    assert not any(0x00 <= ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in out), repr(out)
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in out and "\\x9b" in out


def test_csv_output_is_safe_against_formula_injection_and_numbers_stay_numbers(
    capsys: pytest.CaptureFixture, hostile_store: str
):
    code, out, err = _focus(capsys, "results", "checkpoints", "--format", "csv", "--database-url", hostile_store)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(row["label"] for row in rows) == sorted(["'-2+3", "'@SUM(A1)", HOSTILE])
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values())
    assert {row["num_classes"] for row in rows} == {"10"}
