"""``focus results --columns`` takes the names the default text table shows as well as the store's names."""

from __future__ import annotations

import pytest

from flows import cli


@pytest.fixture(scope="module")
def recorded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    import db
    from tests.recorded_store import build_record, write_record

    folder = tmp_path_factory.mktemp("results-columns")
    url = f"sqlite:///{folder / 'focus.db'}"
    db.upgrade(url)
    write_record(url, build_record(folder), audits=True)
    return url


def test_columns_accept_the_default_tables_headers(recorded_url: str, capfd: pytest.CaptureFixture):
    assert cli.main(["results", "--database-url", recorded_url]) == 0
    shown = capfd.readouterr().out.splitlines()[0].split()
    assert {"id", "randomized", "median"} <= set(shown)

    assert cli.main(["results", "--columns", "id,randomized,median", "--format", "csv",
                     "--database-url", recorded_url]) == 0
    by_header = capfd.readouterr().out
    assert cli.main(["results", "--columns", "evaluation_id,randomization,median_focus", "--format", "csv",
                     "--database-url", recorded_url]) == 0
    by_name = capfd.readouterr().out
    assert by_header == by_name and by_name.splitlines()[0] == "evaluation_id,randomization,median_focus"
    assert len(by_name.splitlines()) > 2

    assert cli.main(["results", "--columns", "nope", "--database-url", recorded_url]) == 2
    assert "median_focus" in capfd.readouterr().err
