"""The schema of the results store as typed SQLAlchemy 2.x models.

Integer surrogate keys keep SQL readable; natural unique keys (content hashes) make every
registration idempotent. Per-mosaic data lives in plain columns of ``mosaic_result``; JSON is
used only for configuration and parameters.

Tiles of an N x N mosaic are numbered row-major 0..N²-1 (2x2: TL, TR, BL, BR = 0..3);
``mosaic.target_mask`` has bit ``p`` set when tile ``p`` holds a target-class image (2x2: TL = 1,
TR = 2, BL = 4, BR = 8). A 2x2 mosaic keeps its tiles in ``mosaic.image_*`` and its result's sums in
``mosaic_result.pos_*``/``neg_*`` (the fast path); any other grid uses ``mosaic_tile`` and
``mosaic_result_tile`` and leaves those columns NULL (revision 0007).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    cast,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from db.types import JSONType, UTCDateTime, utcnow

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Dataset",
    "Image",
    "TrainingRun",
    "TrainingEpoch",
    "Lineage",
    "ModelCheckpoint",
    "CheckpointOrigin",
    "MosaicSet",
    "Mosaic",
    "MosaicTile",
    "XaiMethod",
    "AuditRun",
    "Evaluation",
    "MosaicResult",
    "MosaicResultTile",
    "EvaluationStats",
    "EvaluationClassStats",
    "ChunkLease",
    "LeaseHolder",
    "ReliancePass",
    "MosaicReliance",
    "TileReliance",
    "EvaluationReliance",
    "RelianceChunkLease",
    "SPLITS",
    "RANDOMIZATIONS",
    "EVALUATION_STATUSES",
    "AUDIT_RUN_STATUSES",
    "TRAINING_RUN_STATUSES",
    "QUADRANTS",
    "MAX_GRID",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SPLITS = ("train", "val", "test")
RANDOMIZATIONS = ("none", "full", "cascading", "independent")
EVALUATION_STATUSES = ("pending", "running", "finished", "failed", "crashed")
RUN_STATUSES = ("running", "finished", "failed")
AUDIT_RUN_STATUSES = (*RUN_STATUSES, "crashed")
TRAINING_RUN_STATUSES = AUDIT_RUN_STATUSES  # revision 0015: a train flow that died leaves its run ``crashed``
QUADRANTS = ("tl", "tr", "bl", "br")
MAX_GRID = 5  # N x N tiles, N <= 5: the target bitmask (bit p for tile p) fits a 32-bit integer


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType, dt.datetime: UTCDateTime}


class Dataset(Base):
    """A dataset of tiles; ``fingerprint`` is its natural key."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    classes: Mapped[list[Any]]
    num_images: Mapped[int]
    tile_size: Mapped[int | None]
    channels: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Image(Base):
    """One image of a dataset: its position in the dataset, relative path, label and split."""

    __tablename__ = "image"
    __table_args__ = (
        UniqueConstraint("dataset_id", "relpath"),
        UniqueConstraint("dataset_id", "position"),
        CheckConstraint(_in("split", SPLITS), name="split"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    position: Mapped[int]
    relpath: Mapped[str] = mapped_column(Text)
    label: Mapped[int]
    split: Mapped[str] = mapped_column(String(8))


class TrainingRun(Base):
    """A training run; ``config_hash`` (sha256 of its configuration) is its natural key.

    A ``running`` training run names the train flow run working on it (``run_owner``, whose ``lease_holder`` row
    names its process and Prefect flow run); ``crashed`` means that run died before closing it (revision 0015).
    """

    __tablename__ = "training_run"
    __table_args__ = (CheckConstraint(_in("status", TRAINING_RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id"))
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    run_owner: Mapped[str | None] = mapped_column(String(64))


class TrainingEpoch(Base):
    """The metrics of one epoch of a training run (one row per run and epoch)."""

    __tablename__ = "training_epoch"
    __table_args__ = (UniqueConstraint("training_run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_run_id: Mapped[int] = mapped_column(ForeignKey("training_run.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    train_loss: Mapped[float | None] = mapped_column(Double)
    train_accuracy: Mapped[float | None] = mapped_column(Double)
    val_loss: Mapped[float | None] = mapped_column(Double)
    val_accuracy: Mapped[float | None] = mapped_column(Double)
    val_mean_class_accuracy: Mapped[float | None] = mapped_column(Double)
    focus_median: Mapped[float | None] = mapped_column(Double)
    focus_mean: Mapped[float | None] = mapped_column(Double)
    seconds: Mapped[float | None] = mapped_column(Double)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingEpochEvaluation(Base):
    """Which evaluations measured an epoch's Focus (one per method the training run measures).

    Written with the epoch (:func:`db.record_epoch`); ``training_epoch_focus`` shows one row per epoch and method
    from it.
    """

    __tablename__ = "training_epoch_evaluation"

    training_run_id: Mapped[int] = mapped_column(ForeignKey("training_run.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True)


class Lineage(Base):
    """A named, ordered series of checkpoints of one model (one architecture, class count and input shape).

    ``audit`` marks it for the nightly audit (which follows its newest checkpoint); ``source`` says where its
    checkpoints come from: ``training``, ``registered`` or a model registry (``mlflow:<name>@<alias>``).
    ``reference_version`` or ``reference_alias`` (an MLflow alias, resolved at each audit; at most one is set)
    pins the reference every audit also compares with; neither: the first audited version (revision 0011).
    """

    __tablename__ = "lineage"
    __table_args__ = (
        CheckConstraint("reference_version IS NULL OR reference_alias IS NULL", name="one_reference"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    architecture: Mapped[str] = mapped_column(String(200))
    num_classes: Mapped[int]
    in_channels: Mapped[int | None]
    audit: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(300), default="registered")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reference_version: Mapped[int | None]
    reference_alias: Mapped[str | None] = mapped_column(String(255))
    reference_pinned_at: Mapped[dt.datetime | None]


class ModelCheckpoint(Base):
    """A weights file; ``sha256`` of the file is its natural key.

    A checkpoint belongs to at most one lineage, as its ``version`` there (unique within the lineage,
    1, 2, ... in registration order unless given); ``registered_at`` is when it joined. All three are NULL
    for a checkpoint outside any lineage.
    """

    __tablename__ = "model_checkpoint"
    __table_args__ = (Index("ix_model_checkpoint_lineage_version", "lineage_id", "version", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    architecture: Mapped[str] = mapped_column(String(200))
    num_classes: Mapped[int]
    in_channels: Mapped[int | None]
    path: Mapped[str | None] = mapped_column(Text)
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_run.id"))
    epoch: Mapped[int | None]
    audit: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lineage_id: Mapped[int | None] = mapped_column(ForeignKey("lineage.id"))
    version: Mapped[int | None]
    registered_at: Mapped[dt.datetime | None]


class CheckpointOrigin(Base):
    """A training run and epoch that produced a checkpoint's weights; several when runs produced the same bytes.

    ``model_checkpoint.training_run_id`` and ``epoch`` keep the first such run; this table holds every one
    (written by :func:`db.register_checkpoint` whenever a training run registers an epoch's weights).
    """

    __tablename__ = "checkpoint_origin"

    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("model_checkpoint.id", ondelete="CASCADE"), primary_key=True)
    training_run_id: Mapped[int] = mapped_column(ForeignKey("training_run.id", ondelete="CASCADE"), primary_key=True,
                                                 index=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class MosaicSet(Base):
    """A seeded mosaic manifest; ``manifest_hash`` is its natural key.

    ``grid`` is N of its N x N mosaics and ``targets`` the number k of target tiles in each (a random
    explanation scores k / N², the views' ``chance_level``); ``confident`` and ``confident_model`` name the
    confident protocol (tiles the model classifies correctly with at least that probability; the sha256 of
    its weights), NULL when not used. ``tile_size`` and ``resize`` say how its images became tiles (shorter side
    resized to ``resize``, centre ``tile_size`` crop; ``resize`` NULL for data that is not resized). ``probe`` is a
    probe set's patch (``focus_core.probes.CornerPatch.to_dict``, part of its manifest and so of its hash), stamped on
    the non-target tiles of every mosaic; NULL for a clean set.
    """

    __tablename__ = "mosaic_set"
    __table_args__ = (
        CheckConstraint(_in("split", SPLITS), name="split"),
        CheckConstraint(f"grid BETWEEN 2 AND {MAX_GRID} AND targets >= 1 AND targets < grid * grid", name="grid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    manifest_hash: Mapped[str] = mapped_column(String(64), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"))
    split: Mapped[str] = mapped_column(String(8))
    seed: Mapped[int] = mapped_column(BigInteger)
    per_class: Mapped[int]
    layout: Mapped[str] = mapped_column(String(32))
    tile_size: Mapped[int | None]
    num_mosaics: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    grid: Mapped[int] = mapped_column(Integer, server_default="2")
    targets: Mapped[int] = mapped_column(Integer, server_default="2")
    confident: Mapped[float | None] = mapped_column(Double)
    confident_model: Mapped[str | None] = mapped_column(String(64))
    resize: Mapped[int | None]  # revision 0012: the ImageFolder's shorter side before the crop; NULL: not resized
    probe: Mapped[dict[str, Any] | None]  # revision 0014: a probe set's patch (CornerPatch.to_dict); NULL: clean
    # k / N², as the views' chance_level (revision 0007): what a random explanation scores on these mosaics
    chance_level: Mapped[float] = column_property(cast(targets, Double) / (grid * grid))


class Mosaic(Base):
    """One mosaic: the target class, the target-tile bitmask and, for a 2x2 one, its four image ids.

    A 2x2 mosaic's tiles are ``image_tl``, ``image_tr``, ``image_bl``, ``image_br``; for any other grid
    they are NULL and the tiles are :class:`MosaicTile` rows (the view ``mosaic_tiles`` shows both).
    """

    __tablename__ = "mosaic"
    __table_args__ = (
        UniqueConstraint("mosaic_set_id", "position"),
        CheckConstraint("target_mask >= 0", name="target_mask"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mosaic_set_id: Mapped[int] = mapped_column(ForeignKey("mosaic_set.id", ondelete="CASCADE"))
    position: Mapped[int]
    image_tl: Mapped[int | None] = mapped_column(ForeignKey("image.id"))
    image_tr: Mapped[int | None] = mapped_column(ForeignKey("image.id"))
    image_bl: Mapped[int | None] = mapped_column(ForeignKey("image.id"))
    image_br: Mapped[int | None] = mapped_column(ForeignKey("image.id"))
    target_class: Mapped[int]
    target_mask: Mapped[int]


class MosaicTile(Base):
    """One tile of a mosaic on a grid other than 2x2: its row-major position and image."""

    __tablename__ = "mosaic_tile"

    mosaic_id: Mapped[int] = mapped_column(ForeignKey("mosaic.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"))


class XaiMethod(Base):
    """An attribution method with explicit parameters; ``params_hash`` is its natural key."""

    __tablename__ = "xai_method"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]]
    params_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditRun(Base):
    """One run of the audit (for example the nightly one).

    A ``running`` audit run names the run that opened it (``run_owner``, whose ``lease_holder`` row names its
    process and Prefect flow run); ``crashed`` means that run died before closing it (revision 0013).
    """

    __tablename__ = "audit_run"
    __table_args__ = (
        CheckConstraint(_in("status", AUDIT_RUN_STATUSES), name="status"),
        Index("ix_audit_run_started_at", "started_at", "id"),  # the latest audit in one probe (revision 0009)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running")
    threshold: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    run_owner: Mapped[str | None] = mapped_column(String(64))


class Evaluation(Base):
    """A checkpoint x method x mosaic set x randomization (x audit) evaluation.

    ``natural_key`` is the sha256 of those components (see ``db.keys.evaluation_key``), so that
    ``stage``, ``layer``, ``seed`` and ``audit_run_id`` may be NULL and the key stays unique on both databases.
    ``seed`` is the randomization's seed (NULL when the model is not randomized). A ``running`` evaluation
    names the run working on it (``run_owner``) and until when that run has said it is alive
    (``run_expires_at``, renewed while it works); ``crashed`` means that run died before closing it (see
    ``db.leases``).
    """

    __tablename__ = "evaluation"
    __table_args__ = (
        CheckConstraint(_in("randomization", RANDOMIZATIONS), name="randomization"),
        CheckConstraint(_in("status", EVALUATION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    natural_key: Mapped[str] = mapped_column(String(64), unique=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("model_checkpoint.id"), index=True)
    method_id: Mapped[int] = mapped_column(ForeignKey("xai_method.id"), index=True)
    mosaic_set_id: Mapped[int] = mapped_column(ForeignKey("mosaic_set.id"), index=True)
    randomization: Mapped[str] = mapped_column(String(16), default="none")
    stage: Mapped[int | None]
    layer: Mapped[str | None] = mapped_column(String(300))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    audit_run_id: Mapped[int | None] = mapped_column(ForeignKey("audit_run.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    run_owner: Mapped[str | None] = mapped_column(String(64))
    run_expires_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    seconds: Mapped[float | None] = mapped_column(Double)
    code_version: Mapped[str | None] = mapped_column(String(100))
    device: Mapped[str | None] = mapped_column(String(100))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    n: Mapped[int | None]
    n_defined: Mapped[int | None]
    focus_median: Mapped[float | None] = mapped_column(Double)
    focus_mean: Mapped[float | None] = mapped_column(Double)


class MosaicResult(Base):
    """One row per evaluation and mosaic: relevance per quadrant, Focus and the prediction.

    ``pos_*`` are sums of positive relevance (>= 0), ``neg_*`` sums of negative relevance (<= 0), for
    a 2x2 mosaic; NULL for any other grid, whose sums are :class:`MosaicResultTile` rows;
    ``focus`` is NULL (never NaN) when the map has no positive relevance. On PostgreSQL the table is
    partitioned by RANGE of ``evaluation_id`` (revision 0004: 1000 evaluations per partition, created
    by a trigger on ``evaluation``); on SQLite it is one table.
    """

    __tablename__ = "mosaic_result"
    __table_args__ = {"postgresql_partition_by": "RANGE (evaluation_id)"}

    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key on purpose: a per-row RI trigger halves the bulk write rate on PostgreSQL.
    # ``db.results.write_mosaic_results`` enforces more than a key would (the mosaic must belong to
    # the evaluation's mosaic set), and ``evaluation -> mosaic_set`` blocks deleting the mosaics.
    mosaic_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pos_tl: Mapped[float | None] = mapped_column(Double)
    pos_tr: Mapped[float | None] = mapped_column(Double)
    pos_bl: Mapped[float | None] = mapped_column(Double)
    pos_br: Mapped[float | None] = mapped_column(Double)
    neg_tl: Mapped[float | None] = mapped_column(Double)
    neg_tr: Mapped[float | None] = mapped_column(Double)
    neg_bl: Mapped[float | None] = mapped_column(Double)
    neg_br: Mapped[float | None] = mapped_column(Double)
    focus: Mapped[float | None] = mapped_column(Double)
    predicted_class: Mapped[int]


class MosaicResultTile(Base):
    """The relevance sums of one tile of a result on a grid other than 2x2 (row-major ``position``).

    ``positive`` >= 0 and ``negative`` <= 0, as ``mosaic_result.pos_*``/``neg_*``. Partitioned on PostgreSQL
    like ``mosaic_result`` (``mosaic_result_tile_p000000`` beside ``mosaic_result_p000000``, created by the
    same trigger); no foreign key to the result row, for the same reason as ``mosaic_result.mosaic_id``.
    """

    __tablename__ = "mosaic_result_tile"
    __table_args__ = {"postgresql_partition_by": "RANGE (evaluation_id)"}

    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True)
    mosaic_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    positive: Mapped[float] = mapped_column(Double)
    negative: Mapped[float] = mapped_column(Double)


class EvaluationStats(Base):
    """The summary of a closed evaluation's stored rows, written once when it is closed (``db.summaries``).

    Over the defined Focus scores: ``n_defined``, mean, sample standard deviation (``std_focus``,
    NULL under two scores), linear-interpolation quartiles (numpy's default), min and max; over all
    ``n`` rows: ``mosaic_accuracy`` (share predicted as their target class), ``undefined_share`` and
    ``median_focus_undefined_as_zero`` (undefined maps counted as Focus 0, Quantus's convention).
    """

    __tablename__ = "evaluation_stats"

    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    n: Mapped[int]
    n_defined: Mapped[int]
    mean_focus: Mapped[float | None] = mapped_column(Double)
    median_focus: Mapped[float | None] = mapped_column(Double)
    q1_focus: Mapped[float | None] = mapped_column(Double)
    q3_focus: Mapped[float | None] = mapped_column(Double)
    min_focus: Mapped[float | None] = mapped_column(Double)
    max_focus: Mapped[float | None] = mapped_column(Double)
    mosaic_accuracy: Mapped[float | None] = mapped_column(Double)
    std_focus: Mapped[float | None] = mapped_column(Double)
    undefined_share: Mapped[float | None] = mapped_column(Double)
    median_focus_undefined_as_zero: Mapped[float | None] = mapped_column(Double)
    computed_at: Mapped[dt.datetime]


class EvaluationClassStats(Base):
    """The summary of a closed evaluation per target class (the same definitions as ``EvaluationStats``)."""

    __tablename__ = "evaluation_class_stats"

    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_stats.evaluation_id", ondelete="CASCADE"), primary_key=True
    )
    target_class: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int]
    n_defined: Mapped[int]
    mean_focus: Mapped[float | None] = mapped_column(Double)
    median_focus: Mapped[float | None] = mapped_column(Double)
    mosaic_accuracy: Mapped[float | None] = mapped_column(Double)
    median_focus_undefined_as_zero: Mapped[float | None] = mapped_column(Double)


class ChunkLease(Base):
    """A chunk of an evaluation being computed by one run (``owner``) until ``expires_at``.

    Concurrent runs of the same request claim chunks here, so each chunk is computed once; the row is
    removed when the chunk's results are written, and an expired one is taken over (see ``db.leases``).
    """

    __tablename__ = "chunk_lease"

    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime]


class LeaseHolder(Base):
    """The process behind a lease owner (``evaluation.run_owner``, ``chunk_lease.owner``, ``audit_run.run_owner``),
    for telling a dead run.

    ``host`` names the machine and its process namespace, ``pid`` and ``process_started`` the process (its start
    time tells a reused pid apart; NULL where the system does not say), ``flow_run_id`` the Prefect flow run, when
    there is one. A run writes its row before it takes a lease and deletes it with its leases; a lease whose holder
    is known to be gone is taken over at once instead of when it expires (``db.leases``, revision 0010).
    """

    __tablename__ = "lease_holder"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    process_started: Mapped[str | None] = mapped_column(String(32))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    since: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditComparison(Base):
    """An audit's finished, unrandomized evaluation next to the one it is compared with in ``audit_history``.

    ``previous_evaluation_id`` is the finished, unrandomized evaluation of the same checkpoint, method and mosaic
    set in the latest earlier audit (by the audit's ``started_at``, then its id; NULL for the first); written by
    :func:`db.audit_comparisons.refresh_audit_comparisons` whenever an audit evaluation becomes or stops being
    finished (revision 0008), so a row exists only while its evaluation is finished. ``audit_run_id``,
    ``checkpoint_id``, ``method_id``, ``mosaic_set_id`` and ``previous_audit_run_id`` copy the evaluations'
    (immutable) key columns: ``audit_history`` needs no join with ``evaluation``, and a filter on the audit run
    or the checkpoint is an index lookup.
    """

    __tablename__ = "audit_comparison"

    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    audit_run_id: Mapped[int] = mapped_column(Integer, index=True)
    checkpoint_id: Mapped[int] = mapped_column(Integer, index=True)
    method_id: Mapped[int]
    mosaic_set_id: Mapped[int]
    previous_evaluation_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluation.id", ondelete="SET NULL"), index=True
    )
    previous_audit_run_id: Mapped[int | None]


class ReliancePass(Base):
    """The model-reliance pass of one model on one mosaic set (``focus_core.reliance``), measured once.

    Its identity (``natural_key``, ``db.keys.reliance_key``) is what changes the logits: the checkpoint, the
    randomization (kind, stage, layer, seed, as an evaluation records them), the mosaic set and the ``baseline``
    a tile is replaced by. Methods are not part of it: every evaluation of that model and set reads the same rows
    (revision 0016).
    """

    __tablename__ = "reliance_pass"
    __table_args__ = (CheckConstraint(_in("randomization", RANDOMIZATIONS), name="randomization"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    natural_key: Mapped[str] = mapped_column(String(64), unique=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("model_checkpoint.id"), index=True)
    mosaic_set_id: Mapped[int] = mapped_column(ForeignKey("mosaic_set.id"), index=True)
    randomization: Mapped[str] = mapped_column(String(16))
    stage: Mapped[int | None]
    layer: Mapped[str | None] = mapped_column(String(300))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    baseline: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MosaicReliance(Base):
    """One mosaic of a reliance pass: the intact mosaic's target logit and the model Focus of its drops
    (NULL, never NaN, where no drop is positive)."""

    __tablename__ = "mosaic_reliance"

    pass_id: Mapped[int] = mapped_column(ForeignKey("reliance_pass.id", ondelete="CASCADE"), primary_key=True)
    mosaic_id: Mapped[int] = mapped_column(ForeignKey("mosaic.id", ondelete="CASCADE"), primary_key=True,
                                           autoincrement=False)
    intact_logit: Mapped[float] = mapped_column(Double)
    model_focus: Mapped[float | None] = mapped_column(Double)


class TileReliance(Base):
    """The drop of the target logit when tile ``tile`` (row-major) of a mosaic is replaced by the pass's baseline."""

    __tablename__ = "tile_reliance"
    __table_args__ = (
        ForeignKeyConstraint(["pass_id", "mosaic_id"], ["mosaic_reliance.pass_id", "mosaic_reliance.mosaic_id"],
                             ondelete="CASCADE"),
    )

    pass_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    mosaic_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tile: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    logit_drop: Mapped[float] = mapped_column(Double)


class RelianceChunkLease(Base):
    """A chunk of a reliance pass being measured by one run (``owner``) until ``expires_at``: as ``chunk_lease`` for
    an evaluation's chunks, so concurrent runs of one model and mosaic set measure each chunk once (``db.leases``)."""

    __tablename__ = "reliance_chunk_lease"

    pass_id: Mapped[int] = mapped_column(ForeignKey("reliance_pass.id", ondelete="CASCADE"), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime]


class EvaluationReliance(Base):
    """A finished evaluation next to its model's reliance pass: the stored summaries of model Focus and of the
    explainer gap (Focus minus model Focus) over the evaluation's mosaics, and of the rank agreement (grids >= 3).

    Medians and quartiles over the defined values (``focus_core.stats.summarize``); ``*_low``/``*_high`` the 95%
    interval of the median that resamples target classes and mosaics (``cluster_bootstrap_median_ci``).
    """

    __tablename__ = "evaluation_reliance"

    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    pass_id: Mapped[int] = mapped_column(ForeignKey("reliance_pass.id", ondelete="CASCADE"), index=True)
    n_model_defined: Mapped[int]
    median_model_focus: Mapped[float | None] = mapped_column(Double)
    q1_model_focus: Mapped[float | None] = mapped_column(Double)
    q3_model_focus: Mapped[float | None] = mapped_column(Double)
    model_focus_low: Mapped[float | None] = mapped_column(Double)
    model_focus_high: Mapped[float | None] = mapped_column(Double)
    n_gap_defined: Mapped[int]
    median_explainer_gap: Mapped[float | None] = mapped_column(Double)
    q1_explainer_gap: Mapped[float | None] = mapped_column(Double)
    q3_explainer_gap: Mapped[float | None] = mapped_column(Double)
    explainer_gap_low: Mapped[float | None] = mapped_column(Double)
    explainer_gap_high: Mapped[float | None] = mapped_column(Double)
    median_rank_agreement: Mapped[float | None] = mapped_column(Double)
    computed_at: Mapped[dt.datetime]
