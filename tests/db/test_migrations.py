"""One Alembic history: a single head, up to head and down to base, models == migrated schema."""

from __future__ import annotations

import json

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import db
from db.migrate import alembic_config

VIEWS = {"evaluation_summary", "training_epoch_focus", "audit_history"}


def test_history_has_one_head():
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [db.head()]
    assert db.head() == "0004"


def test_upgrade_to_head_and_downgrade_to_base(empty_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the history is found from the package, not the working directory
    assert db.current(empty_url) is None
    assert db.upgrade(empty_url) == db.head()
    assert db.current(empty_url) == db.head()
    engine = db.get_engine(empty_url, check=False)
    try:
        inspector = inspect(engine)
        names = set(inspector.get_table_names())
        partitions = {n for n in names if n.startswith("mosaic_result_p")}  # PostgreSQL: the first partition
        assert partitions == ({"mosaic_result_p000000"} if engine.dialect.name == "postgresql" else set())
        assert set(db.models.Base.metadata.tables) | {db.VERSION_TABLE} == names - partitions
        assert VIEWS <= set(inspector.get_view_names())
        assert db.upgrade(empty_url) == db.head()  # a second upgrade is a no-op

        assert db.downgrade(empty_url) is None
        inspector = inspect(engine)
        assert inspector.get_table_names() == []
        assert inspector.get_view_names() == []
        assert db.current(empty_url) is None
    finally:
        engine.dispose()
    assert db.upgrade(empty_url) == db.head()  # and back up again


def test_models_match_migrated_schema(empty_url):
    db.upgrade(empty_url)
    assert db.schema_diff(empty_url) == []


def test_schema_diff_sees_a_drift(empty_url):
    """The comparison is not vacuous: a column the models lack shows up."""
    db.upgrade(empty_url)
    engine = db.get_engine(empty_url, check=False)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE dataset ADD COLUMN surprise INTEGER")
        diff = db.schema_diff(engine)
    finally:
        engine.dispose()
    assert any(op[0] == "remove_column" and op[3].name == "surprise" for op in diff)


def test_json_is_jsonb_on_postgresql(pg_url):
    db.upgrade(pg_url)
    engine = db.get_engine(pg_url)
    try:
        with engine.connect() as connection:
            kind = connection.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'xai_method' AND column_name = 'params'"
            ).scalar_one()
            stamp = connection.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'evaluation' AND column_name = 'created_at'"
            ).scalar_one()
    finally:
        engine.dispose()
    assert kind == "jsonb"
    assert stamp == "timestamp with time zone"


def test_0002_puts_the_requested_seed_into_every_key(empty_url):
    """Rows written before the seed was part of the key keep their identity, with the seed they were asked for."""
    from sqlalchemy import text

    from tests.db.conftest import make_world

    assert db.upgrade(empty_url, "0001") == "0001"
    engine = db.get_engine(empty_url, check=False)
    try:
        world = make_world(engine)
        request = {"request": {"randomization": {"kind": "full", "stage": None, "layer": None, "seed": 3}}}
        rows = [("a" * 64, "none", None), ("b" * 64, "full", request), ("c" * 64, "cascading", {"request": {}})]
        insert = text(
            "INSERT INTO evaluation (natural_key, checkpoint_id, method_id, mosaic_set_id, randomization, stage, "
            "layer, status, created_at, metadata) VALUES (:key, :checkpoint, :method, :mosaic_set, :kind, :stage, "
            ":layer, 'finished', :created, :metadata)"
        )
        with engine.begin() as connection:
            for key, kind, metadata in rows:
                cascading = kind == "cascading"
                connection.execute(insert, {
                    "key": key, "checkpoint": world.checkpoint_id, "method": world.method_ids["lrp"],
                    "mosaic_set": world.mosaic_set_id, "kind": kind, "stage": 0 if cascading else None,
                    "layer": "fc" if cascading else None, "created": db.types.utcnow(),
                    "metadata": None if metadata is None else json.dumps(metadata),
                })
        assert db.upgrade(empty_url) == db.head()
        with engine.connect() as connection:
            stored = {r.randomization: r for r in connection.execute(
                text("SELECT randomization, stage, layer, seed, natural_key FROM evaluation")
            )}
    finally:
        engine.dispose()
    expected_seeds = {"none": None, "full": 3, "cascading": 0}
    for kind, seed in expected_seeds.items():
        row = stored[kind]
        assert row.seed == seed
        assert row.natural_key == db.evaluation_key(
            world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id, kind, row.stage, row.layer, None, seed
        )
