"""The input pipeline functions of V's and M's :class:`wm.training.trainer.Task`: one reader of a split,
fed per replica through the strategy's input context, or, when training with ``--deterministic``, as the one
single-process pipeline of global batches cut into this worker's replica shares (:mod:`wm.training.deterministic`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from wm.training import deterministic
from wm.training.supervised import TrainFlags
from wm.training.trainer import DatasetFn

# read(batch size, input context or None) -> the split's batches (None: the whole pipeline, unsharded)
Reader = Callable[[int, tf.distribute.InputContext | None], tf.data.Dataset]


def dataset_fn(read: Reader, cfg: TrainFlags, train: bool, eval_rows: int = 0) -> DatasetFn:
    """The ``Task.train_data`` (``train``) or ``Task.eval_data`` function over ``read``.

    Each input pipeline reads its per-replica share of ``cfg.batch_size`` through its input context;
    a held-out split of ``eval_rows`` (> 0) examples reads smaller batches when it holds less than one
    per replica (else it would give no batch at all). Training with ``cfg.deterministic``: every worker
    reads the single-process pipeline of global batches and keeps its replicas' rows, each share with
    the key of its sampling noise (:func:`wm.training.deterministic.replica_shares`).
    """

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        if not (train and cfg.deterministic):
            per_replica = ctx.get_per_replica_batch_size(cfg.batch_size)
            if not train and eval_rows:
                per_replica = max(1, min(per_replica, eval_rows // ctx.num_replicas_in_sync))
            return read(per_replica, ctx)
        ds = read(cfg.batch_size, None)
        assert cfg.seed is not None  # check_train_flags: --deterministic needs --seed
        return deterministic.replica_shares(ds, cfg.seed, ctx)

    return fn
