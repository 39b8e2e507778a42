"""One Alembic history: a single head, up to head and down to base, models == migrated schema."""

from __future__ import annotations

import json

import numpy as np

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import db
from db.migrate import alembic_config

VIEWS = {"evaluation_summary", "training_epoch_focus", "audit_history"}
GRID_VIEWS = {"mosaic_tiles", "mosaic_result_tiles"}  # revision 0007


def test_history_has_one_head():
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [db.head()]
    assert db.head() == "0016"


def test_upgrade_to_head_and_downgrade_to_base(empty_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the history is found from the package, not the working directory
    assert db.current(empty_url) is None
    assert db.upgrade(empty_url) == db.head()
    assert db.current(empty_url) == db.head()
    engine = db.get_engine(empty_url, check=False)
    try:
        inspector = inspect(engine)
        names = set(inspector.get_table_names())
        partitions = {n for n in names if n.startswith(("mosaic_result_p", "mosaic_result_tile_p"))}
        # PostgreSQL: the first partition of each partitioned table
        first = {"mosaic_result_p000000", "mosaic_result_tile_p000000"}
        assert partitions == (first if engine.dialect.name == "postgresql" else set())
        assert set(db.models.Base.metadata.tables) | {db.VERSION_TABLE} == names - partitions
        assert VIEWS | GRID_VIEWS <= set(inspector.get_view_names())
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


def _checkpoint_table(engine) -> dict:
    inspector = inspect(engine)
    return {
        "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("model_checkpoint")],
        "pk": inspector.get_pk_constraint("model_checkpoint")["constrained_columns"],
        "fks": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                      for f in inspector.get_foreign_keys("model_checkpoint")),
        "unique": sorted((u["name"], tuple(u["column_names"]))
                         for u in inspector.get_unique_constraints("model_checkpoint")),
    }


def _row_counts(engine) -> dict:
    from sqlalchemy import text

    with engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                for table in ("model_checkpoint", "evaluation", "mosaic_result")}


def _write_results_as_of_0002(engine, evaluation_id: int, mosaic_ids: list[int], focus: list[float]) -> None:
    """Per-mosaic rows and a finished status written as revision 0002 knew them (today's write path needs later
    tables)."""
    from sqlalchemy import text

    with engine.begin() as connection:
        for mosaic_id, value in zip(mosaic_ids, focus, strict=True):
            connection.execute(text(
                "INSERT INTO mosaic_result (evaluation_id, mosaic_id, pos_tl, pos_tr, pos_bl, pos_br, neg_tl, neg_tr, "
                "neg_bl, neg_br, focus, predicted_class) VALUES (:e, :m, :f, 0, 0, :rest, 0, 0, 0, 0, :f, 0)"
            ), {"e": evaluation_id, "m": mosaic_id, "f": value, "rest": 1 - value})
        connection.execute(text("UPDATE evaluation SET status = 'finished' WHERE id = :e"), {"e": evaluation_id})


def test_0003_adds_lineages_and_going_down_keeps_every_result(empty_url):
    """Up and down again, evaluations keep their checkpoint and their per-mosaic rows (SQLite rebuilds a table)."""
    from tests.db.conftest import make_world, sums_for

    assert db.upgrade(empty_url, "0002") == "0002"
    engine = db.get_engine(empty_url, check=False)
    try:
        world = make_world(engine)
        audit_run = db.start_audit_run(engine, name="nightly")
        evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"],
                                                 world.mosaic_set_id, audit_run_id=audit_run)
        _write_results_as_of_0002(engine, evaluation, world.mosaic_ids, [0.9, 0.8, 0.7, 0.6])
        before, counts = _checkpoint_table(engine), _row_counts(engine)
        assert counts == {"model_checkpoint": 1, "evaluation": 1, "mosaic_result": 4}

        assert db.upgrade(empty_url) == db.head()
        assert _row_counts(engine) == counts
        db.register_lineage_checkpoint(engine, "prod", world.checkpoint_id)
        (row,) = db.checkpoint_history(engine, world.checkpoint_id).to_dict("records")
        assert (row["lineage"], row["checkpoint_version"], row["median_focus"]) == ("prod", 1, 0.75)

        assert db.downgrade(empty_url, "0002") == "0002"
        assert _row_counts(engine) == counts
        assert _checkpoint_table(engine) == before
        assert "lineage" not in inspect(engine).get_table_names()
        assert VIEWS <= set(inspect(engine).get_view_names())
        with engine.connect() as connection:
            from sqlalchemy import text

            assert connection.execute(text("SELECT checkpoint_id FROM evaluation")).scalar_one() == world.checkpoint_id
            if engine.dialect.name == "sqlite":
                assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
        assert db.upgrade(empty_url) == db.head()
    finally:
        engine.dispose()


def test_upgrading_sqlite_from_0001_keeps_every_mosaic_result(tmp_path):
    """SQLite rebuilds a table to alter it; with foreign keys on, dropping ``evaluation`` cascaded to every result."""
    from sqlalchemy import text

    from tests.db.conftest import make_world

    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert db.upgrade(url, "0001") == "0001"
    engine = db.get_engine(url, check=False)
    try:
        world = make_world(engine)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO evaluation (natural_key, checkpoint_id, method_id, mosaic_set_id, randomization, status, "
                "created_at) VALUES (:key, :checkpoint, :method, :mosaic_set, 'none', 'finished', :created)"
            ), {"key": "a" * 64, "checkpoint": world.checkpoint_id, "method": world.method_ids["gradcam"],
                "mosaic_set": world.mosaic_set_id, "created": db.types.utcnow()})
            evaluation_id = connection.execute(text("SELECT id FROM evaluation")).scalar_one()
            for mosaic_id in world.mosaic_ids:
                connection.execute(text(
                    "INSERT INTO mosaic_result (evaluation_id, mosaic_id, pos_tl, pos_tr, pos_bl, pos_br, neg_tl, "
                    "neg_tr, neg_bl, neg_br, focus, predicted_class) "
                    "VALUES (:e, :m, 1, 1, 0, 0, 0, 0, 0, 0, 0.5, 0)"
                ), {"e": evaluation_id, "m": mosaic_id})
        assert db.upgrade(url) == db.head()
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT COUNT(*) FROM mosaic_result")).scalar_one()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
    finally:
        engine.dispose()
    assert kept == len(world.mosaic_ids) > 0
    assert foreign_keys == 1  # switched back on for the connections the pool hands out afterwards


