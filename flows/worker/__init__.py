"""What a worker needs to do one chunk of work safely: the store, the caches, the device, the lease, the pre-flight.

=================  ===========================================================================================
module             holds
=================  ===========================================================================================
``store``          one engine per database URL per process; the retry rule for a lost connection
``record``         registering a run's inputs (dataset, mosaic set, checkpoint, method, evaluation) in the store
``caches``         what a worker loads once per process: datasets, tiles, manifests, models
``method_bounds``  the z^B bounds an LRP method gets from the dataset's normalisation
``preflight``      the checks a request passes before anything is written (the CLI runs the same ones)
``devices``        the device check and the turns a run takes on one device
``leases``         who works on an evaluation; a dead holder is taken over
``processes``      this process's identity and whether a recorded one is gone
``faults``         storage faults (a full, read-only or forbidden disk): not retried, one line
``confinement``    what a run started from a deployment may import, read and write
=================  ===========================================================================================

Import the module: ``from flows.worker import caches``. Nothing is imported eagerly.
"""

__all__ = [
    "caches", "confinement", "devices", "faults", "leases", "method_bounds", "preflight", "processes", "record",
    "store",
]


def __getattr__(name: str):  # lazy submodules, as in :mod:`flows`
    if name in __all__:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
