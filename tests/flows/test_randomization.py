"""The randomization flow: one recorded evaluation per stage; Focus falls towards 0.5."""

from __future__ import annotations

from sqlalchemy import text

from flows.worker import store
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


def test_several_seeds_each_their_own_evaluation_judged_on_their_mean(prefect_api, sqlite_url, digits_weights):
    """Five random digits models per method; the spread is real and the mean is about 0.5."""
    import numpy as np

    import db
    from flows.results import analysis
    from focus_core import stats

    params = RandomizationParams(
        model={"architecture": "digits_cnn", "weights": digits_weights},
        mosaics={"split": "test", "per_class": 4, "seed": 5},
        methods=[{"name": "gradcam"}, {"name": "lrp"}],
        kinds=["full"], seeds=[0, 1, 2, 3, 4],
        run={"device": "cpu", "batch_size": 40, "chunk_size": 40, "database_url": sqlite_url},
    )
    outcome = randomization(params)
    assert [(s["kind"], s["seed"]) for s in outcome["stages"]] == [("none", 0)] + [("full", s) for s in range(5)]
    engine = store.engine_for(sqlite_url)
    spread = analysis.random_seed_spread(engine, outcome["checkpoint_id"], outcome["mosaic_set_id"])
    print(spread.to_string())
    assert list(spread["method"]) == ["gradcam", "lrp"]
    for row in spread.itertuples():
        assert row.seeds == [0, 1, 2, 3, 4] and row.n_seeds == 5
        assert row.std > 0  # five random models do not score alike
        assert abs(row.mean - 0.5) <= 0.1 and row.about_chance
        assert outcome["seeds"][row.method]["mean"] == row.mean
    # the cluster interval respects that mosaics of one class share a random model's bias
    evaluation = outcome["stages"][1]["evaluation_ids"]["gradcam"]
    results = db.evaluation_results(engine, evaluation)
    focus = results["focus"].to_numpy(float, na_value=np.nan)
    mosaic = stats.bootstrap_median_ci(focus)
    cluster = stats.cluster_bootstrap_median_ci(focus, results["target_class"].to_numpy())
    print("random model GradCAM: mosaic CI", mosaic, "cluster CI", cluster)
    assert cluster[1] - cluster[0] >= mosaic[1] - mosaic[0]
