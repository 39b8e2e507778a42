"""Lineages: named, ordered series of checkpoints of one model, and what the audit reads of them.

A lineage holds one model: one architecture, class count and input channel count, fixed by its first
checkpoint. Registering a checkpoint into a lineage is idempotent (the same checkpoint again returns its
version), refuses a checkpoint of another model and a version another checkpoint holds, and gives the next
version when none is asked for. The audit follows the newest checkpoint (highest version) of every lineage
marked for auditing and compares it with the lineage's previous audited checkpoint and with its reference:
the version :func:`pin_lineage_reference` pinned (or the MLflow alias it named), else the first audited one
(:func:`reference_checkpoint`).

Examples
--------
>>> entry = register_lineage_checkpoint(engine, "resnet18-prod", checkpoint_id)  # doctest: +SKIP
>>> entry.version, entry.added  # doctest: +SKIP
(1, True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from db.errors import StoreError
from db.models import CheckpointOrigin, Evaluation, Lineage, ModelCheckpoint
from db.transactions import Store, idempotent, transaction
from db.types import utcnow

__all__ = [
    "LineageCheckpoint",
    "AuditedEvaluation",
    "find_lineage",
    "register_lineage_checkpoint",
    "register_training_epochs",
    "lineage_checkpoints",
    "lineages_to_audit",
    "previous_audited_checkpoint",
    "reference_checkpoint",
    "pin_lineage_reference",
    "audit_evaluations",
    "set_lineage_audit",
]


class LineageCheckpoint(NamedTuple):
    """A checkpoint's place in a lineage; ``added`` is ``False`` when it was there already."""

    lineage_id: int
    checkpoint_id: int
    version: int
    added: bool


class AuditedEvaluation(NamedTuple):
    """A finished audit evaluation of a checkpoint with one method, as the store recorded it."""

    evaluation_id: int
    checkpoint_id: int
    method_id: int
    mosaic_set_id: int
    audit_run_id: int
    median_focus: float | None


def _model(architecture: str, num_classes: int, in_channels: int | None) -> str:
    channels = "" if in_channels is None else f", {in_channels} input channel(s)"
    return f"{architecture} with {num_classes} classes{channels}"


def _same_model(lineage: Any, checkpoint: Any) -> bool:
    channels_agree = lineage.in_channels is None or checkpoint.in_channels is None or (
        int(lineage.in_channels) == int(checkpoint.in_channels)
    )
    return (lineage.architecture, int(lineage.num_classes)) == (checkpoint.architecture,
                                                                int(checkpoint.num_classes)) and channels_agree


