"""Summarize and fully verify a dataset directory.

    python -m tfrecords.inspect runs/demo/rollouts

Prints episodes, frames, shards, mean episode length and return, then reads every record of
every shard and checks it against ``manifest.json`` (episode and frame counts, sizes,
returns). Exits non-zero naming each bad shard.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from tfrecords.runtime.cli import UsageError, flags_parser, run_main

FLAGS = flags.FLAGS


def _read_shard(path: str, frame_shape: Sequence[int]) -> dict:
    import tensorflow as tf

    from tfrecords import schema

    eps = frames = 0
    ret = 0.0
    for rec in tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION):
        ep = schema.decode_episode(rec.numpy(), frame_shape)
        eps += 1
        frames += len(ep)
        ret += ep.total_reward
    return {"episodes": eps, "frames": frames, "return_sum": ret}


def verify(directory: str) -> tuple[dict, list[str]]:
    """Checks every shard of ``directory`` against its manifest; returns (manifest, problems)."""
    import tensorflow as tf

    from tfrecords import schema
    from tfrecords.runtime.fileio import read_json

    mpath = os.path.join(directory, schema.MANIFEST_NAME)
    if not tf.io.gfile.exists(mpath):
        raise UsageError(f"{directory} has no {schema.MANIFEST_NAME} (not a dataset, or its run is unfinished)")
    manifest = read_json(mpath)
    shape = tuple(manifest.get("frame_shape") or schema.FRAME_SHAPE)
    problems = []
    listed = {s["name"] for s in manifest["shards"]}
    for extra in sorted(
        set(map(os.path.basename, tf.io.gfile.glob(os.path.join(directory, "*" + schema.SHARD_SUFFIX)))) - listed
    ):
        problems.append(f"{extra}: not in the manifest")
    for s in manifest["shards"]:
        path = os.path.join(directory, s["name"])
        if not tf.io.gfile.exists(path):
            problems.append(f"{s['name']}: missing")
            continue
        size = tf.io.gfile.stat(path).length
        if "bytes" in s and size != s["bytes"]:
            problems.append(f"{s['name']}: {size} bytes, manifest says {s['bytes']}")
            continue
        try:
            got = _read_shard(path, shape)
        except (tf.errors.OpError, ValueError) as e:
            problems.append(f"{s['name']}: unreadable ({getattr(e, 'message', e)})".splitlines()[0])
            continue
        for k in ("episodes", "frames"):
            if got[k] != s[k]:
                problems.append(f"{s['name']}: {got[k]} {k}, manifest says {s[k]}")
        if not np.isclose(got["return_sum"], s["return_sum"], rtol=1e-5, atol=1e-3):
            problems.append(f"{s['name']}: returns sum to {got['return_sum']:.3f}, manifest says {s['return_sum']:.3f}")
    return manifest, problems


def describe(manifest: dict) -> str:
    """A few lines summarizing a manifest."""
    eps, frames = manifest["episodes"], manifest["frames"]
    lines = [
        f"kind:         {manifest.get('kind')}",
        f"episodes:     {eps}",
        f"frames:       {frames}",
        f"shards:       {len(manifest['shards'])}",
        f"mean length:  {frames / max(eps, 1):.1f}",
        f"mean return:  {manifest.get('mean_return', float('nan')):.2f}",
    ]
    if "env_id" in manifest:
        lines.append(f"env:          {manifest['env_id']}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    def run() -> None:
        if len(argv) != 2:
            raise UsageError("usage: python -m tfrecords.inspect DIR")
        directory = argv[1]
        if FLAGS.verify:
            manifest, problems = verify(directory)
        else:
            from tfrecords.runtime.fileio import read_json

            manifest, problems = read_json(os.path.join(directory, "manifest.json")), []
        print(describe(manifest))
        if problems:
            for p in problems:
                print(f"BAD {p}", file=sys.stderr)
            raise UsageError(f"{len(problems)} problem(s) in {directory}")
        if FLAGS.verify:
            print(f"verified:     all {len(manifest['shards'])} shards read and match the manifest")

    run_main(run, "inspect")


if __name__ == "__main__":
    flags.DEFINE_bool("verify", True, "Read every record and check it against the manifest.")
    app.run(main, flags_parser=flags_parser("inspect"))
