"""Fully random networks shared by checkpoints: one measurement reused, never computed twice.

A fully random model's weights depend on its architecture and the seed only
(:func:`focus_core.randomize.randomize_full`), so the ``full`` randomization of two checkpoints of one architecture
(same class count and input channels) with the same seed is one network. Its evaluation under the same method and
mosaic set gives the same numbers whichever checkpoint it was reached from. Each checkpoint keeps an evaluation of
its own (every stored key stays valid), and the second one is filled with the first one's rows instead of being
computed again: :func:`shared_network_twin` finds the finished evaluation of the same network,
:func:`copy_results` copies its rows. Readers that summarise random models over checkpoints count such a network once.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from db.transactions import Store, idempotent

__all__ = ["copy_results", "shared_network_twin"]

_TWIN = text(
    """
    SELECT other.id
    FROM evaluation AS this
    JOIN model_checkpoint AS this_checkpoint ON this_checkpoint.id = this.checkpoint_id
    JOIN evaluation AS other
      ON other.method_id = this.method_id AND other.mosaic_set_id = this.mosaic_set_id
     AND other.randomization = 'full' AND other.seed = this.seed AND other.status = 'finished'
     AND other.checkpoint_id <> this.checkpoint_id
    JOIN model_checkpoint AS other_checkpoint ON other_checkpoint.id = other.checkpoint_id
    WHERE this.id = :evaluation_id AND this.randomization = 'full'
      AND other_checkpoint.architecture = this_checkpoint.architecture
      AND other_checkpoint.num_classes = this_checkpoint.num_classes
      AND COALESCE(other_checkpoint.in_channels, -1) = COALESCE(this_checkpoint.in_channels, -1)
    ORDER BY other.id
    LIMIT 1
    """
)

_COPY_RESULTS = text(
    """
    INSERT INTO mosaic_result (evaluation_id, mosaic_id, pos_tl, pos_tr, pos_bl, pos_br, neg_tl, neg_tr, neg_bl,
                               neg_br, focus, predicted_class)
    SELECT :target, source.mosaic_id, source.pos_tl, source.pos_tr, source.pos_bl, source.pos_br, source.neg_tl,
           source.neg_tr, source.neg_bl, source.neg_br, source.focus, source.predicted_class
    FROM mosaic_result AS source
    WHERE source.evaluation_id = :source
      AND NOT EXISTS (SELECT 1 FROM mosaic_result AS done
                      WHERE done.evaluation_id = :target AND done.mosaic_id = source.mosaic_id)
    """
)

_COPY_TILES = text(
    """
    INSERT INTO mosaic_result_tile (evaluation_id, mosaic_id, position, positive, negative)
    SELECT :target, source.mosaic_id, source.position, source.positive, source.negative
    FROM mosaic_result_tile AS source
    WHERE source.evaluation_id = :source
      AND NOT EXISTS (SELECT 1 FROM mosaic_result_tile AS done
                      WHERE done.evaluation_id = :target AND done.mosaic_id = source.mosaic_id
                        AND done.position = source.position)
    """
)


def shared_network_twin(store: Store, evaluation_id: int) -> int | None:
    """The finished evaluation that measured this ``full`` evaluation's network on another checkpoint, or ``None``.

    The twin has the same method, mosaic set and seed, and its checkpoint the same architecture, class count and
    input channels; the oldest such evaluation is returned. ``None`` for an evaluation that is not a ``full``
    randomization.

    Examples
    --------
    >>> shared_network_twin(engine, 12)  # doctest: +SKIP
    7
    """

    params = {"evaluation_id": int(evaluation_id)}
    if isinstance(store, Engine):
        with store.connect() as connection:
            found = connection.execute(_TWIN, params).scalar()
    else:
        found = store.execute(_TWIN, params).scalar()
    return None if found is None else int(found)


def copy_results(store: Store, source: int, target: int) -> int:
    """Copy evaluation ``source``'s per-mosaic rows (and per-tile sums) into ``target``; return the rows added.

    Rows ``target`` already has are kept, so a second call adds nothing. The caller closes ``target`` as usual,
    which computes its statistics from the copied rows.

    Examples
    --------
    >>> copy_results(engine, 7, 12)  # doctest: +SKIP
    200
    """

    def work(connection) -> int:
        params = {"source": int(source), "target": int(target)}
        connection.execute(_COPY_TILES, params)
        return int(connection.execute(_COPY_RESULTS, params).rowcount or 0)

    return idempotent(store, work)
