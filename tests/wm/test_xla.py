"""XLA (``--jit_compile=on``, the only way a TPU runs the step) and bfloat16 for V's and M's train steps on CPU:
the compiled steps train like the default ones, in float32 and bfloat16, several steps per call."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wm.core import distribute
from wm.models import mdnrnn, vae
from wm.training.trainer import LoopConfig, Task, Trainer

B = 4


def _vae_task(rng):
    frames = rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices(frames).batch(B, drop_remainder=True).repeat()

    return Task(
        "vae", {}, lambda p: vae.ConvVAE(dtype_policy=p),
        lambda m, x, training: vae.loss_terms(m, x, training=training, sample=False), data,
        optimizer_fn=lambda lr: keras.optimizers.SGD(lr),
    )  # fmt: skip


def _mdnrnn_task(rng):
    T = 12
    batch = {
        "mu": rng.normal(size=(16, T, 32)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (16, T, 3)).astype(np.float32),
        "mask": np.ones((16, T), np.float32),
    }
    batch["mask"][::3, 9:] = 0

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True).repeat()

    def loss(m, b, training):  # z = mu: deterministic, so both paths see the same numbers
        return mdnrnn.sequence_loss_terms(m, b["mu"], b["actions"], b["mask"], training=training)

    return Task(
        "mdnrnn", {}, lambda p: mdnrnn.MDNRNN(hidden=32, dtype_policy=p, use_cudnn=False), loss, data,
        optimizer_fn=lambda lr: keras.optimizers.SGD(lr),
    )  # fmt: skip


def _train(make_task, policy, jit, weights=None):
    task = make_task(np.random.default_rng(0))
    setup = distribute.Setup(tf.distribute.get_strategy(), "CPU", policy, jit)
    cfg = LoopConfig(workdir="unused", steps=3, batch_size=B, learning_rate=0.01, steps_per_loop=3)
    trainer = Trainer(task, setup, cfg)
    if weights is not None:
        trainer.model.set_weights(weights)
    start = [np.array(w) for w in trainer.model.get_weights()]
    it = iter(setup.strategy.distribute_datasets_from_function(task.train_data))
    terms = trainer.train_steps(it, tf.constant(3, tf.int64))
    return start, float(terms["loss"]), trainer.model.get_weights()


@pytest.mark.parametrize("make_task", [_vae_task, _mdnrnn_task], ids=["V", "M"])
@pytest.mark.parametrize("policy,jit", [("float32", True), ("mixed_bfloat16", True), ("mixed_bfloat16", False)])
def test_steps_train_like_the_default_float32_step(make_task, policy, jit):
    """float32 with XLA equals the default step; bfloat16, with XLA or without, matches the float32
    update in direction and size. (Without XLA, a bfloat16 last layer of V used to get its bias
    gradient, a sum over 64 x 64 x B pixels, ~4x too small; V's last layer now computes in float32.)"""
    start, loss_ref, ref = _train(make_task, "float32", jit=False)
    _, loss, got = _train(make_task, policy, jit=jit, weights=start)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-4 if policy == "float32" else 2e-2)
    # the update (not the weights, which dwarf it), as a direction and a size: a few of millions of
    # elements differ with the order of float sums
    want = np.concatenate([(r - s).ravel() for r, s in zip(ref, start)]).astype(np.float64)
    have = np.concatenate([(g - s).ravel() for g, s in zip(got, start)]).astype(np.float64)
    assert np.linalg.norm(want) > 0
    cosine = have @ want / (np.linalg.norm(have) * np.linalg.norm(want))
    ratio = np.linalg.norm(have) / np.linalg.norm(want)
    if policy == "float32":
        assert cosine > 0.99999 and abs(ratio - 1) < 1e-3, (cosine, ratio)
    else:
        assert cosine > 0.99 and abs(ratio - 1) < 0.1, (cosine, ratio)
