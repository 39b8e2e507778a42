"""Model weights: where they live, how they are fetched and verified, and the lineages they belong to.

=================  ===========================================================================================
module             holds
=================  ===========================================================================================
``weight_store``   weights by URL (a path, an fsspec URL, ``models:/``), verified by sha256, cached by hash
``cache_limits``   the bounds on a download and on the local weight cache (set in the worker's environment)
``mlflow_source``  ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` from an MLflow registry
``lineages``       named, ordered series of checkpoints of one model; registering and resolving them
=================  ===========================================================================================

Import the module: ``from flows.weights import weight_store``. Nothing is imported eagerly.
"""

__all__ = ["cache_limits", "lineages", "mlflow_source", "weight_store"]


def __getattr__(name: str):  # lazy submodules, as in :mod:`flows`
    if name in __all__:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
