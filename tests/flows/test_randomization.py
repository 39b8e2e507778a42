"""The randomization flow: one recorded evaluation per stage; Focus falls towards 0.5."""

from __future__ import annotations

from sqlalchemy import text

from flows import store
from flows.params import RandomizationParams
from flows.randomization import randomization


def test_randomization_records_each_stage_and_focus_falls(prefect_api, sqlite_url, digits_weights, tmp_path):
    params = RandomizationParams(
        model={"architecture": "digits_cnn", "weights": digits_weights},
        mosaics={"split": "test", "per_class": 3, "seed": 5},
        methods=[{"name": "gradcam"}],
        kinds=["full", "cascading"],
        run={"device": "cpu", "batch_size": 32, "chunk_size": 64, "database_url": sqlite_url},
        figures_dir=str(tmp_path / "figures"),
    )
    outcome = randomization(params)

    stages = [(s["kind"], s["stage"], s["layer"]) for s in outcome["stages"]]
    assert stages == [
        ("none", None, None), ("full", None, None),
        ("cascading", 0, "classifier"), ("cascading", 1, "features.12"), ("cascading", 2, "features.8"),
        ("cascading", 3, "features.4"), ("cascading", 4, "features.0"),
    ]
    with store.engine_for(sqlite_url).connect() as connection:
        recorded = connection.execute(text(
            "SELECT e.randomization, e.stage, e.layer, e.status, COUNT(r.mosaic_id) FROM evaluation e "
            "JOIN mosaic_result r ON r.evaluation_id = e.id GROUP BY e.id, e.randomization, e.stage, e.layer, e.status "
            "ORDER BY e.id"
        )).all()
    assert [tuple(r[:3]) for r in recorded] == stages
    assert all(status == "finished" and n == 30 for *_, status, n in recorded)

    medians = [s["medians"]["gradcam"] for s in outcome["stages"]]
    print("median Focus per stage:", medians)
    trained, full, fully_cascaded = medians[0], medians[1], medians[-1]
    assert trained > 0.6
    assert abs(full - 0.5) < 0.2 and abs(fully_cascaded - 0.5) < 0.2
    assert (tmp_path / "figures").is_dir() and any((tmp_path / "figures").glob("cascading-*.png"))
