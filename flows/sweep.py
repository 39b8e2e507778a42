"""The ``sweep`` flow: the paper's grid of checkpoints x methods, one ``evaluate`` run per cell.

With a deployment name, every cell becomes a flow run of that ``evaluate`` deployment on its work
pool (``run_deployment``), so N workers on N machines share the grid; the sweep waits for them and
builds the combined summary from the store. Without one, the cells run here, one after the other,
as subflows (the local mode). Either way a cell is one evaluation per (checkpoint, method): the
sweep registers them first, so a cell run twice finds its rows and adds none.

Examples
--------
>>> from flows.params import SweepParams
>>> sweep(SweepParams(checkpoints=[{"weights": "a.pt"}, {"weights": "b.pt"}], methods=[{"name": "gradcam"}],
...                   deployment="evaluate/gpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

import db
from flows.results.names import checkpoint_name, origins_of
from flows.worker import devices, record, store
from flows.evaluate import evaluate
from flows.results.artifacts import number
from flows.worker.method_bounds import with_dataset_bounds
from flows.params import EvaluateParams, SweepParams
from flows.results.names import evaluate_name, named, sweep_name
from flows.specs import effective_dataset
from flows.results.artifacts import best_effort

__all__ = ["sweep", "sweep_cells"]

POLL_SECONDS = 2.0


def sweep_cells(params: SweepParams) -> list[EvaluateParams]:
    """The evaluate request of every cell, checkpoint-major, its dataset resolved for its checkpoint
    (:func:`flows.specs.effective_dataset`) and LRP given that dataset's z^B bounds
    (:func:`flows.worker.method_bounds.with_dataset_bounds`, as ``evaluate`` does)."""
    return [
        with_dataset_bounds(EvaluateParams(model=checkpoint, dataset=effective_dataset(params.dataset, checkpoint),
                                           mosaics=params.mosaics, methods=[method], run=params.run))
        for checkpoint in params.checkpoints
        for method in params.methods
    ]


def _wait(flow_run_ids: list[Any], timeout: float | None) -> dict[Any, Any]:
    """Poll the API until every flow run is in a final state (or the timeout passes); return the states."""
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[Any, Any] = {}
    with get_client(sync_client=True) as client:
        while True:
            for run_id in flow_run_ids:
                if run_id not in states or not states[run_id].is_final():
                    states[run_id] = client.read_flow_run(run_id).state
            if all(state is not None and state.is_final() for state in states.values()):
                return states
            if deadline is not None and time.monotonic() > deadline:
                return states
            time.sleep(POLL_SECONDS)


@flow(name="sweep", flow_run_name=named(sweep_name, SweepParams), validate_parameters=True, persist_result=False)
def sweep(params: SweepParams) -> dict[str, Any]:
    """Evaluate every checkpoint with every method, fanning the cells out onto the work pool.

    Args:
        params: Checkpoints, methods, mosaic set, how each cell runs, and the ``evaluate``
            deployment to fan out to (empty: run the cells here).

    Returns a dict with one row per cell: checkpoint, method, evaluation id, flow run state,
    n and median / mean Focus.
    """
    logger = get_run_logger()
    if params.deployment is None:
        devices.require_device(params.run.device)  # cells run here; with a deployment, the workers check
    engine = store.engine_for(params.run.database_url)
    cells = sweep_cells(params)
    evaluation_ids, checkpoint_ids = [], []
    for cell in cells:
        inputs = record.register_inputs(engine, cell.dataset, cell.mosaics, cell.model,
                                        max_mosaics=cell.run.max_mosaics)
        checkpoint_ids.append(inputs.checkpoint_id)
        evaluation_id, _, _ = record.open_evaluation(engine, inputs, cell.methods[0], cell.model, cell.randomization,
                                                     precision=cell.run.dtype, grid=cell.mosaics.grid)
        evaluation_ids.append(evaluation_id)
    logger.info("Sweep of %d cell(s) (%d checkpoints x %d methods) %s", len(cells), len(params.checkpoints),
                len(params.methods), f"on deployment {params.deployment}" if params.deployment else "in this process")

    states: list[str] = []
    if params.deployment:
        runs = [
            run_deployment(
                name=params.deployment,
                # the store is the workers' FOCUS_DATABASE_URL: database_url is no field of the deployment's schema
                parameters={"params": cell.model_dump(mode="json", exclude={"run": {"database_url"}})},
                timeout=0,
                as_subflow=True,
                flow_run_name=f"{evaluate_name(cell)} (sweep cell {i})",
                tags=["focus-sweep"],
            )
            for i, cell in enumerate(cells)
        ]
        final = _wait([run.id for run in runs], params.timeout_seconds)
        states = [final[run.id].type.value if final.get(run.id) is not None else "UNKNOWN" for run in runs]
    else:
        for cell in cells:
            state = evaluate(cell, return_state=True)
            states.append(state.type.value)

    summary = db.evaluation_summary(engine, evaluation_ids)
    by_id = {int(r["evaluation_id"]): r for r in summary.to_dict("records")}
    origins = origins_of(engine, checkpoint_ids)
    rows = []
    for cell, evaluation_id, checkpoint_id, state in zip(cells, evaluation_ids, checkpoint_ids, states, strict=True):
        found = by_id.get(evaluation_id, {})
        name = checkpoint_name(cell.model.label, origins.get(checkpoint_id, []))
        rows.append({
            "checkpoint": name or cell.model.weights,
            "architecture": cell.model.architecture,
            "method": cell.methods[0].name,
            "evaluation_id": evaluation_id,
            "state": state,
            "status": found.get("status"),
            "n": int(found.get("n") or 0),
            "median_focus": number(found.get("median_focus"), digits=4),
            "mean_focus": number(found.get("mean_focus"), digits=4),
        })
    best_effort(create_table_artifact, rows, key="focus-sweep",
                description=f"Sweep of {len(cells)} cell(s): median Focus per cell")
    failed = [r for r in rows if r["state"] != "COMPLETED"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(rows)} sweep cell(s) did not complete ({', '.join(r['state'] for r in failed)}); "
            "run the same sweep again to finish them (finished cells are skipped)."
        )
    return {"cells": rows}
