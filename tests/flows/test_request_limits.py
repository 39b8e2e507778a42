"""What one request may cost: a mosaic set larger than the limit is refused in one sentence before any row.

Runs ``focus evaluate`` in-process (exit status and stderr as a shell sees them) on a real PostgreSQL store.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from flows.worker import store
from flows.params import EvaluateParams
from tests.flows.test_fast_mistakes import run as _focus


def _counts(url: str) -> tuple[int, int, int]:
    """(datasets, mosaic sets, mosaics) in the store."""
    with store.engine_for(url).connect() as connection:
        return tuple(connection.execute(text(
            "SELECT (SELECT COUNT(*) FROM dataset), (SELECT COUNT(*) FROM mosaic_set), (SELECT COUNT(*) FROM mosaic)"
        )).one())


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["--per-class", "100000"], "asks for 1,000,000 mosaics (100,000 per class x 10 classes), more than the limit "
      "of 100,000"),
     (["--per-class", "3", "--max-mosaics", "20"], "asks for 30 mosaics (3 per class x 10 classes), more than the "
      "limit of 20"),
     (["--per-class", "7", "--classes", "0,1,2", "--max-mosaics", "20"], "asks for 21 mosaics (7 per class x 3 ")],
    ids=["default-limit", "lowered-limit", "named-classes"],
)
def test_a_request_larger_than_the_limit_is_one_sentence_before_any_row(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, pg_url: str, digits_weights: str,
    argv: list[str], says: str,
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = _focus(capsys, "evaluate", "--weights", digits_weights, *argv, "--database-url", pg_url)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and says in err and "--max-mosaics" in err and out == "", err
    assert _counts(pg_url) == (0, 0, 0)


def test_a_raised_limit_lets_a_larger_request_through(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, pg_url: str, digits_weights: str,
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = _focus(capsys, "evaluate", "--weights", digits_weights, "--per-class", "3", "--classes", "0,1",
                            "--max-mosaics", "6", "--database-url", pg_url)
    assert code == 0, err
    assert _counts(pg_url)[1:] == (1, 6)


def test_the_limit_is_a_run_setting_with_a_default_and_no_part_of_the_mosaic_set():
    params = EvaluateParams(model={"weights": "w.pt"})
    assert params.run.max_mosaics == 100_000
    assert "max_mosaics" not in params.mosaics.model_dump()
    with pytest.raises(ValueError):
        EvaluateParams(model={"weights": "w.pt"}, run={"max_mosaics": 0})


def test_the_worker_refuses_the_request_too_before_any_row(pg_url: str, digits_weights: str):
    """A deployment's run reaches the worker unchecked: its preflight and the registration refuse it as well."""
    from flows.worker import preflight, record
    from focus_core.errors import FocusError

    params = EvaluateParams(model={"weights": digits_weights}, mosaics={"per_class": 3},
                            run={"max_mosaics": 29, "database_url": pg_url})
    with pytest.raises(FocusError, match="asks for 30 mosaics"):
        preflight.check_request(params)
    with pytest.raises(FocusError, match="asks for 30 mosaics"):
        record.register_mosaics(store.engine_for(pg_url), params.dataset, params.mosaics, max_mosaics=29)
    assert _counts(pg_url) == (0, 0, 0)
