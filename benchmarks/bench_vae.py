"""VAE training throughput on this machine: our train step vs idiomatic PyTorch, and the input pipeline.

    python benchmarks/bench_vae.py                      # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_vae.py --rounds=5 --steps=20 --data=runs/demo/rollouts

Measures, in one process with interleaved rounds (so load from other processes hits both):

* ``tf step``: ``wm.training.trainer.Trainer.train_steps`` (the exact step ``python -m wm.train_vae``
  runs: the paper's VAE, Adam, per-replica loss over the global batch, ``--steps_per_loop``
  steps per call) on an in-memory batch;
* ``torch step``: the same network, loss and optimizer written the usual PyTorch way, with
  PyTorch's default thread count and with one thread (OpenMP's spinning threads collapse when
  other processes share the cores, so the ratio is also given against the faster of the two);
* ``pipeline``: ``tfrecords.frames_dataset`` alone (read, decompress, parse, shuffle, batch),
  a fresh iterator per round, so filling the 10k-frame shuffle buffer is included;
* ``end to end``: the TF step fed by the pipeline;
* with ``--binary``: ``python -m wm.train_vae`` itself at its defaults (input pipeline, logging,
  per-epoch held-out evaluation, checkpoints and export included), again with ``--eval_shards=0``, and
  (synthetic data only) on the 2-shard data this benchmark used before, where the held-out half was
  evaluated every 20 steps, and (on a CPU with bfloat16 units) with ``--mixed_precision=bfloat16``, as
  the pipeline's presets train V there,
  each as two subprocesses of ``--binary_steps`` (10 and 130 by default) whose difference cancels the
  start-up: images/s = (130 - 10) x batch / (time of the 130-step run - time of the 10-step run). (Until
  2026-12-07, 10 and 70: one round in three could read half the rate.)

Prints images/s (median over rounds) for each and the TF/PyTorch ratio. Without ``--data`` it
writes a synthetic rollout dataset (compressible frames, like CarRacing's) to a temp dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import


import numpy as np


def synthetic_rollouts(out_dir: str, episodes: int = 24, length: int = 250, per_shard: int = 2) -> str:
    """Writes CarRacing-like frames (flat grass and road with noise) as a rollout dataset.

    The default is shaped like the pipeline's random rollouts (120 episodes in 12 shards, so
    ``wm.train_vae``'s default ``--eval_shards=1`` holds out 1/12 of the frames), at a quarter of their
    length per episode and a twentieth of their frames."""
    from tfrecords import schema, writer

    rng = np.random.default_rng(0)
    plans = writer.plan_shards(episodes, per_shard, "rollouts")
    run = writer.ShardedRun(
        out_dir, schema.KIND_ROLLOUTS, {"synthetic": True, "episodes": episodes, "length": length}, plans
    )
    if run.prepare():
        return out_dir
    cols = np.arange(64)
    for plan in run.pending():
        eps = []
        for _ in plan.items:
            frames = np.empty((length, 64, 64, 3), np.uint8)
            frames[:] = (102, 204, 102)
            for t in range(length):
                center = 32 + int(12 * np.sin(t / 40))
                road = np.abs(cols - center) < 10
                frames[t, :, road] = (105, 105, 105)
                frames[t, 54:, :] = 0
            frames = np.clip(frames + rng.integers(0, 3, frames.shape), 0, 255).astype(np.uint8)
            eps.append(
                schema.Episode(
                    actions=np.zeros((length, 3), np.float32),
                    rewards=np.zeros(length, np.float32),
                    terminals=np.zeros(length, np.int64),
                    seed=0,
                    frames=frames,
                )
            )
        writer.write_shard(out_dir, plan, eps)
    run.finalize({"frame_shape": list(schema.FRAME_SHAPE)})
    return out_dir


def torch_vae():
    """The paper's VAE in idiomatic PyTorch (NCHW, channels as the conv layout wants)."""
    import torch
    from torch import nn

    def conv_relu(conv, layers):
        """Each (in, out, kernel) as a stride-2 ``conv`` followed by a ReLU."""
        return [m for i, o, k in layers for m in (conv(i, o, k, 2), nn.ReLU())]

    class VAE(nn.Module):
        def __init__(self, z: int = 32):
            super().__init__()
            enc = [(3, 32, 4), (32, 64, 4), (64, 128, 4), (128, 256, 4)]  # (in, out, kernel), stride 2
            dec = [(1024, 128, 5), (128, 64, 5), (64, 32, 6), (32, 3, 6)]
            self.enc = nn.Sequential(*conv_relu(nn.Conv2d, enc), nn.Flatten())
            self.mu, self.logvar = nn.Linear(1024, z), nn.Linear(1024, z)
            self.fc = nn.Linear(z, 1024)
            self.dec = nn.Sequential(*conv_relu(nn.ConvTranspose2d, dec)[:-1], nn.Sigmoid())

        def forward(self, frames):
            x = frames.permute(0, 3, 1, 2).float() / 255.0
            h = self.enc(x)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            recon = self.dec(self.fc(z).view(-1, 1024, 1, 1))
            r = ((x - recon) ** 2).sum(dim=(1, 2, 3))
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).clamp(min=0.5 * 32)
            return (r + kl).mean()

    model = VAE()
    assert sum(p.numel() for p in model.parameters()) == 4_348_547
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(frames):
        opt.zero_grad(set_to_none=True)
        loss = model(frames)
        loss.backward()
        opt.step()
        return loss

    return step


