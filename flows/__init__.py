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

Supporting modules: :mod:`flows.tasks` (the chunk task and the retry rule), :mod:`flows.caches`
(what a worker loads once: data, tiles, manifests, models), :mod:`flows.devices` (the device check
and the turns on a device), :mod:`flows.record` (registering inputs in the store), :mod:`flows.store`
(one engine per database URL), :mod:`flows.leases` (who works on an evaluation), :mod:`flows.preflight`
(what a worker checks before it writes), :mod:`flows.faults` (a full, read-only or forbidden disk: not
retried, one line), :mod:`flows.artifacts` (artifact keys from names), :mod:`flows.analysis` (statistics
over stored results). Import the module that holds a thing, e.g. ``from flows.evaluate import evaluate``;
this package imports nothing eagerly, so ``import flows.params`` stays light.
"""

__all__ = [
    "params", "evaluate", "randomization", "train", "audit", "sweep", "tasks", "caches", "devices", "record", "store",
]


def __getattr__(name: str):  # lazy submodules: ``flows.evaluate`` without importing every flow up front
    if name in __all__:
        import importlib

        return importlib.import_module(f"flows.{name}")
    raise AttributeError(f"module 'flows' has no attribute {name!r}")
