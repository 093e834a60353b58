"""Stage 3: encode every rollout into a latent series (mu and logvar per frame) with a trained V.

    python -m wm.encode --vae=runs/demo/vae --data=runs/demo/rollouts --out_dir=runs/demo/series

Output: ``OUT/latents-0000i-of-0000n.tfrecord.gz`` plus ``manifest.json`` (kind ``latents``),
one output shard per input shard holding the same episodes in the same order, with actions,
rewards, terminals and seeds copied. Writing goes through ``tfrecords.writer`` like the
rollouts: shards appear atomically, and rerunning the same command after a crash keeps the
finished shards and redoes the rest. The spec records the VAE checkpoint used, so resuming
with a VAE trained further is refused. Read the result with
``tfrecords.sequence_dataset(OUT, batch, seq_len)``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.core import workdir

if TYPE_CHECKING:
    from tfrecords import schema
    from tfrecords.writer import ShardPlan

SHARD_PREFIX = "latents"


@dataclasses.dataclass
class EncodeConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.encode``)."""

    vae: str = option(help="A train_vae workdir (its newest checkpoint is used).", required=True)
    data: str = option(help="Rollout shards: a directory, glob or comma-separated list.", required=True)
    out_dir: str = option(help="Directory for the latent-series shards and manifest.json.", required=True)
    batch_size: int = option(1000, help="Frames per encoder call.", min=1)
    progress: bool = option(True, help="Show a progress bar.")


def validate(cfg: EncodeConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)


def _source_plans(cfg: EncodeConfig) -> tuple[list[str], dict, list[ShardPlan]]:
    """Input shards sorted by first episode, their manifest, and one output ShardPlan per input shard."""
    import tfrecords
    from tfrecords import schema, writer

    files = tfrecords.list_shards(cfg.data)
    manifest = tfrecords.dataset_manifest(files)
    if manifest is None:
        raise UsageError(
            f"{cfg.data} has no {schema.MANIFEST_NAME}; encode needs a dataset written by data_gen.generate"
        )
    if manifest.get("kind", schema.KIND_ROLLOUTS) != schema.KIND_ROLLOUTS:
        raise UsageError(f"{cfg.data} holds {manifest['kind']}, not rollouts")
    if tuple(manifest.get("frame_shape", schema.FRAME_SHAPE)) != schema.FRAME_SHAPE:
        raise UsageError(f"{cfg.data} has {manifest['frame_shape']} frames; V needs {list(schema.FRAME_SHAPE)}")
    info = {s["name"]: s for s in manifest["shards"]}
    missing = [f for f in files if os.path.basename(f) not in info]
    if missing:
        raise UsageError(f"{missing[0]} is not in its directory's manifest")
    files.sort(key=lambda f: info[os.path.basename(f)]["first_item"])
    plans = []
    for i, f in enumerate(files):
        s = info[os.path.basename(f)]
        items = tuple(range(s["first_item"], s["first_item"] + s["episodes"]))
        plans.append(writer.ShardPlan(i, len(files), items, SHARD_PREFIX))
    return files, manifest, plans


def run(cfg: EncodeConfig) -> dict:
    """Encodes (or finishes encoding) ``cfg.data`` into ``cfg.out_dir``; returns the manifest."""
    validate(cfg)
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    import tfrecords
    from tfrecords import schema, writer
    from wm.models.loading import load_vae

    config = workdir.require(cfg.vae, "vae")
    ckpt = workdir.latest_checkpoint(cfg.vae)
    if not ckpt:
        raise UsageError(f"{cfg.vae} has no checkpoint yet; train the VAE first")
    arch = config["arch"]
    files, source, plans = _source_plans(cfg)
    spec = {
        "source": {k: source.get(k) for k in ("spec", "episodes", "frames")},
        "vae": {"checkpoint": os.path.basename(ckpt), "arch": arch},
    }
    out = writer.ShardedRun(cfg.out_dir, schema.KIND_LATENTS, spec, plans)
    finished = out.open()
    if finished is not None:
        print(f"encode: {cfg.out_dir} is already complete", file=sys.stderr)
        return finished

    model = load_vae(cfg.vae)
    step = int(os.path.basename(ckpt).rsplit("-", 1)[-1])
    encode = tf.function(model.encode, input_signature=[tf.TensorSpec([None, *schema.FRAME_SHAPE], tf.uint8)])
    pending = set(p.name for p in out.pending())
    todo = [(p, f) for p, f in zip(plans, files) if p.name in pending]
    done = sum(len(p.items) for p in plans) - sum(len(p.items) for p, _ in todo)
    bar = tqdm(
        total=sum(len(p.items) for p in plans),
        initial=done,
        unit="ep",
        desc="encode",
        disable=not cfg.progress,
        file=sys.stderr,
    )

    def episodes(path: str) -> Iterator[schema.Episode]:
        for ep in tfrecords.episodes_dataset(path, kind=schema.KIND_ROLLOUTS):
            frames = ep[schema.FRAMES]
            parts = [encode(frames[i : i + cfg.batch_size]) for i in range(0, int(frames.shape[0]), cfg.batch_size)]
            bar.update(1)
            yield schema.Episode(
                actions=ep[schema.ACTIONS].numpy(),
                rewards=ep[schema.REWARDS].numpy(),
                terminals=ep[schema.TERMINALS].numpy(),
                seed=int(ep[schema.SEED]),
                mu=np.concatenate([m.numpy() for m, _ in parts]),
                logvar=np.concatenate([v.numpy() for _, v in parts]),
            )

    try:
        for plan, path in todo:
            writer.write_shard(cfg.out_dir, plan, episodes(path))
    finally:
        bar.close()
    manifest = out.finalize(
        {
            "latent_dim": int(arch["z_size"]),
            "vae_step": step,
            "source_dir": os.path.dirname(files[0]),
            "versions": writer.package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    print(
        f"encode: wrote {manifest['episodes']} episodes, {manifest['frames']} frames in {len(plans)} "
        f"shards to {cfg.out_dir}",
        file=sys.stderr,
    )
    return manifest


if __name__ == "__main__":
    run_binary(EncodeConfig, run, "encode")
