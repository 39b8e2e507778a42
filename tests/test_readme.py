"""The SQL cookbook (docs/sql-cookbook.md) runs against a real store, on PostgreSQL and on SQLite.

Every ```sql block of docs/sql-cookbook.md is executed on a small, real record (trained model, real Focus
scores, two audit runs; see :mod:`tests.recorded_store`), so the cookbook never drifts from the
schema. Each query must return rows, and the answers are checked against the record.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import db
from tests.recorded_store import EPOCHS, build_record, write_record

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "docs" / "sql-cookbook.md"
RESULTS = ROOT / "docs" / "results.md"


def sql_blocks() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", COOKBOOK.read_text(encoding="utf-8"), flags=re.S)
    return [block.strip().rstrip(";") for block in blocks]


def test_the_cookbook_has_its_queries() -> None:
    assert len(sql_blocks()) >= 5


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory):
    return build_record(tmp_path_factory.mktemp("readme-weights"))


@pytest.fixture(scope="module")
def sqlite_store(record, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('readme-sqlite') / 'focus.db'}"
    db.upgrade(url)
    write_record(url, record, audits=True)
    return url


# Cookbook 4 written as the plain join (every GradCAM evaluation's rows joined with every mosaic and image): the
# cookbook's query, which reads the GradCAM-LRP pairs first, must give the same rows.
PLAIN_DISAGREEMENT = """
SELECT mo.id AS mosaic_id, mo.target_class, a.focus AS gradcam_focus, b.focus AS lrp_focus,
       ABS(a.focus - b.focus) AS disagreement,
       tl.relpath AS top_left, tr.relpath AS top_right, bl.relpath AS bottom_left, br.relpath AS bottom_right
FROM mosaic_result a
JOIN evaluation ea ON ea.id = a.evaluation_id
JOIN xai_method ma ON ma.id = ea.method_id AND ma.name = 'gradcam'
JOIN evaluation eb ON eb.checkpoint_id = ea.checkpoint_id AND eb.mosaic_set_id = ea.mosaic_set_id
                  AND eb.randomization = ea.randomization
JOIN xai_method mb ON mb.id = eb.method_id AND mb.name IN ('lrp', 'lrp_fast')
JOIN mosaic_result b ON b.evaluation_id = eb.id AND b.mosaic_id = a.mosaic_id
JOIN mosaic mo ON mo.id = a.mosaic_id
JOIN image tl ON tl.id = mo.image_tl
JOIN image tr ON tr.id = mo.image_tr
JOIN image bl ON bl.id = mo.image_bl
JOIN image br ON br.id = mo.image_br
WHERE ea.randomization = 'none' AND ea.audit_run_id IS NULL AND eb.audit_run_id IS NULL
  AND a.focus IS NOT NULL AND b.focus IS NOT NULL
ORDER BY disagreement DESC, mosaic_id
"""


def _run_cookbook(url: str) -> list[list[dict]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            answers = [[dict(row._mapping) for row in connection.execute(text(sql))] for sql in sql_blocks()]
            plain = [dict(row._mapping) for row in connection.execute(text(PLAIN_DISAGREEMENT))]
    finally:
        engine.dispose()
    gaps = [row["disagreement"] for row in answers[3]]
    assert len(plain) > 10 and gaps[-1] > plain[10]["disagreement"], "the record's tenth largest gap is not a tie"
    assert answers[3] == plain[:10]
    return answers


def _check_answers(answers: list[list[dict]]) -> None:
    per_method, per_epoch, regressions, disagreements, tile_shares = answers[:5]
    assert all(rows for rows in answers), "every cookbook query returns rows on a populated store"
    trained = {row["method"]: row["median_focus"] for row in per_method if row["randomization"] == "none"}
    assert {"gradcam", "lrp", "random"} <= set(trained)
    assert {(row["grid"], row["targets"], row["chance_level"]) for row in per_method} == {(2, 2, 0.5)}
    assert all(row["checkpoint"] and row["architecture"] == "digits_cnn" and row["dataset"] == "digits"
               and row["tile_size"] for row in per_method), per_method[0]
    by_method: dict[str, list[dict]] = {}
    for row in tile_shares:  # the demo's 2x2 sums, unpivoted by mosaic_result_tiles: four positions per method
        by_method.setdefault(row["method"], []).append(row)
    assert {"gradcam", "lrp", "random"} <= set(by_method)
    for rows in by_method.values():
        assert [r["position"] for r in rows] == [0, 1, 2, 3] and {r["even_share"] for r in rows} == {0.25}
        assert sum(r["mean_share"] for r in rows) == pytest.approx(1.0, abs=0.02)
    assert [row["epoch"] for row in per_epoch] == list(range(1, EPOCHS + 1))
    fell = [row for row in regressions if row["median_change"] is not None and row["median_change"] < -0.05]
    assert [row["audit_name"] for row in fell] == ["nightly-2"]
    assert {row["audit_name"] for row in regressions} == {"nightly-2"}  # the latest finished audit only
    assert all(row["previous_median_focus"] is not None for row in regressions)  # against nightly-1
    assert len(disagreements) == 10
    gaps = [row["disagreement"] for row in disagreements]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0


def test_cookbook_on_sqlite(sqlite_store: str) -> None:
    _check_answers(_run_cookbook(sqlite_store))


def test_cookbook_on_postgresql(record, postgres_database: str) -> None:
    from flows.worker import store

    db.upgrade(postgres_database)
    try:
        write_record(postgres_database, record, audits=True)
        _check_answers(_run_cookbook(postgres_database))
    finally:
        store.dispose_engines()


def test_the_quantus_comparison_names_its_limits() -> None:
    """Where docs/results.md compares with Quantus: 2x2 only (silently wrong on 3x3) and undefined maps as 0."""
    text_ = RESULTS.read_text(encoding="utf-8")
    start = text_.index("Two limits of `quantus.Focus`")
    paragraph = text_[start:text_.index("\n\n", start)]
    for claim in ("only 2x2", "3x3 mask", "silently wrong", "up to 0.99", "undefined map", "as Focus 0"):
        assert claim in " ".join(paragraph.split()), claim


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_a_start_that_links_to_every_page() -> None:
    """The README stays short (at most 12 KB) and links to every page of docs/ and to benchmarks/README.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12_000
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme)}
    pages = {*ROOT.joinpath("docs").glob("*.md"), ROOT / "benchmarks" / "README.md"}
    assert {page.resolve() for page in pages} <= linked, sorted(str(p) for p in pages - linked)


def test_every_relative_link_of_the_docs_names_a_file_that_exists() -> None:
    """No page of README.md, docs/ or benchmarks/README.md links to a file that is not there."""
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *ROOT.joinpath("docs").glob("*.md")]
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages
              for target in LINK.findall(page.read_text(encoding="utf-8"))
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken
