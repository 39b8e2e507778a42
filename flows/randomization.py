"""The ``randomization`` flow: the sanity check of Adebayo et al. applied to Focus.

A faithful method loses its Focus when the model loses its knowledge: on a fully random copy of
the checkpoint, and on copies whose layers are re-initialised from the top down (cascading),
Focus falls to about 0.5. Each stage is one ``evaluate`` run (a subflow), recorded in the store
with its randomization kind, stage and layer; the trained checkpoint is the first stage.

Examples
--------
>>> from flows.params import RandomizationParams
>>> randomization(RandomizationParams(model={"weights": "digits.pt"}))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.results import analysis, figure_store
from flows.worker import caches, preflight, record, store
from flows.evaluate import evaluate
from flows.results.artifacts import number
from flows.params import EvaluateParams, RandomizationParams, RandomizationSpec
from flows.results.names import named, randomization_name
from flows.specs import with_effective_dataset
from flows.results.artifacts import best_effort
from focus_core import randomize, report

__all__ = ["randomization", "randomization_stages"]


def randomization_stages(params: RandomizationParams) -> list[tuple[str, RandomizationSpec]]:
    """``(label, spec)`` of every stage: trained, then per seed full, cascading (top first), independent."""
    model = caches.checked_model(params.model, params.dataset)
    layers = randomize.cascading_stages(model)
    if params.max_stages is not None:
        layers = layers[: params.max_stages]
    seeds = params.seed_list()
    stages = [("trained", RandomizationSpec())]
    for seed in seeds:
        tail = "" if len(seeds) == 1 else f" (seed {seed})"
        for kind in params.kinds:
            if kind == "full":
                stages.append((f"full{tail}", RandomizationSpec(kind="full", seed=seed)))
            elif kind == "cascading":
                stages += [(f"cascading to {layer}{tail}",
                            RandomizationSpec(kind="cascading", stage=i, layer=layer, seed=seed))
                           for i, layer in enumerate(layers)]
            else:
                stages += [(f"only {layer}{tail}", RandomizationSpec(kind="independent", layer=layer, seed=seed))
                           for layer in layers]
    return stages


@flow(name="randomization", flow_run_name=named(randomization_name, RandomizationParams), validate_parameters=True,
      persist_result=False)
def randomization(params: RandomizationParams) -> dict[str, Any]:
    """Evaluate a checkpoint and its randomized copies (full, cascading, independent) with Focus.

    Args:
        params: The trained checkpoint, mosaic set, methods, randomization kinds, how to run and
            where the figure goes.

    Returns a dict with one entry per stage: its kind, stage, layer, seed, evaluation ids, the rows this run
    wrote and the median Focus per method (expected: high for the trained model, about 0.5 once randomized),
    and ``seeds``: per method, :func:`focus_core.stats.seed_summary` of the fully random models' medians.
    """
    params = with_effective_dataset(params)  # the model's tile size and normalisation (flows.specs)
    preflight.check_request(params)  # its stages come from the model itself: nothing else to check
    logger = get_run_logger()
    engine = store.engine_for(params.run.database_url)
    inputs = record.register_inputs(engine, params.dataset, params.mosaics, params.model,
                                    max_mosaics=params.run.max_mosaics)
    stages = []
    for label, spec in randomization_stages(params):
        outcome = evaluate(
            EvaluateParams(model=params.model, dataset=params.dataset, mosaics=params.mosaics,
                           methods=params.methods, randomization=spec, run=params.run)
        )
        medians = {e["method"]: e["summary"].get("median") for e in outcome["evaluations"]}
        stages.append({"label": label, **spec.model_dump(), "medians": medians,
                       "evaluation_ids": {e["method"]: e["evaluation_id"] for e in outcome["evaluations"]},
                       "rows_written": sum(e["rows_written"] for e in outcome["evaluations"])})
        logger.info("Stage %s: median Focus %s", label, medians)

    methods = list(stages[0]["medians"])
    best_effort(
        create_table_artifact,
        [{"stage": s["label"], "kind": s["kind"], **{m: number(s["medians"].get(m), digits=4) for m in methods}}
         for s in stages],
        key=f"randomization-{inputs.checkpoint_sha256[:12]}-{inputs.manifest_hash[:12]}",
        description="Median Focus per randomization stage: it should fall to about the chance level "
        f"{params.mosaics.chance_level():.3g} once the model is random.",
    )
    seeds = analysis.seed_spread_of_stages(stages, methods, params.mosaics.chance_level())
    if len(params.seed_list()) > 1:
        logger.info("Fully random models over seeds %s: %s", params.seed_list(), seeds)
    # the figure draws every seed: each cascading stage at the mean of its seeds' medians
    spreads = [r for r in analysis.seed_spreads(stages, methods, params.mosaics.chance_level())
               if r["kind"] == "cascading"]
    layers = list(dict.fromkeys(r["layer"] for r in spreads))
    if params.figures_dir and layers:
        mean = {(r["method"], r["layer"]): r["mean"] for r in spreads}
        where = figure_store.save_figure(
            params.figures_dir, f"cascading-randomization-{inputs.checkpoint_sha256[:12]}.png",
            lambda path: report.plot_cascading_randomization(
                ["trained"] + layers,
                {m: [_nan(stages[0]["medians"].get(m))] + [_nan(mean.get((m, layer))) for layer in layers]
                 for m in methods},
                path,
            ))
        seed_names = ", ".join(map(str, params.seed_list()))
        figure_store.show_figures([where], f"Cascading randomization (each stage: the mean of the medians of seeds "
                                  f"{seed_names})")
    return {"checkpoint_id": inputs.checkpoint_id, "mosaic_set_id": inputs.mosaic_set_id, "stages": stages,
            "seeds": seeds}


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
