"""What a flow says about its results: statistics over stored rows, names, artifacts and JSON-safe numbers.

=============  ===============================================================================================
module         holds
=============  ===============================================================================================
``analysis``   statistics over stored results (``db`` returns the values, :mod:`focus_core.stats` computes)
``names``      flow-run names that say what a run does; a checkpoint's name when several runs made it
``artifacts``  artifact keys, artifact calls that cannot fail a run, NaN to None where a number leaves a flow
=============  ===============================================================================================

Import the module: ``from flows.results import analysis``. Nothing is imported eagerly.
"""

__all__ = ["analysis", "artifacts", "names"]


def __getattr__(name: str):  # lazy submodules, as in :mod:`flows`
    if name in __all__:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
