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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tfrecords import fast_reader  # noqa: E402
from wm import distribute, train_lib  # noqa: E402
from wm.cli import UsageError, run_main  # noqa: E402


@dataclasses.dataclass
class TrainVaeConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.train_vae``)."""

    data: str
    workdir: str
    strategy: str = "default"
    tpu: str = ""
    batch_size: int = 100
    learning_rate: float = 1e-4
    steps: int = 0  # total steps; 0: derived from epochs
    epochs: int = 10
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    steps_per_loop: int = 10
    profile_steps: str = ""
    eval_shards: int = 1
    eval_batches: int = 0  # 0: the whole held-out split
    log_every: int = 100
    checkpoint_every: int = 1000
    z_size: int = 32
    kl_tolerance: float = 0.5
    shuffle_buffer: int = 10_000
    reader: str = "auto"  # tfrecords.frames_dataset's shard reader
    seed: int | None = None
    progress: bool = True


def validate(cfg: TrainVaeConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    if not cfg.data:
        raise UsageError("--data is required")
    if not cfg.workdir:
        raise UsageError("--workdir is required")
    try:
        distribute.check_modes(cfg.strategy, cfg.mixed_precision, cfg.jit_compile)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name in ("batch_size", "steps_per_loop", "log_every", "checkpoint_every", "z_size", "shuffle_buffer"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.steps < 0 or cfg.epochs < 0 or cfg.eval_shards < 0 or cfg.eval_batches < 0:
        raise UsageError("--steps, --epochs, --eval_shards and --eval_batches must not be negative")
    if not cfg.steps and not cfg.epochs:
        raise UsageError("set --steps or --epochs")
    if cfg.reader not in fast_reader.READERS:
        raise UsageError(f"--reader must be one of {', '.join(fast_reader.READERS)}, got {cfg.reader!r}")
    if cfg.reader == "isal" and not fast_reader.available():
        raise UsageError(f"--reader=isal needs the isal and google-crc32c packages: {fast_reader.unavailable_reason()}")
    train_lib.parse_profile_steps(cfg.profile_steps)


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
    frames = None
    if manifest:
        per = {s["name"]: s["frames"] for s in manifest["shards"]}
        frames = sum(per.get(os.path.basename(f), 0) for f in train) or None
    return train, held, frames


def run(cfg: TrainVaeConfig) -> dict:
    """Trains (or resumes) the VAE, then exports encoder and decoder; returns train_lib.run's result."""
    validate(cfg)
    import keras
    import tensorflow as tf

    import tfrecords
    from wm import vae

    train_files, eval_files, train_frames = split_shards(cfg)
    steps_per_epoch = max(1, (train_frames or 0) // cfg.batch_size)
    steps = cfg.steps
    if not steps:
        if train_frames is None:
            raise UsageError(f"{cfg.data} has no manifest to size an epoch; pass --steps")
        steps = cfg.epochs * steps_per_epoch
    setup = distribute.setup(cfg.strategy, cfg.tpu or None, cfg.mixed_precision, cfg.jit_compile)
    if cfg.seed is not None:
        keras.utils.set_random_seed(cfg.seed)
    arch = {"z_size": cfg.z_size, "kl_tolerance": cfg.kl_tolerance, "frame_shape": list(vae.FRAME_SHAPE)}

    def data(files, train):
        def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(cfg.batch_size)
            return tfrecords.frames_dataset(files, per_replica, shuffle=train, repeat=train, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, input_context=ctx, reader=cfg.reader)

        return fn

    preview = next(iter(tfrecords.frames_dataset(eval_files or train_files, 8, shuffle_buffer=1000, seed=0, reader=cfg.reader)))
    prior_z = tf.random.stateless_normal([8, cfg.z_size], seed=[0, 1])

    def summaries(model, step):
        recon, _, _ = model(preview, training=False)
        pairs = tf.concat([tf.cast(preview, tf.float32) / 255.0, recon], axis=2)
        tf.summary.image("input_vs_reconstruction", pairs, max_outputs=8)
        tf.summary.image("prior_samples", model.decode(prior_z), max_outputs=8)

    task = train_lib.Task(
        name="vae",
        arch=arch,
        model_fn=lambda policy: vae.ConvVAE(cfg.z_size, cfg.kl_tolerance, dtype_policy=policy),
        loss_fn=lambda model, frames, training: vae.loss_terms(model, frames, training=training),
        train_data=data(train_files, True),
        eval_data=data(eval_files, False) if eval_files else None,
        summary_fn=summaries,
    )
    loop = train_lib.LoopConfig(
        workdir=cfg.workdir,
        steps=steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        steps_per_loop=cfg.steps_per_loop,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        eval_every=steps_per_epoch if eval_files else 0,
        eval_batches=cfg.eval_batches or None,
        profile_steps=train_lib.parse_profile_steps(cfg.profile_steps),
        progress=cfg.progress,
    )
    extra = {"flags": dataclasses.asdict(cfg), "train_shards": train_files, "eval_shards": eval_files, "steps_per_epoch": steps_per_epoch}
    result = train_lib.run(task, setup, loop, extra)
    if setup.is_chief:
        export(load(cfg.workdir), os.path.join(cfg.workdir, "export"))
        print(f"train_vae: exported {cfg.workdir}/export/{{encoder,decoder}}.keras", file=sys.stderr)
    return result


def load(workdir: str, dtype_policy: str = "float32"):
    """Builds V with the architecture in ``workdir/config.json`` and its newest weights.

    ``dtype_policy`` "mixed_bfloat16" or "bfloat16" gives a faster model for inference on CPUs
    with bfloat16 units (see ``wm.distribute.inference_policy``); "bfloat16" stores the weights
    rounded to bfloat16, which mixed_bfloat16 does on every call instead.

    Raises UsageError if ``workdir`` is not a train_vae workdir or has no checkpoint yet.
    """
    import tensorflow as tf

    from wm import vae

    config = train_lib.read_config(workdir)
    if not config or config.get("model") != "vae":
        found = f"a {config.get('model')!r} run" if config else f"no {train_lib.CONFIG_NAME}"
        raise UsageError(f"{workdir} is not a train_vae workdir ({found})")
    model = vae.ConvVAE(**config["arch"], dtype_policy=dtype_policy)
    if dtype_policy == "bfloat16":  # checkpoints hold float32: restore, then round
        full = vae.ConvVAE(**config["arch"], dtype_policy="float32")
        train_lib.restore_model(workdir, full)
        for dst, src in zip(model.weights, full.weights, strict=True):
            dst.assign(tf.cast(src, dst.dtype))
        return model
    train_lib.restore_model(workdir, model)
    return model


def export(model, export_dir: str) -> None:
    """Saves ``encoder.keras`` and ``decoder.keras`` (float32, standard layers) atomically."""
    import tensorflow as tf

    tf.io.gfile.makedirs(export_dir)
    for part in ("encoder", "decoder"):
        final = os.path.join(export_dir, f"{part}.keras")
        tmp = os.path.join(export_dir, f"{part}-tmp.keras")
        getattr(model, part).save(tmp)
        tf.io.gfile.rename(tmp, final, overwrite=True)


# ---------------------------------------------------------------- flags

# Flags are defined only when run as a binary, so that several binaries (and data_gen.generate)
# can be imported together in one process, e.g. by tests.


def define_flags() -> None:
    """Defines this binary's absl flags."""
    flags.DEFINE_string("data", None, "Rollout shards: a directory, glob or comma-separated list.")
    train_lib.define_common_flags(TrainVaeConfig(data="", workdir=""), "XLA; auto: on for GPU/TPU, off on CPU.")
    flags.DEFINE_integer("eval_batches", 0, "Cap on eval batches (0: the whole held-out split).")
    flags.DEFINE_enum("reader", "auto", list(fast_reader.READERS), "Shard reader: isal (ISA-L inflating in Python threads, ~2.5x zlib), tf (all in TensorFlow, serializable), auto: isal if installed.")


FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = train_lib.config_from_flags(TrainVaeConfig, ("data", "workdir"))
    run_main(lambda: run(cfg), "train_vae")


if __name__ == "__main__":
    define_flags()
    app.run(main)
