"""Initial schema: tables and the views for plain SQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Views (portable SQL that runs on PostgreSQL and SQLite >= 3.28):

- ``evaluation_summary``: one row per evaluation with n, n_defined, mean, median, quartiles,
  min, max of Focus and the mosaic accuracy (share of mosaics predicted as their target class).
  Neither database shares a percentile function (SQLite has none), so quantiles use the
  ROW_NUMBER trick: rank the defined Focus values of each evaluation, then interpolate linearly
  between ranks ``floor(p * (n - 1)) + 1`` and the next one, with integer arithmetic for the
  rank and ``((p * (n - 1)) mod 1)`` as the weight. This is numpy's default ("linear") quantile.
- ``training_epoch_focus``: the metrics of every epoch with its training run's name.
- ``audit_history``: finished, non-randomized evaluations recorded by an audit run, with the
  previous audit's median and the change since then (LAG over checkpoint x method x mosaic set,
  ordered by the audit's start time).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _quantile(p_num: int, p_den: int, alias: str) -> str:
    """Linear-interpolation quantile p = p_num / p_den over ranked rows ``rn`` of ``cnt`` values."""
    pos = f"({p_num} * (cnt - 1))"
    return (
        f"CAST(SUM(CASE WHEN rn = {pos} / {p_den} + 1 THEN focus * (1 - ({pos} % {p_den}) / {p_den}.0) "
        f"WHEN rn = {pos} / {p_den} + 2 THEN focus * (({pos} % {p_den}) / {p_den}.0) "
        f"ELSE 0 END) AS DOUBLE PRECISION) AS {alias}"
    )


EVALUATION_SUMMARY = f"""
CREATE VIEW evaluation_summary AS
WITH ranked AS (
    SELECT evaluation_id, focus,
           ROW_NUMBER() OVER (PARTITION BY evaluation_id ORDER BY focus) AS rn,
           COUNT(*) OVER (PARTITION BY evaluation_id) AS cnt
    FROM mosaic_result
    WHERE focus IS NOT NULL
),
quantiles AS (
    SELECT evaluation_id,
           {_quantile(1, 4, "q1_focus")},
           {_quantile(1, 2, "median_focus")},
           {_quantile(3, 4, "q3_focus")}
    FROM ranked
    GROUP BY evaluation_id
),
counts AS (
    SELECT r.evaluation_id,
           COUNT(*) AS n,
           COUNT(r.focus) AS n_defined,
           CAST(AVG(r.focus) AS DOUBLE PRECISION) AS mean_focus,
           MIN(r.focus) AS min_focus,
           MAX(r.focus) AS max_focus,
           CAST(AVG(CASE WHEN r.predicted_class = m.target_class THEN 1.0 ELSE 0.0 END)
                AS DOUBLE PRECISION) AS mosaic_accuracy
    FROM mosaic_result r
    JOIN mosaic m ON m.id = r.mosaic_id
    GROUP BY r.evaluation_id
)
SELECT e.id AS evaluation_id, e.checkpoint_id, e.method_id, e.mosaic_set_id,
       e.randomization, e.stage, e.layer, e.audit_run_id, e.status,
       COALESCE(c.n, 0) AS n, COALESCE(c.n_defined, 0) AS n_defined,
       c.mean_focus, q.median_focus, q.q1_focus, q.q3_focus, c.min_focus, c.max_focus,
       c.mosaic_accuracy
FROM evaluation e
LEFT JOIN counts c ON c.evaluation_id = e.id
LEFT JOIN quantiles q ON q.evaluation_id = e.id
"""

TRAINING_EPOCH_FOCUS = """
CREATE VIEW training_epoch_focus AS
SELECT t.id AS training_run_id, t.name AS training_run_name, t.architecture, t.config_hash,
       te.epoch, te.train_loss, te.train_accuracy, te.val_loss, te.val_accuracy,
       te.val_mean_class_accuracy, te.focus_median, te.focus_mean, te.seconds
FROM training_epoch te
JOIN training_run t ON t.id = te.training_run_id
"""

AUDIT_HISTORY = """
CREATE VIEW audit_history AS
SELECT a.id AS audit_run_id, a.name AS audit_name, a.started_at AS audit_started_at,
       s.evaluation_id, s.checkpoint_id, c.label AS checkpoint_label, c.architecture,
       s.method_id, m.name AS method_name, s.mosaic_set_id,
       s.n, s.n_defined, s.median_focus, s.mean_focus,
       LAG(a.id) OVER w AS previous_audit_run_id,
       LAG(s.evaluation_id) OVER w AS previous_evaluation_id,
       LAG(s.median_focus) OVER w AS previous_median_focus,
       s.median_focus - LAG(s.median_focus) OVER w AS median_change,
       s.mean_focus - LAG(s.mean_focus) OVER w AS mean_change