def test_0006_backfills_checkpoint_origins_from_the_checkpoints(empty_url):
    """Every checkpoint a training run recorded before 0006 gets its (run, epoch) origin; going down drops them."""
    from sqlalchemy import text

    assert db.upgrade(empty_url, "0005") == "0005"
    engine = db.get_engine(empty_url, check=False)
    try:
        run = db.register_training_run(engine, "a" * 64, "digits_cnn", {"epochs": 2}, name="demo-digits")
        with engine.begin() as connection:
            for i, (run_id, epoch) in enumerate([(run, 1), (run, 2), (None, None)]):
                connection.execute(text(
                    "INSERT INTO model_checkpoint (sha256, architecture, num_classes, path, training_run_id, epoch, "
                    "audit, created_at) VALUES (:sha, 'digits_cnn', 10, 'w.pt', :run, :epoch, :audit, :now)"),
                    {"sha": f"{i}" * 64, "run": run_id, "epoch": epoch, "audit": False, "now": "2026-12-02 00:00:00"})
        assert db.upgrade(empty_url) == db.head()
        origins = db.checkpoint_origins(engine)
        assert [(r["training_run_name"], r["epoch"]) for r in origins.to_dict("records")] == [
            ("demo-digits", 1), ("demo-digits", 2)]
        assert db.downgrade(empty_url, "0005") == "0005"
        assert "checkpoint_origin" not in inspect(engine).get_table_names()
        assert db.upgrade(empty_url) == db.head()
    finally:
        engine.dispose()


def test_0012_fills_each_mosaic_set_resize_from_its_recorded_request(empty_url, build_world):
    """A set's resize comes from the request its evaluations recorded: the given one, 256 for an ImageFolder request
    without one (what the loader used), NULL for the digits and for a set without a recorded request."""
    assert db.upgrade(empty_url, "0010") == "0010"
    engine = db.get_engine(empty_url, check=False)
    try:
        world = build_world(engine)
        ids = np.asarray(world.image_ids)[world.image_index]
        sets = [world.mosaic_set_id] + [
            db.register_mosaic_set(engine, f"{i}" * 64, world.dataset_id, "test", i, 2, "random", ids,
                                   world.targets, world.masks).mosaic_set_id for i in range(1, 4)]
        requests = [{"kind": "image_folder", "root": "/data/shapes", "tile_size": 64, "resize": 73},
                    {"kind": "image_folder", "root": "/data/shapes", "tile_size": 64, "resize": None},
                    {"kind": "digits", "tile_size": None}]
        for set_id, dataset in zip(sets, requests):
            for method_id in world.method_ids.values():
                db.get_or_create_evaluation(engine, world.checkpoint_id, method_id, set_id,
                                            metadata={"request": {"dataset": dataset}})
        assert db.upgrade(empty_url) == db.head()
        with engine.connect() as connection:
            from sqlalchemy import text

            found = dict(connection.execute(text("SELECT id, resize FROM mosaic_set")).all())
        assert [found[s] for s in sets] == [73, 256, None, None]
        assert db.downgrade(empty_url, "0010") == "0010"
        assert "resize" not in {c["name"] for c in inspect(engine).get_columns("mosaic_set")}
        assert db.upgrade(empty_url) == db.head()
    finally:
        engine.dispose()


def test_0014_fills_each_probe_sets_probe_from_its_recorded_request(empty_url, build_world):
    """A set's probe comes from the request its evaluations recorded; a clean set, or one without a recorded
    request, keeps NULL; going down drops the column."""
    assert db.upgrade(empty_url, "0013") == "0013"
    engine = db.get_engine(empty_url, check=False)
    patch = {"kind": "corner_patch", "size": 3, "seed": 0, "corner": "random"}
    try:
        world = build_world(engine)
        ids = np.asarray(world.image_ids)[world.image_index]
        sets = [world.mosaic_set_id] + [
            db.register_mosaic_set(engine, f"{i}" * 64, world.dataset_id, "test", i, 2, "random", ids,
                                   world.targets, world.masks).mosaic_set_id for i in range(1, 3)]
        for set_id, mosaics in zip(sets, [{"per_class": 2, "probe": patch}, {"per_class": 2, "probe": None}]):
            db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"], set_id,
                                        metadata={"request": {"mosaics": mosaics}})
        assert db.upgrade(empty_url) == db.head()
        with engine.connect() as connection:
            from sqlalchemy import text

            found = dict(connection.execute(text("SELECT id, probe FROM mosaic_set")).all())
        found = {k: json.loads(v) if isinstance(v, str) else v for k, v in found.items()}
        assert [found[s] for s in sets] == [patch, None, None]
        assert db.downgrade(empty_url, "0013") == "0013"
        assert "probe" not in {c["name"] for c in inspect(engine).get_columns("mosaic_set")}
        assert db.upgrade(empty_url) == db.head()
    finally:
        engine.dispose()
