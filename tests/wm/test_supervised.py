"""V/M training (wm.training.trainer, wm.training.supervised): distributed gradients equal single-device ones;
NaN stops without saving; the run's phases called one by one."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from wm.core import distribute
from wm.core import workdir as wdir
from wm.models import vae
from wm.training import supervised
from wm.training.trainer import LoopConfig, Task, Trainer

GLOBAL_BATCH = 8


def _vae_task(frames):
    def data(ctx):
        per_replica = ctx.get_per_replica_batch_size(GLOBAL_BATCH)
        return tf.data.Dataset.from_tensor_slices(frames).batch(per_replica, drop_remainder=True).repeat()

    return Task(
        name="vae",
        arch={},
        model_fn=lambda policy: vae.ConvVAE(dtype_policy=policy),
        loss_fn=lambda m, x, training: vae.loss_terms(m, x, training=training, sample=False),
        train_data=data,
        optimizer_fn=lambda lr: keras.optimizers.SGD(lr),
    )


def _first_update(strategy, frames, weights, clip_norm=None):
    setup = distribute.setup(strategy, mixed_precision="off", jit_compile="off")
    cfg = LoopConfig(workdir="unused", steps=1, batch_size=GLOBAL_BATCH, learning_rate=1.0, clip_norm=clip_norm)
    task = _vae_task(frames)
    trainer = Trainer(task, setup, cfg)
    trainer.model.set_weights(weights)
    iterator = iter(setup.strategy.distribute_datasets_from_function(task.train_data))
    terms = trainer.train_steps(iterator, tf.constant(1, tf.int64))
    # SGD with learning rate 1: the update is minus the gradient.
    return setup.num_replicas, float(terms["loss"]), [w0 - w1 for w0, w1 in zip(weights, trainer.model.get_weights())]


@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_mirrored_first_step_gradients_match_single_device(clip_norm):
    frames = np.random.default_rng(0).integers(0, 256, (GLOBAL_BATCH, 64, 64, 3), dtype=np.uint8)
    weights = vae.ConvVAE().get_weights()
    n1, loss1, g1 = _first_update("default", frames, weights, clip_norm)
    n2, loss2, g2 = _first_update("mirrored", frames, weights, clip_norm)
    assert (n1, n2) == (1, 2)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-5)
    scale = max(float(np.abs(g).max()) for g in g1)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * scale)
    if clip_norm:
        norm = np.sqrt(sum(float(np.sum(np.square(g))) for g in g2))
        np.testing.assert_allclose(norm, clip_norm, rtol=1e-4)


def test_nan_loss_stops_without_checkpoint(tmp_path):
    x = np.ones((64, 4), np.float32)
    x[28:] = np.nan  # step 8 (rows 28..31) is the first NaN batch of 4

    def model_fn(policy):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, dtype=policy)])
        return model

    task = Task(
        name="toy",
        arch={"units": 1},
        model_fn=model_fn,
        loss_fn=lambda m, b, training: {"loss": tf.reduce_sum(tf.square(m(b) - 1.0), axis=-1)},
        train_data=lambda ctx: tf.data.Dataset.from_tensor_slices(x).batch(4).repeat(),
    )
    setup = distribute.setup("default", mixed_precision="off", jit_compile="off")
    cfg = LoopConfig(
        workdir=str(tmp_path), steps=12, batch_size=4, steps_per_loop=3, log_every=3, checkpoint_every=3, progress=False
    )
    with pytest.raises(supervised.DivergedError, match="diverged.*ckpt-6"):
        supervised.run(task, setup, cfg)
    assert wdir.latest_checkpoint(str(tmp_path)).endswith("ckpt-6")
    assert max(m["step"] for m in wdir.read_metrics(str(tmp_path))) == 6


def test_the_run_phases_called_one_by_one(tmp_path):
    """SupervisedRunner's phases alone: each segment ends at the next boundary (log, checkpoint) and does what is
    due there; a new runner resumes from the checkpoint."""
    x = np.ones((64, 4), np.float32)
    task = Task(
        name="toy",
        arch={"units": 1},
        model_fn=lambda policy: keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, dtype=policy)]),
        loss_fn=lambda m, b, training: {"loss": tf.reduce_sum(tf.square(m(b) - 1.0), axis=-1)},
        train_data=lambda ctx: tf.data.Dataset.from_tensor_slices(x).batch(4).repeat(),
    )
    setup = distribute.setup("default", mixed_precision="off", jit_compile="off")
    cfg = LoopConfig(
        workdir=str(tmp_path), steps=10, batch_size=4, steps_per_loop=3, log_every=2, checkpoint_every=5, progress=False
    )
    runner = supervised.SupervisedRunner(task, setup, cfg)
    runner.prepare()
    assert runner.restore() == 0 and runner.manager.latest_checkpoint is None
    runner.open_input()
    with runner.session():
        boundaries = []
        for _ in range(3):
            boundaries.append(runner.next_boundary())
            terms = runner.run_one_segment()
            assert runner.step == boundaries[-1] and np.isfinite(terms["loss"])
    assert boundaries == [2, 4, 5]  # log, log, checkpoint (steps_per_loop 3 is never reached first)
    assert runner.result["train"] and not runner.result["eval"]
    assert [m["step"] for m in wdir.read_metrics(str(tmp_path))] == [2, 4]
    assert wdir.latest_checkpoint(str(tmp_path)).endswith("ckpt-5")
    again = supervised.SupervisedRunner(task, setup, cfg)
    again.prepare()
    assert again.restore() == 5


def test_inference_threads_one_only_when_workers_fill_a_cpu_only_machine():
    assert distribute.inference_threads(2, cores=2, accelerator=False) == 1
    assert distribute.inference_threads(4, cores=2, accelerator=False) == 1
    assert distribute.inference_threads(1, cores=2, accelerator=False) == 0  # a core is free: TF's default
    assert distribute.inference_threads(8, cores=8, accelerator=True) == 0  # inference runs on the GPU
    assert distribute.inference_threads(1, threads=3, cores=2, accelerator=False) == 3
    with pytest.raises(ValueError):
        distribute.inference_threads(2, threads=-1)


def test_set_inference_threads_before_and_after_tensorflow_starts():
    code = (
        "import tensorflow as tf\n"
        "from wm.core import distribute\n"
        "print(distribute.set_inference_threads(2, 1), tf.config.threading.get_intra_op_parallelism_threads())\n"
        "tf.constant(1.0) + 1.0\n"
        "print(distribute.set_inference_threads(2, 3), tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.split()
    assert out == ["1", "1", "0", "1"]  # set before the first op; kept (and reported as not applied) after
