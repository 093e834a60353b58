"""Stage 2: train V, the ConvVAE, on rollout frames.

    python -m wm.train_vae --data=runs/demo/rollouts --workdir=runs/demo/vae --epochs=10

Held-out split: the last ``--eval_shards`` shards (in sorted order) are never trained on; their
loss is reported after every epoch (an epoch is the training shards' manifest frames divided
by ``--batch_size``). ``--steps`` is the total: rerunning with a larger value continues from
the newest checkpoint. At the end, ``WORKDIR/export/encoder.keras`` (uint8 frames -> [mu,
logvar]) and ``WORKDIR/export/decoder.keras`` (z -> images in [0, 1]) are written in float32
with standard Keras layers only: ``keras.models.load_model`` opens them without this package.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from tfrecords import fast_reader
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.core import distribute, layout
from wm.models.loading import load_vae
from wm.training import deterministic, inputs, supervised
from wm.training.trainer import DatasetFn, Task


@dataclasses.dataclass
class TrainVaeConfig(supervised.TrainFlags):
    """Everything ``run`` needs (the flags of ``python -m wm.train_vae``)."""

    data: str = option(help="Rollout shards: a directory, glob or comma-separated list.", required=True)
    eval_batches: int = option(0, help="Cap on eval batches (0: the whole held-out split).", min=0)
    # the model
    z_size: int = option(32, help="Latent size of V.", min=1)
    kl_tolerance: float = option(0.5, help="Free bits per latent dimension of the KL term (the paper: 0.5).", min=0)
    # input
    shuffle_buffer: int = option(10_000, help="Frames in the shuffle buffer.", min=1)
    reader: str = option(
        "auto",
        help="Shard reader: isal (ISA-L inflating in Python threads, ~2.5x zlib), tf (all in "
        "TensorFlow, serializable), auto: isal if installed.",
        choices=fast_reader.READERS,
    )


def validate(cfg: TrainVaeConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    supervised.check_train_flags(cfg)
    if cfg.reader == "isal" and not fast_reader.available():
        raise UsageError(f"--reader=isal needs the isal and google-crc32c packages: {fast_reader.unavailable_reason()}")


def split_shards(cfg: TrainVaeConfig) -> tuple[list[str], list[str], int | None]:
    """(train shards, held-out shards, training frames from the manifest or None)."""
    import tfrecords
    from tfrecords import schema

    shards = tfrecords.list_shards(cfg.data)
    manifest = tfrecords.dataset_manifest(shards)
    if manifest and manifest.get("kind", schema.KIND_ROLLOUTS) != schema.KIND_ROLLOUTS:
        raise UsageError(f"{cfg.data} holds {manifest['kind']}, not rollouts")
    if cfg.eval_shards and len(shards) <= cfg.eval_shards:
        raise UsageError(f"{cfg.data} has {len(shards)} shards: too few to hold out --eval_shards={cfg.eval_shards}")
    train = shards[: len(shards) - cfg.eval_shards]
    held = shards[len(shards) - cfg.eval_shards :]
    infos = tfrecords.shard_infos(shards)
    frames = (sum(infos[f]["frames"] for f in train) or None) if infos else None
    return train, held, frames


def run(cfg: TrainVaeConfig) -> dict:
    """Trains (or resumes) the VAE, then exports encoder and decoder; returns supervised.run's result."""
    validate(cfg)
    import tensorflow as tf

    import tfrecords
    from wm.models import vae

    train_files, eval_files, train_frames = split_shards(cfg)
    steps_per_epoch = max(1, (train_frames or 0) // cfg.batch_size)
    steps = supervised.total_steps(cfg, steps_per_epoch, cfg.data, sized=train_frames is not None)
    arch = {"z_size": cfg.z_size, "kl_tolerance": cfg.kl_tolerance, "frame_shape": list(vae.FRAME_SHAPE)}
    done = supervised.already_trained(cfg.workdir, "vae", arch, steps)
    if done is not None:  # before any strategy: see already_trained
        export_dir = fileio.join(cfg.workdir, layout.VAE_EXPORT)
        exported = tf.io.gfile.exists(fileio.join(export_dir, "decoder.keras"))
        if distribute.is_chief_process(cfg.strategy) and not exported:
            export(load_vae(cfg.workdir), export_dir)
        return {"step": done, "train": {}, "eval": {}}
    setup = supervised.setup_from_flags(cfg)

    def data(files: list[str], train: bool) -> DatasetFn:
        def read(batch: int, ctx: tf.distribute.InputContext | None) -> tf.data.Dataset:
            return tfrecords.frames_dataset(
                files,
                batch,
                shuffle=train,
                repeat=train,
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                input_context=ctx,
                reader=cfg.reader,
                deterministic=cfg.deterministic,
            )

        return inputs.dataset_fn(read, cfg, train)

    def loss_fn(model: vae.ConvVAE, batch: Any, training: bool) -> dict[str, tf.Tensor]:
        if not isinstance(batch, tuple):
            return vae.loss_terms(model, batch, training=training)
        frames, key = batch  # --deterministic: the noise a single device would draw for these rows
        eps = deterministic.replica_normal([tf.shape(frames)[0], cfg.z_size], key, cfg.batch_size)
        return vae.loss_terms(model, frames, training=training, eps=eps)

    preview = next(
        iter(tfrecords.frames_dataset(eval_files or train_files, 8, shuffle_buffer=1000, seed=0, reader=cfg.reader))
    )
    prior_z = tf.random.stateless_normal([8, cfg.z_size], seed=[0, 1])

    def summaries(model: vae.ConvVAE, step: int) -> None:
        recon, _, _ = model(preview, training=False)
        pairs = tf.concat([tf.cast(preview, tf.float32) / 255.0, recon], axis=2)
        tf.summary.image("input_vs_reconstruction", pairs, max_outputs=8)
        tf.summary.image("prior_samples", model.decode(prior_z), max_outputs=8)

    task = Task(
        name="vae",
        arch=arch,
        model_fn=lambda policy: vae.ConvVAE(cfg.z_size, cfg.kl_tolerance, dtype_policy=policy),
        loss_fn=loss_fn,
        train_data=data(train_files, True),
        eval_data=data(eval_files, False) if eval_files else None,
        summary_fn=summaries,
    )
    split = (train_files, eval_files)
    result = supervised.run_stage(
        task, setup, cfg, steps, steps_per_epoch, split, eval_batches=cfg.eval_batches or None
    )
    if setup.is_chief:
        export(load_vae(cfg.workdir), fileio.join(cfg.workdir, layout.VAE_EXPORT))
        print(f"train_vae: exported {cfg.workdir}/export/{{encoder,decoder}}.keras", file=sys.stderr)
    return result


def export(model: Any, export_dir: str) -> None:
    """Saves ``encoder.keras`` and ``decoder.keras`` (float32, standard layers) atomically."""
    fileio.makedirs(export_dir)
    for part in ("encoder", "decoder"):
        with fileio.LocalTemp(fileio.join(export_dir, f"{part}.keras")) as tmp:
            getattr(model, part).save(tmp.path)
            tmp.commit()


if __name__ == "__main__":
    run_binary(TrainVaeConfig, run, "train_vae")
