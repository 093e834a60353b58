"""Train-step time of V and M with and without XLA (``--jit_compile``) on this machine, same run.

    python benchmarks/bench_xla.py --rounds=3

Both sides run the exact step ``python -m wm.train_vae`` / ``wm.train_mdnrnn`` run
(``wm.training.trainer.Trainer.train_steps``, ``--steps_per_loop`` steps per call) on the same
in-memory batches; rounds alternate between the default step and the XLA one, each after its own
warm-up call (compilation is not timed). Medians and the XLA/default ratio are printed per model.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries
__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import

import keras
import numpy as np
import tensorflow as tf

from wm.core import distribute
from wm.models import mdnrnn, vae
from wm.training.trainer import LoopConfig, Task, Trainer

VAE_BATCH, M_BATCH, SEQ_LEN = 32, 8, 100  # V: frames; M: sequences of SEQ_LEN + 1 steps


def vae_task(batch: int) -> Task:
    frames = np.random.default_rng(0).integers(0, 256, (4 * batch, 64, 64, 3), dtype=np.uint8)
    data = lambda ctx: tf.data.Dataset.from_tensor_slices(frames).batch(batch, drop_remainder=True).repeat()  # noqa: E731
    loss = lambda m, x, training: vae.loss_terms(m, x, training=training)  # noqa: E731
    return Task("vae", {}, lambda p: vae.ConvVAE(dtype_policy=p), loss, data)


def mdnrnn_task(batch: int, seq_len: int) -> Task:
    rng = np.random.default_rng(0)
    d = {
        "mu": rng.normal(size=(4 * batch, seq_len + 1, 32)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (4 * batch, seq_len + 1, 3)).astype(np.float32),
        "mask": np.ones((4 * batch, seq_len + 1), np.float32),
    }
    data = lambda ctx: tf.data.Dataset.from_tensor_slices(d).batch(batch, drop_remainder=True).repeat()  # noqa: E731

    def loss(m, b, training):
        return mdnrnn.sequence_loss_terms(m, b["mu"], b["actions"], b["mask"], training=training)

    model = lambda p: mdnrnn.MDNRNN(dtype_policy=p, use_cudnn=False)  # noqa: E731  (the kernel XLA compiles)
    return Task("mdnrnn", {}, model, loss, data)


def timed_step(task: Task, batch: int, policy: str, jit: bool, steps: int):
    """A function that runs ``steps`` train steps in one call and returns the seconds per step."""
    setup = distribute.Setup(tf.distribute.get_strategy(), "CPU", policy, jit)
    cfg = LoopConfig(workdir="unused", steps=steps, batch_size=batch, steps_per_loop=steps)
    trainer = Trainer(task, setup, cfg)
    it = iter(setup.strategy.distribute_datasets_from_function(task.train_data))
    n = tf.constant(steps, tf.int64)
    float(trainer.train_steps(it, n)["loss"])  # compile and warm up

    def run() -> float:
        t = time.perf_counter()
        float(trainer.train_steps(it, n)["loss"])
        return (time.perf_counter() - t) / steps

    return run


def main() -> None:
    """Parse arguments, run the alternating rounds, print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="train steps per timed call (--steps_per_loop)")
    p.add_argument("--policy", default="float32", help="Keras dtype policy: float32 or mixed_bfloat16")
    a = p.parse_args()
    keras.utils.set_random_seed(0)
    cases = {"V": (vae_task(VAE_BATCH), VAE_BATCH), "M": (mdnrnn_task(M_BATCH, SEQ_LEN), M_BATCH)}
    for name, (task, batch) in cases.items():
        fns = {jit: timed_step(task, batch, a.policy, jit, a.steps) for jit in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(a.rounds):
            for jit in (False, True):
                times[jit].append(fns[jit]())
            ms = {jit: times[jit][-1] * 1e3 for jit in (False, True)}
            print(f"{name} round {r}: default {ms[False]:.1f} ms/step, XLA {ms[True]:.1f} ms/step")
        d, x = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name}: default {d * 1e3:.1f} ms/step, XLA {x * 1e3:.1f} ms/step; XLA/default {x / d:.2f}x "
              f"(batch {batch}, {a.policy}, {a.steps} steps per call)")  # fmt: skip


if __name__ == "__main__":
    main()