FROM evaluation_summary s
JOIN audit_run a ON a.id = s.audit_run_id
JOIN model_checkpoint c ON c.id = s.checkpoint_id
JOIN xai_method m ON m.id = s.method_id
WHERE s.randomization = 'none' AND s.status = 'finished'
WINDOW w AS (PARTITION BY s.checkpoint_id, s.method_id, s.mosaic_set_id ORDER BY a.started_at, a.id)
"""

VIEWS = (("evaluation_summary", EVALUATION_SUMMARY), ("training_epoch_focus", TRAINING_EPOCH_FOCUS),
         ("audit_history", AUDIT_HISTORY))


def upgrade() -> None:
    op.create_table('audit_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('threshold', sa.Double(), nullable=True),
    sa.Column('started_at', db.types.UTCDateTime(), nullable=False),
    sa.Column('finished_at', db.types.UTCDateTime(), nullable=True),
    sa.Column('metadata', db.types.JSONType, nullable=True),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name=op.f('ck_audit_run_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_run'))
    )
    op.create_table('dataset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('classes', db.types.JSONType, nullable=False),
    sa.Column('num_images', sa.Integer(), nullable=False),
    sa.Column('tile_size', sa.Integer(), nullable=True),
    sa.Column('channels', sa.Integer(), nullable=True),
    sa.Column('created_at', db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_dataset_fingerprint'))
    )
    op.create_table('xai_method',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('params', db.types.JSONType, nullable=False),
    sa.Column('params_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_xai_method')),
    sa.UniqueConstraint('params_hash', name=op.f('uq_xai_method_params_hash'))
    )
    op.create_table('image',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('relpath', sa.Text(), nullable=False),
    sa.Column('label', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=8), nullable=False),
    sa.CheckConstraint("split IN ('train', 'val', 'test')", name=op.f('ck_image_split')),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'],
                            name=op.f('fk_image_dataset_id_dataset'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image')),
    sa.UniqueConstraint('dataset_id', 'position', name=op.f('uq_image_dataset_id_position')),
    sa.UniqueConstraint('dataset_id', 'relpath', name=op.f('uq_image_dataset_id_relpath'))
    )
    op.create_table('mosaic_set',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('manifest_hash', sa.String(length=64), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=8), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('per_class', sa.Integer(), nullable=False),
    sa.Column('layout', sa.String(length=32), nullable=False),
    sa.Column('tile_size', sa.Integer(), nullable=True),
    sa.Column('num_mosaics', sa.Integer(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(), nullable=False),
    sa.CheckConstraint("split IN ('train', 'val', 'test')", name=op.f('ck_mosaic_set_split')),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], name=op.f('fk_mosaic_set_dataset_id_dataset')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mosaic_set')),
    sa.UniqueConstraint('manifest_hash', name=op.f('uq_mosaic_set_manifest_hash'))
    )
    op.create_table('training_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('architecture', sa.String(length=200), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('config', db.types.JSONType, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', db.types.UTCDateTime(), nullable=False),
    sa.Column('finished_at', db.types.UTCDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name=op.f('ck_training_run_status')),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], name=op.f('fk_training_run_dataset_id_dataset')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_run')),
    sa.UniqueConstraint('config_hash', name=op.f('uq_training_run_config_hash'))
    )
    op.create_table('model_checkpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('architecture', sa.String(length=200), nullable=False),
    sa.Column('num_classes', sa.Integer(), nullable=False),
    sa.Column('in_channels', sa.Integer(), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('training_run_id', sa.Integer(), nullable=True),
    sa.Column('epoch', sa.Integer(), nullable=True),
    sa.Column('audit', sa.Boolean(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('created_at', db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['training_run_id'], ['training_run.id'],
                            name=op.f('fk_model_checkpoint_training_run_id_training_run')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_checkpoint')),
    sa.UniqueConstraint('sha256', name=op.f('uq_model_checkpoint_sha256'))
    )
    op.create_table('mosaic',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mosaic_set_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_tl', sa.Integer(), nullable=False),
    sa.Column('image_tr', sa.Integer(), nullable=False),
    sa.Column('image_bl', sa.Integer(), nullable=False),
    sa.Column('image_br', sa.Integer(), nullable=False),
    sa.Column('target_class', sa.Integer(), nullable=False),
    sa.Column('target_mask', sa.Integer(), nullable=False),
    sa.CheckConstraint('target_mask BETWEEN 0 AND 15', name=op.f('ck_mosaic_target_mask')),
    sa.ForeignKeyConstraint(['image_bl'], ['image.id'], name=op.f('fk_mosaic_image_bl_image')),
    sa.ForeignKeyConstraint(['image_br'], ['image.id'], name=op.f('fk_mosaic_image_br_image')),
    sa.ForeignKeyConstraint(['image_tl'], ['image.id'], name=op.f('fk_mosaic_image_tl_image')),
    sa.ForeignKeyConstraint(['image_tr'], ['image.id'], name=op.f('fk_mosaic_image_tr_image')),
    sa.ForeignKeyConstraint(['mosaic_set_id'], ['mosaic_set.id'],
                            name=op.f('fk_mosaic_mosaic_set_id_mosaic_set'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mosaic')),
    sa.UniqueConstraint('mosaic_set_id', 'position', name=op.f('uq_mosaic_mosaic_set_id_position'))
    )
    op.create_table('training_epoch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('training_run_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('train_loss', sa.Double(), nullable=True),
    sa.Column('train_accuracy', sa.Double(), nullable=True),
    sa.Column('val_loss', sa.Double(), nullable=True),
    sa.Column('val_accuracy', sa.Double(), nullable=True),
    sa.Column('val_mean_class_accuracy', sa.Double(), nullable=True),
    sa.Column('focus_median', sa.Double(), nullable=True),
    sa.Column('focus_mean', sa.Double(), nullable=True),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.Column('recorded_at', db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['training_run_id'], ['training_run.id'],
                            name=op.f('fk_training_epoch_training_run_id_training_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_epoch')),
    sa.UniqueConstraint('training_run_id', 'epoch', name=op.f('uq_training_epoch_training_run_id_epoch'))
    )
    op.create_table('evaluation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('natural_key', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=False),
    sa.Column('method_id', sa.Integer(), nullable=False),
    sa.Column('mosaic_set_id', sa.Integer(), nullable=False),
    sa.Column('randomization', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=True),
    sa.Column('layer', sa.String(length=300), nullable=True),
    sa.Column('audit_run_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(), nullable=False),
    sa.Column('started_at', db.types.UTCDateTime(), nullable=True),
    sa.Column('finished_at', db.types.UTCDateTime(), nullable=True),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.Column('code_version', sa.String(length=100), nullable=True),
    sa.Column('device', sa.String(length=100), nullable=True),
    sa.Column('metadata', db.types.JSONType, nullable=True),
    sa.Column('n', sa.Integer(), nullable=True),
    sa.Column('n_defined', sa.Integer(), nullable=True),
    sa.Column('focus_median', sa.Double(), nullable=True),
    sa.Column('focus_mean', sa.Double(), nullable=True),
    sa.CheckConstraint("randomization IN ('none', 'full', 'cascading', 'independent')",
                            name=op.f('ck_evaluation_randomization')),
    sa.CheckConstraint("status IN ('pending', 'running', 'finished', 'failed')", name=op.f('ck_evaluation_status')),
    sa.ForeignKeyConstraint(['audit_run_id'], ['audit_run.id'], name=op.f('fk_evaluation_audit_run_id_audit_run')),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['model_checkpoint.id'],
                            name=op.f('fk_evaluation_checkpoint_id_model_checkpoint')),
    sa.ForeignKeyConstraint(['method_id'], ['xai_method.id'], name=op.f('fk_evaluation_method_id_xai_method')),
    sa.ForeignKeyConstraint(['mosaic_set_id'], ['mosaic_set.id'], name=op.f('fk_evaluation_mosaic_set_id_mosaic_set')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluation')),
    sa.UniqueConstraint('natural_key', name=op.f('uq_evaluation_natural_key'))
    )
    op.create_table('mosaic_result',
    sa.Column('evaluation_id', sa.Integer(), nullable=False),
    sa.Column('mosaic_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('pos_tl', sa.Double(), nullable=False),
    sa.Column('pos_tr', sa.Double(), nullable=False),
    sa.Column('pos_bl', sa.Double(), nullable=False),
    sa.Column('pos_br', sa.Double(), nullable=False),
    sa.Column('neg_tl', sa.Double(), nullable=False),
    sa.Column('neg_tr', sa.Double(), nullable=False),
    sa.Column('neg_bl', sa.Double(), nullable=False),
    sa.Column('neg_br', sa.Double(), nullable=False),
    sa.Column('focus', sa.Double(), nullable=True),
    sa.Column('predicted_class', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['evaluation_id'], ['evaluation.id'],
                            name=op.f('fk_mosaic_result_evaluation_id_evaluation'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('evaluation_id', 'mosaic_id', name=op.f('pk_mosaic_result'))
    )
    for _name, sql in VIEWS:
        op.execute(sql)


def downgrade() -> None:
    for name, _sql in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    op.drop_table('mosaic_result')
    op.drop_table('evaluation')
    op.drop_table('training_epoch')
    op.drop_table('mosaic')
    op.drop_table('model_checkpoint')
    op.drop_table('training_run')
    op.drop_table('mosaic_set')
    op.drop_table('image')
    op.drop_table('xai_method')
    op.drop_table('dataset')
    op.drop_table('audit_run')
