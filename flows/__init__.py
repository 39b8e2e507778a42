"""flows: Prefect orchestration of focus-audit (thin glue over ``focus_core`` and ``db``).

Each flow takes one validated parameter model (``flows.params``), so the Prefect UI renders a form
and a bad value is refused before any work starts:

================  ==========================  ==========================================
flow              module                      parameters
================  ==========================  ==========================================
``evaluate``      :mod:`flows.evaluate`       :class:`flows.params.EvaluateParams`
``randomization`` :mod:`flows.randomization`  :class:`flows.params.RandomizationParams`
``train``         :mod:`flows.train`          :class:`flows.params.TrainParams`
``audit``         :mod:`flows.audit`          :class:`flows.params.AuditParams`
``sweep``         :mod:`flows.sweep`          :class:`flows.params.SweepParams`
================  ==========================  ==========================================

At the top sit the flows, :mod:`flows.tasks` (the chunk task and the retry rule) and the parameters
(:mod:`flows.params`, :mod:`flows.specs`). The rest lives in rooms named after what they hold:

- :mod:`flows.worker`: what a worker needs for one chunk (store, record, caches, device, lease, pre-flight,
  storage faults, confinement);
- :mod:`flows.weights`: model weights (the weight store and its cache limits, the MLflow source, lineages);
- :mod:`flows.results`: statistics over stored results, run and checkpoint names, artifacts, JSON-safe numbers;
- :mod:`flows.cli`: the ``focus`` command; :mod:`flows.report`: the HTML report.

Import the module that holds a thing, e.g. ``from flows.evaluate import evaluate``;
this package imports nothing eagerly, so ``import flows.params`` stays light.
"""

__all__ = [
    "params", "specs", "evaluate", "randomization", "train", "audit", "sweep", "tasks", "worker", "weights", "results",
    "cli", "report",
]


def __getattr__(name: str):  # lazy submodules: ``flows.evaluate`` without importing every flow up front
    if name in __all__:
        import importlib

        return importlib.import_module(f"flows.{name}")
    raise AttributeError(f"module 'flows' has no attribute {name!r}")