def binary_rate(data: str, batch: int, steps: tuple[int, int], extra: list[str]) -> float:
    """Images/s of ``python -m wm.train_vae`` on ``data``: two runs from nothing, start-up cancelled."""
    times = []
    for n in steps:
        workdir = tempfile.mkdtemp(prefix="bench_vae_bin")
        args = [sys.executable, "-m", "wm.train_vae", f"--data={data}", f"--workdir={workdir}", f"--steps={n}"]
        t0 = time.perf_counter()
        subprocess.run(
            [*args, f"--batch_size={batch}", "--noprogress", *extra],
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            capture_output=True,
        )
        times.append(time.perf_counter() - t0)
        shutil.rmtree(workdir, ignore_errors=True)
    return (steps[1] - steps[0]) * batch / (times[1] - times[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--steps", type=int, default=8, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps_per_loop", type=int, default=10)
    p.add_argument("--data", default="", help="rollout shards (default: synthetic)")
    p.add_argument("--binary", action="store_true", help="also time python -m wm.train_vae end to end")
    p.add_argument("--binary_steps", default="10,130", help="the two runs' --steps for --binary")
    args = p.parse_args()

    import tensorflow as tf
    import torch

    import tfrecords
    from wm.core import distribute
    from wm.models import vae
    from wm.training.trainer import LoopConfig, Task, Trainer

    data = args.data or synthetic_rollouts(os.path.join(tempfile.gettempdir(), "bench_vae_rollouts_12"))
    b = args.batch_size
    frames = next(iter(tfrecords.frames_dataset(data, b, seed=0))).numpy()

    setup = distribute.setup("default", mixed_precision="auto", jit_compile="auto")

    def make_trainer(dataset_fn):
        task = Task(
            "vae",
            {},
            lambda pol: vae.ConvVAE(dtype_policy=pol),
            lambda m, x, t: vae.loss_terms(m, x, training=t),
            dataset_fn,
        )
        trainer = Trainer(
            task, setup, LoopConfig(workdir="", steps=1, batch_size=b, steps_per_loop=args.steps_per_loop)
        )
        return trainer, iter(setup.strategy.distribute_datasets_from_function(dataset_fn))

    mem_trainer, mem_it = make_trainer(lambda ctx: tf.data.Dataset.from_tensors(tf.constant(frames)).repeat())
    e2e_trainer, e2e_it = make_trainer(lambda ctx: tfrecords.frames_dataset(data, b, input_context=ctx))
    torch_step = torch_vae()
    torch_frames = torch.from_numpy(frames)
    default_threads = torch.get_num_threads()

    def tf_loop(trainer, it):
        def go():
            done = 0
            while done < args.steps:
                n = min(args.steps_per_loop, args.steps - done)
                float(trainer.train_steps(it, tf.constant(n, tf.int64))["loss"])
                done += n

        return go

    def torch_loop(threads):
        def go():
            torch.set_num_threads(threads)
            for _ in range(args.steps):
                torch_step(torch_frames)
            torch.set_num_threads(default_threads)

        return go

    def pipe_loop():
        # A fresh, bounded iterator each round (startup and shuffle-buffer fill included): a
        # long-lived one would refill its buffers in the background during the next timing.
        for _ in tfrecords.frames_dataset(data, b).take(args.steps * 20):
            pass

    runs = {
        "tf step": (tf_loop(mem_trainer, mem_it), args.steps),
        "torch step": (torch_loop(default_threads), args.steps),
        "torch 1 thread": (torch_loop(1), args.steps),
        "pipeline": (pipe_loop, args.steps * 20),
        "end to end": (tf_loop(e2e_trainer, e2e_it), args.steps),
    }
    short, long = (int(v) for v in args.binary_steps.split(","))
    binaries = {"binary": (data, []), "binary, no eval": (data, ["--eval_shards=0"])} if args.binary else {}
    if args.binary and not args.data:
        # the data this benchmark used before 2026-12-07: 2 shards, so the default held out half the frames
        # and evaluated them every 20 steps
        half = synthetic_rollouts(os.path.join(tempfile.gettempdir(), "bench_vae_rollouts"), 8, 500, 4)
        binaries["binary, half held out"] = (half, [])
    if args.binary and distribute.cpu_has_bfloat16():
        # what the pipeline's presets run V with on such a CPU (PyTorch's step here stays float32)
        binaries["binary, bfloat16"] = (data, ["--mixed_precision=bfloat16"])
    for fn, _ in runs.values():  # warm up: trace, allocate, fill buffers
        fn()
    rates = {k: [] for k in runs}
    for r in range(args.rounds):
        for name, (fn, steps) in runs.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(steps * b / (time.perf_counter() - t0))
        for name, (binary_data, extra) in binaries.items():
            rates.setdefault(name, []).append(binary_rate(binary_data, b, (short, long), extra))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"\nVAE training, batch {b}, {os.cpu_count()} CPUs, TF {tf.__version__} "
        f"({setup.dtype_policy}, jit={setup.jit_compile}), torch {torch.__version__}"
    )
    print(f"  TensorFlow train step (wm.training.supervised): {med['tf step']:7.0f} img/s")
    print(f"  PyTorch train step ({default_threads} threads):       {med['torch step']:7.0f} img/s")
    print(f"  PyTorch train step (1 thread):        {med['torch 1 thread']:7.0f} img/s")
    best = max(med["torch step"], med["torch 1 thread"])
    print(f"  ratio TF / PyTorch (default threads): {med['tf step'] / med['torch step']:7.2f}x")
    print(f"  ratio TF / best PyTorch:              {med['tf step'] / best:7.2f}x")
    print(f"  frames_dataset alone:                 {med['pipeline']:7.0f} img/s")
    print(f"  TF step fed by frames_dataset:        {med['end to end']:7.0f} img/s")
    for name in binaries:
        ratio = med[name] / med["torch step"]
        print(f"  python -m wm.train_vae ({name}): {med[name]:7.0f} img/s, {ratio:.2f}x PyTorch (default threads)")
    bound = "the train step (the pipeline is faster)" if med["pipeline"] > med["tf step"] else "the input pipeline"
    print(f"  training is bound by {bound}")


if __name__ == "__main__":
    main()
