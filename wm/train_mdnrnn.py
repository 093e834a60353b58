"""Stage 3: train M, the MDN-RNN, on latent series from ``wm.encode``.

    python -m wm.train_mdnrnn --series=runs/demo/series --workdir=runs/demo/mdnrnn --epochs=20

Each batch holds windows of ``--seq_len + 1`` steps; z_t is drawn afresh from the stored
N(mu, exp(logvar)) for every batch, as in the paper, and M learns p(z_{t+1} | z_t, a_t, h_t).
Steps past an episode's end are masked. The last ``--eval_shards`` shards are held out and
their loss is reported each epoch (an epoch is the training episodes' windows divided by
``--batch_size``). Checkpoints, resume, metrics.jsonl, TensorBoard and profiling come from
``wm.training.supervised``, as for V.

Device choice: the fused cuDNN LSTM has no XLA kernel, so under ``--jit_compile=auto`` a GPU
trains without XLA (keeping cuDNN), a TPU with XLA (it always compiles), a CPU without;
``--jit_compile=on`` on a GPU switches the LSTM to its generic, compilable kernel instead of
failing. The split, the loss and these choices are :mod:`wm.training.mdnrnn_task`'s.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.core import distribute
from wm.training import inputs, supervised
from wm.training.mdnrnn_task import make_loss_fn, resolve_device_choices, split_series, windows_in
from wm.training.trainer import DatasetFn, Task


@dataclasses.dataclass
class TrainMdnrnnConfig(supervised.TrainFlags):
    """Everything ``run`` needs (the flags of ``python -m wm.train_mdnrnn``)."""

    series: str = option(help="Latent-series shards from wm.encode: a directory, glob or list.", required=True)
    learning_rate: float = option(1e-3, help="Adam learning rate.", above=0)
    epochs: int = option(20, help="Epochs over the training shards, if --steps is 0.", min=0)
    jit_compile: str = option(
        "auto",
        help="XLA; auto: TPU only for M (cuDNN, which XLA cannot compile, on GPU).",
        choices=distribute.JIT_MODES,
    )
    log_every: int = option(50, help="Log metrics every N steps.", min=1)
    checkpoint_every: int = option(500, help="Checkpoint every N steps.", min=1)
    # data and optimization
    seq_len: int = option(999, help="Steps per training sequence (windows hold seq_len + 1).", min=1)
    grad_clip: float = option(1.0, help="Global-norm gradient clipping (0: off).", min=0)
    # the model and its loss
    hidden: int = option(256, help="LSTM units.", min=1)
    mixtures: int = option(5, help="Gaussians per latent dimension.", min=1)
    reward_head: bool = option(False, help="Also predict the reward (squared error).")
    terminal_head: bool = option(False, help="Also predict termination (Bernoulli).")
    reward_weight: float = option(1.0, help="Weight of the reward loss.", min=0)
    terminal_weight: float = option(1.0, help="Weight of the terminal loss.", min=0)
    dropout: float = option(
        0.0,
        help="Dropout rate on the LSTM's input [z, a] and on h where the heads read it; one mask per sequence.",
        min=0,
        max=0.95,
    )
    shuffle_buffer: int = option(1000, help="Episodes in the shuffle buffer.", min=1)


def validate(cfg: TrainMdnrnnConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    supervised.check_train_flags(cfg)
    if cfg.deterministic and cfg.dropout:
        raise UsageError("--deterministic does not cover M's --dropout masks yet; use one or the other")


def run(cfg: TrainMdnrnnConfig) -> dict:
    """Trains (or resumes) M; returns supervised.run's result."""
    validate(cfg)
    import keras
    import tensorflow as tf

    import tfrecords
    from tfrecords import schema
    from wm.models import mdnrnn

    train_files, eval_files, manifest, infos = split_series(cfg.series, cfg.eval_shards)
    z_size = int((manifest or {}).get("latent_dim", schema.LATENT_DIM))
    window = cfg.seq_len + 1
    steps_per_epoch = max(1, (windows_in(train_files, infos, window) or 0) // cfg.batch_size)
    steps = supervised.total_steps(cfg, steps_per_epoch, cfg.series, sized=infos is not None)
    arch: dict[str, Any] = {
        "z_size": z_size,
        "action_size": schema.ACTION_DIM,
        "hidden": cfg.hidden,
        "mixtures": cfg.mixtures,
        "reward_head": cfg.reward_head,
        "terminal_head": cfg.terminal_head,
        "dropout": cfg.dropout,
    }
    done = supervised.already_trained(cfg.workdir, "mdnrnn", arch, steps)
    if done is not None:  # before any strategy: see already_trained
        return {"step": done, "train": {}, "eval": {}}
    setup, use_cudnn = resolve_device_choices(supervised.setup_from_flags(cfg), cfg.jit_compile)
    eval_windows = windows_in(eval_files, infos, window) or 0

    def data(files: list[str], train: bool) -> DatasetFn:
        def read(batch: int, ctx: tf.distribute.InputContext | None) -> tf.data.Dataset:
            return tfrecords.sequence_dataset(
                files,
                batch,
                window,
                kind=schema.KIND_LATENTS,
                shuffle=train,
                repeat=train,
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                input_context=ctx,
                latent_dim=z_size,
                deterministic=cfg.deterministic,
            )

        return inputs.dataset_fn(read, cfg, train, eval_rows=eval_windows)

    task = Task(
        name="mdnrnn",
        arch=arch,
        model_fn=lambda policy: mdnrnn.MDNRNN(**arch, dtype_policy=policy, use_cudnn=use_cudnn),
        loss_fn=make_loss_fn(cfg.batch_size, cfg.reward_weight, cfg.terminal_weight),
        train_data=data(train_files, True),
        eval_data=data(eval_files, False) if eval_files else None,
        optimizer_fn=lambda lr: keras.optimizers.Adam(lr),
    )
    split = (train_files, eval_files)
    result = supervised.run_stage(task, setup, cfg, steps, steps_per_epoch, split, clip_norm=cfg.grad_clip or None)
    print(f"train_mdnrnn: step {result['step']} in {cfg.workdir}", file=sys.stderr)
    return result


if __name__ == "__main__":
    run_binary(TrainMdnrnnConfig, run, "train_mdnrnn")
