"""The on-disk format of every dataset this project writes: one place, imported by writers and readers.

A dataset is a directory of GZIP-compressed TFRecord shards (``*.tfrecord.gz``) plus a
``manifest.json``. Every record is one ``tf.train.Example`` holding one whole episode.

Rollout episodes (``KIND_ROLLOUTS``), the public format of ``python -m data_gen.generate``:

* ``frames``: one bytes value, the ``T x H x W x 3`` uint8 array, row-major (64 x 64 by default);
* ``actions``: float_list, ``T x 3`` flattened (``actions[t]`` is taken after seeing ``frames[t]``);
* ``rewards``: float_list, ``T`` (``rewards[t]`` follows ``actions[t]``);
* ``terminals``: int64_list, ``T`` (1 where the episode terminated after that step);
* ``seed``: int64_list, 1 value (the episode's environment seed).

Latent series (``KIND_LATENTS``), written by ``python -m wm.encode``: the same ``actions``,
``rewards``, ``terminals`` and ``seed``, with ``mu`` and ``logvar`` (float_list, ``T x Z``) in
place of ``frames``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
KIND_ROLLOUTS = "rollouts"
KIND_LATENTS = "latents"

SHARD_SUFFIX = ".tfrecord.gz"
COMPRESSION = "GZIP"
MANIFEST_NAME = "manifest.json"

FRAME_SHAPE = (64, 64, 3)
FULL_FRAME_SHAPE = (96, 96, 3)
ACTION_DIM = 3
LATENT_DIM = 32

FRAMES = "frames"
ACTIONS = "actions"
REWARDS = "rewards"
TERMINALS = "terminals"
SEED = "seed"
MU = "mu"
LOGVAR = "logvar"


@dataclasses.dataclass
class Episode:
    """One episode in memory, exactly as stored (see the module docstring for the meaning)."""

    actions: np.ndarray  # float32 [T, 3]
    rewards: np.ndarray  # float32 [T]
    terminals: np.ndarray  # int64 [T]
    seed: int
    frames: np.ndarray | None = None  # uint8 [T, H, W, 3]
    mu: np.ndarray | None = None  # float32 [T, Z]
    logvar: np.ndarray | None = None  # float32 [T, Z]

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


def _feature_spec_common() -> dict[str, Any]:
    import tensorflow as tf

    return {
        ACTIONS: tf.io.RaggedFeature(tf.float32),
        REWARDS: tf.io.RaggedFeature(tf.float32),
        TERMINALS: tf.io.RaggedFeature(tf.int64),
        SEED: tf.io.FixedLenFeature([1], tf.int64),
    }


def feature_spec(kind: str) -> Mapping[str, object]:
    """The ``tf.io.parse_single_example`` spec for records of ``kind``."""
    import tensorflow as tf

    spec = _feature_spec_common()
    if kind == KIND_ROLLOUTS:
        spec[FRAMES] = tf.io.FixedLenFeature([], tf.string)
    elif kind == KIND_LATENTS:
        spec[MU] = tf.io.RaggedFeature(tf.float32)
        spec[LOGVAR] = tf.io.RaggedFeature(tf.float32)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    return spec


def encode_episode(ep: Episode) -> bytes:
    """Serializes an episode to a ``tf.train.Example`` (rollouts if it has frames, else latents)."""
    import tensorflow as tf

    t = len(ep)
    actions = np.asarray(ep.actions, np.float32).reshape(t, ACTION_DIM)
    rewards = np.asarray(ep.rewards, np.float32).reshape(t)
    terminals = np.asarray(ep.terminals, np.int64).reshape(t)
    feats = {
        ACTIONS: tf.train.Feature(float_list=tf.train.FloatList(value=actions.ravel())),
        REWARDS: tf.train.Feature(float_list=tf.train.FloatList(value=rewards)),
        TERMINALS: tf.train.Feature(int64_list=tf.train.Int64List(value=terminals)),
        SEED: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(ep.seed)])),
    }
    if ep.frames is not None:
        frames = np.ascontiguousarray(ep.frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T={t}, H, W, 3] uint8, got {frames.shape}")
        feats[FRAMES] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[frames.tobytes()]))
    else:
        if ep.mu is None or ep.logvar is None:
            raise ValueError("an episode needs frames, or both mu and logvar")
        for name, arr in ((MU, ep.mu), (LOGVAR, ep.logvar)):
            arr = np.asarray(arr, np.float32)
            if arr.ndim != 2 or arr.shape[0] != t:
                raise ValueError(f"{name} must be [T={t}, Z], got {arr.shape}")
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=arr.ravel()))
    # deterministic: map order would otherwise vary between processes (and so would the bytes)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)


def decode_episode(record: bytes, frame_shape: Sequence[int] = FRAME_SHAPE, latent_dim: int | None = None) -> Episode:
    """Parses one serialized record back to an :class:`Episode` with NumPy arrays (eager, for tools/tests)."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(record)
    f = ex.features.feature
    actions = np.asarray(f[ACTIONS].float_list.value, np.float32).reshape(-1, ACTION_DIM)
    t = actions.shape[0]
    ep = Episode(
        actions=actions,
        rewards=np.asarray(f[REWARDS].float_list.value, np.float32),
        terminals=np.asarray(f[TERMINALS].int64_list.value, np.int64),
        seed=int(f[SEED].int64_list.value[0]),
    )
    if len(ep.rewards) != t or len(ep.terminals) != t:
        raise ValueError(f"inconsistent lengths: actions {t}, rewards {len(ep.rewards)}, terminals {len(ep.terminals)}")
    if FRAMES in f:
        raw = f[FRAMES].bytes_list.value[0]
        expected = t * int(np.prod(frame_shape))
        if len(raw) != expected:
            raise ValueError(f"frames hold {len(raw)} bytes, expected {expected} for {t} x {tuple(frame_shape)}")
        ep.frames = np.frombuffer(raw, np.uint8).reshape((t, *frame_shape))
    else:
        mu = np.asarray(f[MU].float_list.value, np.float32)
        z = latent_dim or (mu.size // t if t else LATENT_DIM)
        ep.mu = mu.reshape(t, z)
        ep.logvar = np.asarray(f[LOGVAR].float_list.value, np.float32).reshape(t, z)
    return ep
