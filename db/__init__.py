"""db: the record of everything focus-audit measures (SQLAlchemy 2.x + Alembic, PostgreSQL or SQLite).

The boundary is plain Python and numpy types; this package imports neither torch nor focus_core.
All SQL of focus-audit lives here: callers pass an ``Engine`` (``db.Engine``, from :func:`open_store`)
and never import sqlalchemy themselves.

Examples
--------
>>> import db
>>> db.upgrade("sqlite:///focus.db")  # doctest: +SKIP
'0016'
>>> engine = db.open_store("sqlite:///focus.db")  # doctest: +SKIP
"""

from db import (
    audit_comparisons,
    connection_faults,
    errors,
    evaluations,
    keys,
    leases,
    lineages,
    models,
    mosaic_sets,
    queries,
    registry,
    reliance,
    report_reads,
    results,
    runs,
    summaries,
    types,
)
from db.engine import DEFAULT_URL, ENV_VAR, Engine, database_url, mask_url
from db.errors import StoreError
from db.evaluations import evaluation_state, finish_evaluation, get_or_create_evaluation, start_evaluation
from db.keys import evaluation_key, params_hash
from db.lineages import (
    AuditedEvaluation,
    LineageCheckpoint,
    audit_evaluations,
    find_lineage,
    lineage_checkpoints,
    lineages_to_audit,
    pin_lineage_reference,
    previous_audited_checkpoint,
    reference_checkpoint,
    register_lineage_checkpoint,
    register_training_epochs,
    set_lineage_audit,
)
from db.migrate import (
    VERSION_TABLE,
    check_schema,
    current,
    downgrade,
    get_engine,
    head,
    open_store,
    schema_diff,
    upgrade,
)
from db.mosaic_sets import MosaicTiles, RegisteredMosaicSet, mosaic_tiles, register_mosaic_set
from db.queries import (
    checkpoint_history,
    checkpoint_origin,
    checkpoint_origins,
    checkpoints_to_audit,
    class_summary,
    compare_methods,
    evaluation_results,
    evaluation_tile_sums,
    evaluation_summary,
    finished_audit_runs,
    focus_regressions,
    latest_training_run,
    paired_focus,
    randomization_medians,
    split_images_per_class,
    training_curve,
)
from db.registry import (
    RecordedCheckpoint,
    RegisteredDataset,
    disconnected_methods,
    recorded_checkpoint,
    recorded_sha256_at,
    register_checkpoint,
    register_dataset,
    register_method,
    set_checkpoint_audit,
)
from db.reliance import (
    evaluation_reliance,
    evaluation_reliance_tiles,
    get_or_create_reliance_pass,
    paired_model_focus,
    reliance_mosaic_ids,
    store_evaluation_reliance,
    write_reliance,
)
from db.results import finished_mosaic_ids, write_mosaic_results
from db.shared_networks import copy_results, shared_network_twin
from db.runs import finish_audit_run, finish_training_run, record_epoch, register_training_run, start_audit_run
from db.transactions import Store

__all__ = [
    # modules
    "audit_comparisons",
    "connection_faults",
    "errors",
    "models",
    "queries",
    "report_reads",
    "types",
    "keys",
    "registry",
    "reliance",
    "mosaic_sets",
    "evaluations",
    "leases",
    "lineages",
    "results",
    "runs",
    "summaries",
    # engine and migrations
    "Engine",
    "Store",
    "DEFAULT_URL",
    "ENV_VAR",
    "VERSION_TABLE",
    "StoreError",
    "database_url",
    "mask_url",
    "get_engine",
    "open_store",
    "upgrade",
    "downgrade",
    "current",
    "head",
    "check_schema",
    "schema_diff",
    # writes
    "RegisteredDataset",
    "RegisteredMosaicSet",
    "params_hash",
    "evaluation_key",
    "register_dataset",
    "register_checkpoint",
    "set_checkpoint_audit",
    "register_mosaic_set",
    "register_method",
    "disconnected_methods",
    "LineageCheckpoint",
    "register_lineage_checkpoint",
    "register_training_epochs",
    "set_lineage_audit",
    "register_training_run",
    "record_epoch",
    "finish_training_run",
    "start_audit_run",
    "finish_audit_run",
    "get_or_create_evaluation",
    "start_evaluation",
    "finish_evaluation",
    "evaluation_state",
    "write_mosaic_results",
    "finished_mosaic_ids",
    "get_or_create_reliance_pass",
    "paired_model_focus",
    "reliance_mosaic_ids",
    "write_reliance",
    "evaluation_reliance_tiles",
    "store_evaluation_reliance",
    "evaluation_reliance",
    "shared_network_twin",
    "copy_results",
    # queries
    "evaluation_summary",
    "class_summary",
    "evaluation_results",
    "evaluation_tile_sums",
    "compare_methods",
    "training_curve",
    "checkpoint_history",
    "paired_focus",
    "focus_regressions",
    "checkpoints_to_audit",
    "randomization_medians",
    "find_lineage",
    "lineage_checkpoints",
    "lineages_to_audit",
    "previous_audited_checkpoint",
    "reference_checkpoint",
    "pin_lineage_reference",
    "AuditedEvaluation",
    "audit_evaluations",
    "latest_training_run",
    "finished_audit_runs",
    "checkpoint_origin",
    "checkpoint_origins",
    "split_images_per_class",
    "RecordedCheckpoint",
    "recorded_checkpoint",
    "recorded_sha256_at",
    "MosaicTiles",
    "mosaic_tiles",
]