def register_lineage_checkpoint(
    store: Store,
    name: str,
    checkpoint_id: int,
    *,
    version: int | None = None,
    source: str = "registered",
    audit: bool | None = None,
) -> LineageCheckpoint:
    """Put a registered checkpoint into the lineage ``name`` (created from the checkpoint's model when new).

    Parameters
    ----------
    store
        Engine or connection.
    name
        The lineage's name (unique).
    checkpoint_id
        A checkpoint registered with :func:`db.register_checkpoint`.
    version
        Its version in the lineage; ``None``: one more than the highest there (1 for the first).
    source
        Where the lineage's checkpoints come from, recorded when the lineage is created.
    audit
        Mark (``True``) or unmark (``False``) the lineage for the nightly audit; ``None`` leaves it.

    Returns
    -------
    LineageCheckpoint
        Its version; ``added`` is ``False`` when the checkpoint was already in this lineage (nothing changed
        but ``audit``).

    Raises
    ------
    StoreError
        When the checkpoint does not exist, belongs to another lineage, is another model than the lineage's
        (architecture, classes, input channels), or ``version`` is held by another checkpoint or not >= 1.
    """
    if version is not None and int(version) < 1:
        raise StoreError(f"Expected a lineage version of at least 1 but got {version}.")

    def work(connection: Connection) -> LineageCheckpoint:
        c = ModelCheckpoint
        checkpoint = connection.execute(
            select(c.id, c.sha256, c.architecture, c.num_classes, c.in_channels, c.lineage_id, c.version)
            .where(c.id == checkpoint_id)
        ).first()
        if checkpoint is None:
            raise StoreError(f"No checkpoint with id {checkpoint_id}; register it first.")
        lineage = connection.execute(select(Lineage).where(Lineage.name == name)).first()
        if lineage is None:
            lineage_id = connection.scalar(
                insert(Lineage).values(
                    name=name, architecture=checkpoint.architecture, num_classes=int(checkpoint.num_classes),
                    in_channels=checkpoint.in_channels, source=source, audit=bool(audit),
                ).returning(Lineage.id)
            )
        else:
            lineage_id = int(lineage.id)
            if not _same_model(lineage, checkpoint):
                raise StoreError(
                    f"Lineage {name!r} holds {_model(lineage.architecture, lineage.num_classes, lineage.in_channels)}"
                    f", not {_model(checkpoint.architecture, checkpoint.num_classes, checkpoint.in_channels)}: "
                    "register this checkpoint into a lineage of its own (another --lineage name)."
                )
            if audit is not None and bool(lineage.audit) != bool(audit):
                connection.execute(update(Lineage).where(Lineage.id == lineage_id).values(audit=bool(audit)))
        if checkpoint.lineage_id is not None:
            if int(checkpoint.lineage_id) != lineage_id:
                other = connection.scalar(select(Lineage.name).where(Lineage.id == checkpoint.lineage_id))
                raise StoreError(
                    f"Checkpoint {checkpoint.sha256[:12]} is version {checkpoint.version} of lineage {other!r}: "
                    "a checkpoint belongs to one lineage, so register other weights into this one."
                )
            if version is not None and int(version) != int(checkpoint.version):
                raise StoreError(
                    f"Checkpoint {checkpoint.sha256[:12]} is already version {checkpoint.version} of lineage "
                    f"{name!r}: leave --version out, or register other weights as version {version}."
                )
            return LineageCheckpoint(lineage_id, checkpoint_id, int(checkpoint.version), False)
        if version is None:
            highest = connection.scalar(select(func.max(c.version)).where(c.lineage_id == lineage_id))
            chosen = int(highest or 0) + 1
        else:
            chosen = int(version)
            holder = connection.scalar(select(c.sha256).where(c.lineage_id == lineage_id, c.version == chosen))
            if holder is not None:
                raise StoreError(
                    f"Version {chosen} of lineage {name!r} is checkpoint {holder[:12]}: pick another --version, "
                    "or leave it out for the next one."
                )
        connection.execute(
            update(c).where(c.id == checkpoint_id).values(lineage_id=lineage_id, version=chosen, registered_at=utcnow())
        )
        return LineageCheckpoint(lineage_id, checkpoint_id, chosen, True)

    return idempotent(store, work)  # two registrations racing for the next version: the second one runs again


def find_lineage(engine: Engine, name: str) -> dict[str, Any] | None:
    """The lineage ``name`` (``lineage_id``, ``name``, ``architecture``, ``num_classes``, ``in_channels``,
    ``audit``, ``source``), or ``None`` when there is none."""
    with engine.connect() as connection:
        row = connection.execute(select(Lineage).where(Lineage.name == name)).first()
    if row is None:
        return None
    return {"lineage_id": int(row.id), "name": row.name, "architecture": row.architecture,
            "num_classes": int(row.num_classes),
            "in_channels": None if row.in_channels is None else int(row.in_channels),
            "audit": bool(row.audit), "source": row.source}


def register_training_epochs(
    store: Store, name: str, training_run_id: int, *, last_epoch: int, audit: bool | None = None
) -> list[LineageCheckpoint]:
    """Put the checkpoints of a training run's epochs ``1..last_epoch`` into the lineage ``name``, in epoch order.

    One transaction; epochs already there keep their version, the others follow the lineage's highest. A new
    lineage records ``training`` as its source. The run's epochs are its ``checkpoint_origin`` rows, so an epoch
    whose weights an earlier run produced byte for byte is found too (and refused if it is in another lineage).

    Raises
    ------
    StoreError
        As :func:`register_lineage_checkpoint` (another model, another lineage); nothing is written then.
    """
    o = CheckpointOrigin
    with transaction(store) as connection:
        ids = list(dict.fromkeys(connection.scalars(
            select(o.checkpoint_id).where(o.training_run_id == int(training_run_id), o.epoch >= 1,
                                          o.epoch <= int(last_epoch))
            .order_by(o.epoch, o.checkpoint_id)
        )))
        return [register_lineage_checkpoint(connection, name, checkpoint_id, source="training", audit=audit)
                for checkpoint_id in ids]


