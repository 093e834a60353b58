"""M training throughput: our train step (wm.training.trainer + wm.models.mdnrnn) against PyTorch, same run.

    python benchmarks/bench_mdnrnn.py --batch=32 --seq_len=999

Both train the paper's MDN-RNN (LSTM 256 over [z, a], 5 Gaussians per latent dimension,
Adam, global-norm clipping at 1.0) on the same in-memory batch of latent windows, so the input
pipeline is out of the picture. The PyTorch side is the idiomatic one: ``nn.LSTM`` +
``nn.Linear``, log-softmax + Normal log-density + logsumexp. Rounds alternate between the
two; medians and their ratio are printed. Needs ``pip install torch==2.13.0`` (CPU build).
"""

import argparse
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

import numpy as np

__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import

import tensorflow as tf

from wm.core import distribute
from wm.models import mdnrnn
from wm.training.trainer import LoopConfig, Task, Trainer

Z, A, H, K = 32, 3, 256, 5


def tf_step_fn(batch_np, args, workdir):
    setup = distribute.setup("default", None, "off", "off")
    batch = {k: tf.constant(v) for k, v in batch_np.items()}

    def loss_fn(model, b, training):
        z = b["mu"] + tf.exp(0.5 * b["logvar"]) * tf.random.normal(tf.shape(b["mu"]))
        return mdnrnn.sequence_loss_terms(model, z, b["actions"], b["mask"], training=training)

    task = Task(
        name="mdnrnn",
        arch={},
        model_fn=lambda p: mdnrnn.MDNRNN(dtype_policy=p),
        loss_fn=loss_fn,
        train_data=lambda ctx: tf.data.Dataset.from_tensors(batch).repeat(),
    )
    cfg = LoopConfig(workdir=workdir, steps=1, batch_size=args.batch, learning_rate=1e-3, clip_norm=1.0)
    trainer = Trainer(task, setup, cfg)
    it = iter(setup.strategy.distribute_datasets_from_function(task.train_data))
    return lambda n: trainer.train_steps(it, tf.constant(n, tf.int64))["loss"].numpy()


def torch_step_fn(batch_np, args):
    import torch

    torch.set_num_threads(os.cpu_count())

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(Z + A, H, batch_first=True)
            self.mdn = torch.nn.Linear(H, 3 * K * Z)

        def forward(self, x):
            h, _ = self.lstm(x)
            logits, mu, log_std = self.mdn(h).view(*h.shape[:2], Z, 3 * K).split(K, dim=-1)
            return logits, mu, log_std.clamp(mdnrnn.LOG_STD_MIN, mdnrnn.LOG_STD_MAX)

    net = Net()
    assert sum(p.numel() for p in net.parameters()) == 422_368 + 4 * H  # PyTorch keeps two LSTM bias vectors
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    b = {k: torch.from_numpy(v) for k, v in batch_np.items()}

    def step():
        z = b["mu"] + torch.exp(0.5 * b["logvar"]) * torch.randn_like(b["mu"])
        x = torch.cat([z[:, :-1], b["actions"][:, :-1]], -1)
        logits, mu, log_std = net(x)
        target = z[:, 1:, :, None]
        log_n = -0.5 * ((target - mu) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        lp = torch.logsumexp(torch.log_softmax(logits, -1) + log_n, -1)
        m = b["mask"][:, 1:]
        loss = ((-lp.mean(-1) * m).sum(1) / m.shape[1]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return loss.item()

    def run(n):
        for _ in range(n):
            loss = step()
        return loss

    return run


def timed(fn, n):
    t = time.perf_counter()
    fn(n)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=999)
    p.add_argument("--steps", type=int, default=3, help="steps timed per round")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    w = a.seq_len + 1
    batch = {
        "mu": rng.normal(size=(a.batch, w, Z)).astype(np.float32),
        "logvar": rng.normal(-3, 0.5, size=(a.batch, w, Z)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(a.batch, w, A)).astype(np.float32),
        "mask": np.ones((a.batch, w), np.float32),
    }
    with tempfile.TemporaryDirectory() as wd:
        ours, theirs = tf_step_fn(batch, a, wd), torch_step_fn(batch, a)
        ours(1), theirs(1)  # compile / warm up
        r_ours, r_theirs = [], []
        for r in range(a.rounds):
            r_ours.append(a.steps * a.batch / timed(ours, a.steps))
            r_theirs.append(a.steps * a.batch / timed(theirs, a.steps))
            print(f"round {r}: ours {r_ours[-1]:.1f} seq/s, PyTorch {r_theirs[-1]:.1f} seq/s")
    o, t = statistics.median(r_ours), statistics.median(r_theirs)
    print(
        f"MDN-RNN training: ours {o:.1f} sequences/s, PyTorch {t:.1f} sequences/s, ratio {o / t:.2f}x "
        f"(batch {a.batch}, seq_len {a.seq_len}, {os.cpu_count()} cores, float32)"
    )


if __name__ == "__main__":
    main()
