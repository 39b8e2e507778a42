"""Every write to the results store, in one namespace (``db.writes.<name>``).

The functions live in one module per concept; this module only gathers them:

- ``db.registry``: datasets and images, checkpoints, attribution methods;
- ``db.mosaic_sets``: mosaic sets and their mosaics;
- ``db.evaluations``: evaluations and their lifecycle;
- ``db.results``: per-mosaic result chunks;
- ``db.runs``: training runs, epochs and audit runs;
- ``db.keys``: the natural keys (content hashes);
- ``db.transactions``: the ``Store`` type (an ``Engine`` or a ``Connection``) and its transactions.
"""

from __future__ import annotations

from db.evaluations import finish_evaluation, get_or_create_evaluation, start_evaluation
from db.keys import canonical_hash, evaluation_key, params_hash
from db.mosaic_sets import RegisteredMosaicSet, register_mosaic_set
from db.registry import RegisteredDataset, register_checkpoint, register_dataset, register_method, set_checkpoint_audit
from db.results import finished_mosaic_ids, write_mosaic_results
from db.runs import finish_audit_run, finish_training_run, record_epoch, register_training_run, start_audit_run
from db.transactions import Store

__all__ = [
    "Store",
    "RegisteredDataset",
    "RegisteredMosaicSet",
    "canonical_hash",
    "params_hash",
    "evaluation_key",
    "register_dataset",
    "register_checkpoint",
    "set_checkpoint_audit",
    "register_mosaic_set",
    "register_method",
    "register_training_run",
    "record_epoch",
    "finish_training_run",
    "start_audit_run",
    "finish_audit_run",
    "get_or_create_evaluation",
    "start_evaluation",
    "finish_evaluation",
    "write_mosaic_results",
    "finished_mosaic_ids",
]