def set_lineage_audit(store: Store, name: str, audit: bool = True) -> None:
    """Mark (or unmark) the lineage ``name`` for the nightly audit."""
    with transaction(store) as connection:
        result = connection.execute(update(Lineage).where(Lineage.name == name).values(audit=bool(audit)))
        if result.rowcount != 1:
            raise StoreError(f"No lineage named {name!r}; register a checkpoint into it first (focus checkpoint "
                             "register --lineage NAME).")


def _read(engine: Engine, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    with engine.connect() as connection:
        frame = pd.read_sql(text(sql), connection, params=params)
    for column in ("registered_at", "created_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


_CHECKPOINT_COLUMNS = (
    "l.name AS lineage, c.version, c.id AS checkpoint_id, c.sha256, c.architecture, c.num_classes, c.in_channels, "
    "c.label, c.path, c.training_run_id, c.epoch, c.registered_at, l.audit AS lineage_audit, l.source"
)


def lineage_checkpoints(engine: Engine, name: str | None = None) -> pd.DataFrame:
    """The checkpoints of the lineage ``name`` (every lineage with ``None``), by lineage then version.

    Columns: ``lineage``, ``version``, ``checkpoint_id``, ``sha256``, ``architecture``, ``num_classes``,
    ``in_channels``, ``label``, ``path``, ``training_run_id``, ``epoch``, ``registered_at``,
    ``lineage_audit``, ``source``.
    """
    sql = f"SELECT {_CHECKPOINT_COLUMNS} FROM model_checkpoint c JOIN lineage l ON l.id = c.lineage_id"
    params: dict[str, Any] = {}
    if name is not None:
        sql += " WHERE l.name = :name"
        params["name"] = name
    frame = _read(engine, sql + " ORDER BY l.name, c.version", params)
    frame["lineage_audit"] = frame["lineage_audit"].astype(bool)
    return frame


def lineages_to_audit(engine: Engine, names: list[str] | None = None) -> pd.DataFrame:
    """The newest checkpoint (highest version) of every lineage marked for auditing, by lineage name.

    With ``names``, those lineages only, whether marked or not (asking for a lineage by name audits it).

    Columns: ``lineage_id``, ``lineage``, ``version`` and the checkpoint's ``checkpoint_id``, ``sha256``,
    ``architecture``, ``num_classes``, ``in_channels``, ``path``, ``label``; the lineage's pinned reference,
    ``reference_version`` and ``reference_alias`` (both None: its first audited version), and ``source``.

    Raises
    ------
    StoreError
        When a name in ``names`` is no lineage, or names one without checkpoints.
    """
    sql = (
        "SELECT l.id AS lineage_id, l.name AS lineage, c.version, c.id AS checkpoint_id, c.sha256, c.architecture, "
        "c.num_classes, c.in_channels, c.path, c.label, l.reference_version, l.reference_alias, l.source "
        "FROM lineage l JOIN model_checkpoint c ON c.lineage_id = l.id "
        "WHERE c.version = (SELECT MAX(v.version) FROM model_checkpoint v WHERE v.lineage_id = l.id)"
    )
    params: dict[str, Any] = {}
    if names is None:
        sql += " AND l.audit = :flag"
        params["flag"] = True
    frame = _read(engine, sql + " ORDER BY l.name", params)
    if names is not None:
        missing = sorted(set(names) - set(frame["lineage"]))
        if missing:
            raise StoreError(f"No lineage with checkpoints named {', '.join(map(repr, missing))}: register one with "
                             "`focus checkpoint register --lineage NAME` (see `focus checkpoint list`).")
        frame = frame[frame["lineage"].isin(names)].reset_index(drop=True)
    return frame


def previous_audited_checkpoint(engine: Engine, lineage_id: int, version: int) -> dict[str, Any] | None:
    """The lineage's checkpoint of highest version below ``version`` that an audit evaluated, or ``None``.

    Returns a dict with ``checkpoint_id``, ``sha256``, ``version`` and ``label``.
    """
    c, e = ModelCheckpoint, Evaluation
    audited = select(e.id).where(e.checkpoint_id == c.id, e.audit_run_id.is_not(None), e.status == "finished")
    with engine.connect() as connection:
        row = connection.execute(
            select(c.id, c.sha256, c.version, c.label)
            .where(c.lineage_id == int(lineage_id), c.version < int(version), audited.exists())
            .order_by(c.version.desc()).limit(1)
        ).first()
    if row is None:
        return None
    return {"checkpoint_id": int(row.id), "sha256": row.sha256, "version": int(row.version), "label": row.label}


def reference_checkpoint(engine: Engine, lineage_id: int, version: int | None = None) -> dict[str, Any] | None:
    """The lineage's reference: its checkpoint ``version`` (a pin), else its lowest version an audit evaluated.

    Returns a dict with ``checkpoint_id``, ``sha256``, ``version``, ``label``, ``path``, ``architecture``,
    ``num_classes`` and ``in_channels``, or ``None`` (no such version; with no pin, no audited version yet).
    """
    c, e = ModelCheckpoint, Evaluation
    query = select(c.id, c.sha256, c.version, c.label, c.path, c.architecture, c.num_classes, c.in_channels).where(
        c.lineage_id == int(lineage_id))
    if version is not None:
        query = query.where(c.version == int(version))
    else:
        audited = select(e.id).where(e.checkpoint_id == c.id, e.audit_run_id.is_not(None), e.status == "finished")
        query = query.where(audited.exists()).order_by(c.version).limit(1)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return {"checkpoint_id": int(row.id), "sha256": row.sha256, "version": int(row.version), "label": row.label,
            "path": row.path, "architecture": row.architecture, "num_classes": int(row.num_classes),
            "in_channels": None if row.in_channels is None else int(row.in_channels)}


def pin_lineage_reference(store: Store, name: str, *, version: int | None = None, alias: str | None = None) -> None:
    """Pin the reference of the lineage ``name``: one of its versions, or an MLflow alias; neither: unpin.

    Unpinned, the reference is the lineage's first audited version. An alias is stored as given (the audit
    resolves it each night); a version must be in the lineage.

    Raises
    ------
    StoreError
        When there is no lineage ``name``, ``version`` is not one of its versions, or both are given.
    """
    if version is not None and alias is not None:
        raise StoreError("Pin a version or an alias as the lineage's reference, not both.")
    with transaction(store) as connection:
        lineage_id = connection.scalar(select(Lineage.id).where(Lineage.name == name))
        if lineage_id is None:
            raise StoreError(f"No lineage named {name!r}; see `focus checkpoint list` for the lineages there are.")
        if version is not None:
            c = ModelCheckpoint
            held = connection.scalar(select(c.id).where(c.lineage_id == lineage_id, c.version == int(version)))
            if held is None:
                raise StoreError(f"Lineage {name!r} has no version {version}: pin one that `focus checkpoint list "
                                 f"--lineage {name}` shows.")
        pinned = version is not None or alias is not None
        connection.execute(update(Lineage).where(Lineage.id == lineage_id).values(
            reference_version=None if version is None else int(version), reference_alias=alias,
            reference_pinned_at=utcnow() if pinned else None))


def audit_evaluations(
    engine: Engine, checkpoint_id: int, method_id: int, *, before_audit_run: int | None = None
) -> list[AuditedEvaluation]:
    """The finished, unrandomized audit evaluations of a checkpoint with a method, newest audit first.

    ``before_audit_run`` leaves out that audit run and later ones (the previous audits of a run).
    The median is the one stored when the evaluation finished.
    """
    e = Evaluation
    query = select(e.id, e.checkpoint_id, e.method_id, e.mosaic_set_id, e.audit_run_id, e.focus_median).where(
        e.checkpoint_id == int(checkpoint_id), e.method_id == int(method_id), e.audit_run_id.is_not(None),
        e.status == "finished", e.randomization == "none",
    )
    if before_audit_run is not None:
        query = query.where(e.audit_run_id < int(before_audit_run))
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(e.audit_run_id.desc(), e.id.desc())).all()
    return [AuditedEvaluation(int(r.id), int(r.checkpoint_id), int(r.method_id), int(r.mosaic_set_id),
                              int(r.audit_run_id), None if r.focus_median is None else float(r.focus_median))
            for r in rows]
