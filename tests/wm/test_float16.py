"""float16 loss scaling under MirroredStrategy on two logical CPUs: an overflow on one replica only skips
the step on both, keeps the weights finite and equal, and lowers the loss scale once."""

import keras
import numpy as np
import tensorflow as tf

from wm.core import distribute
from wm.training.trainer import LoopConfig, Task, Trainer

BATCH = 4


def _trainer():
    strategy = distribute.make_strategy("mirrored")
    setup = distribute.Setup(strategy, "CPU", "mixed_float16", False)
    assert setup.num_replicas == 2 and setup.loss_scaling
    inject = tf.Variable(False, trainable=False)  # overflow on replica 1 only, when set

    def model_fn(policy):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype=policy)])

    def loss_fn(model, x, training):
        y = tf.cast(model(x, training=training), tf.float32)
        per_example = tf.reduce_sum(tf.square(y - 1.0), axis=-1)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        boom = tf.logical_and(inject, tf.equal(replica, 1))
        return {"loss": per_example * tf.where(boom, tf.constant(float("inf")), 1.0)}

    def data(ctx):
        x = 0.01 * np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)  # no natural overflow
        return tf.data.Dataset.from_tensor_slices(x).batch(ctx.get_per_replica_batch_size(BATCH)).repeat()

    task = Task("toy", {}, model_fn, loss_fn, data, optimizer_fn=lambda lr: keras.optimizers.SGD(lr))
    cfg = LoopConfig(workdir="unused", steps=3, batch_size=BATCH, learning_rate=0.1)
    trainer = Trainer(task, setup, cfg)
    it = iter(strategy.distribute_datasets_from_function(task.train_data))
    return trainer, strategy, inject, it


def _replica_weights(strategy, model):
    return [[np.array(v) for v in strategy.experimental_local_results(w.value)] for w in model.weights]


def test_an_overflow_on_one_replica_skips_the_step_everywhere():
    trainer, strategy, inject, it = _trainer()
    opt = trainer.optimizer
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    scale0 = float(opt.dynamic_scale.numpy())
    trainer.train_steps(it, tf.constant(1, tf.int64))  # a normal step moves the weights
    before = _replica_weights(strategy, trainer.model)
    assert all(len(w) == 2 for w in before)  # one copy per replica
    assert float(opt.dynamic_scale.numpy()) == scale0

    inject.assign(True)
    trainer.train_steps(it, tf.constant(1, tf.int64))
    after = _replica_weights(strategy, trainer.model)
    for b, a in zip(before, after):
        for r in range(2):
            assert np.all(np.isfinite(a[r]))
            np.testing.assert_array_equal(a[r], b[r])  # skipped on both replicas
        np.testing.assert_array_equal(a[0], a[1])
    assert float(opt.dynamic_scale.numpy()) == scale0 / 2  # lowered once, not once per replica

    inject.assign(False)
    trainer.train_steps(it, tf.constant(1, tf.int64))
    moved = _replica_weights(strategy, trainer.model)
    assert any(not np.array_equal(m[0], a[0]) for m, a in zip(moved, after))
    for m in moved:
        np.testing.assert_array_equal(m[0], m[1])
    assert float(opt.dynamic_scale.numpy()) == scale0 / 2


def test_a_batch_the_replicas_do_not_divide_names_the_nearest_valid_sizes():
    import pytest

    from tfrecords.runtime.errors import UsageError

    strategy = distribute.make_strategy("mirrored")
    setup = distribute.Setup(strategy, "CPU", "float32", False)
    task = Task("toy", {}, lambda p: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), None, None)
    with pytest.raises(UsageError, match="--batch_size 5 is not divisible by the 2 replicas; use 4 or 6"):
        Trainer(task, setup, LoopConfig(workdir="unused", steps=1, batch_size=5))
