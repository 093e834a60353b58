"""tf.data pipelines over sharded episode datasets.

Both public pipelines read shards with a parallel, non-deterministic interleave, parse with
AUTOTUNE parallelism, keep frames as uint8 (the model casts), end in
``batch(drop_remainder=True)`` so shapes are static (TPUs need that), and prefetch. Memory is
bounded by the shuffle buffer, never by the dataset size. With a ``tf.distribute.InputContext``
each input pipeline reads a disjoint part of the data: whole shards when there are at least as
many shards as pipelines, otherwise every n-th episode.

Integrity: where a shard's directory holds a ``manifest.json`` (every dataset this project
writes does), a shard whose size or episode count differs from the manifest, or whose
compressed stream is corrupted or truncated, raises an error naming the file; with
``skip_corrupt=True`` it is skipped with a warning instead, keeping the episodes that read
correctly before the damage (each record carries its own checksum). Shards without a manifest
still fail loudly on damage, with TensorFlow's ``DataLossError`` (which does not name the
file), or are cut short silently under ``skip_corrupt``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from tfrecords import fast_reader, schema
from tfrecords.fast_reader import ShardError
from tfrecords.runtime.fileio import read_json

AUTOTUNE = tf.data.AUTOTUNE
_READ_BUFFER = 8 << 20


def list_shards(file_pattern: str | Sequence[str]) -> list[str]:
    """Expands a glob, a directory, a comma-separated list of them, or a list, to sorted shard paths."""
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files: list[str] = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        if tf.io.gfile.isdir(p):
            p = os.path.join(p, "*" + schema.SHARD_SUFFIX)
        files.extend(tf.io.gfile.glob(p))
    files = sorted(set(files))
    if not files:
        raise ShardError(f"no shards match {file_pattern!r}")
    return files


@functools.lru_cache(maxsize=64)
def _manifest(directory: str) -> dict | None:
    path = os.path.join(directory, schema.MANIFEST_NAME)
    return read_json(path) if tf.io.gfile.exists(path) else None


def dataset_manifest(file_pattern: str | Sequence[str]) -> dict | None:
    """The manifest of the (first) directory the shards live in, if it has one."""
    return _manifest(os.path.dirname(list_shards(file_pattern)[0]))


def shard_infos(files: Sequence[str]) -> dict[str, dict] | None:
    """Each shard's manifest entry (``episodes``, ``frames``, ...) by path, each read from the
    manifest of its own directory: a comma-separated list of directories is sized in full, and
    shards of the same name in two directories stay apart. None if any directory has no manifest.

    Raises ShardError when the directories' manifests disagree on ``kind``, ``frame_shape`` or
    ``latent_dim`` (one dataset cannot mix them), or a shard is missing from its manifest.
    """
    out: dict[str, dict] = {}
    first: tuple | None = None
    for f in files:
        directory = os.path.dirname(f)
        m = _manifest(directory)
        if m is None:
            return None
        traits = (m.get("kind"), m.get("frame_shape"), m.get("latent_dim"))
        if first is None:
            first = (directory, traits)
        elif traits != first[1]:
            raise ShardError(
                f"{directory} and {first[0]} hold different data (kind, frame_shape, latent_dim: "
                f"{traits} vs {first[1]}); one dataset cannot mix them"
            )
        info = {s["name"]: s for s in m["shards"]}.get(os.path.basename(f))
        if info is None:
            raise ShardError(f"shard {f} is not in {directory}/{schema.MANIFEST_NAME}")
        out[f] = info
    return out


def _pipeline_split(input_context: tf.distribute.InputContext | None, n_files: int) -> tuple[int, int, bool]:
    """(input pipelines, this pipeline's index, whether pipelines split whole shards between them).

    With fewer shards than pipelines, every pipeline reads every shard and keeps a share of
    its episodes instead.
    """
    n_pipes = input_context.num_input_pipelines if input_context else 1
    pipe = input_context.input_pipeline_id if input_context else 0
    return n_pipes, pipe, n_pipes > 1 and n_files >= n_pipes


def _checked_shards(files: list[str], skip_corrupt: bool) -> tuple[list[str], list[int]]:
    """Returns files and their expected episode counts (-1: unknown); checks sizes against manifests."""
    keep, expected = [], []
    for f in files:
        m = _manifest(os.path.dirname(f))
        info = {s["name"]: s for s in m["shards"]}.get(os.path.basename(f)) if m else None
        if info is not None and "bytes" in info:
            size = tf.io.gfile.stat(f).length
            if size != info["bytes"]:
                msg = f"shard {f} is {size} bytes, its manifest says {info['bytes']}: truncated or corrupted"
                if not skip_corrupt:
                    raise ShardError(msg)
                logging.warning("skipping %s", msg)
                continue
        keep.append(f)
        expected.append(int(info["episodes"]) if info is not None else -1)
    if not keep:
        raise ShardError("every shard was skipped as corrupted")
    return keep, expected


def _shard_records(path: tf.Tensor, expected: tf.Tensor, skip_corrupt: bool, counts_known: bool) -> tf.data.Dataset:
    """Records of one shard; errors name the shard when it ends early (corrupt or truncated)."""
    records = tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION, buffer_size=_READ_BUFFER)
    if not (counts_known or skip_corrupt):
        # Without a manifest a short count proves nothing: let TensorFlow's own DataLossError through.
        return records.map(lambda r: (r, path))
    # ignore_errors stops the stream at the first damaged record; the count then tells.
    records = records.ignore_errors().map(lambda r: (r, False))
    records = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))
    records = records.scan(tf.constant(0, tf.int64), lambda n, x: (n + 1, (x[0], x[1], n)))

    def check(record: Any, is_end: Any, count: Any) -> Any:
        bad = tf.logical_and(is_end, tf.logical_and(expected >= 0, count != expected))
        if skip_corrupt:
            tf.cond(
                bad,
                lambda: tf.print(
                    "WARNING: skipping the rest of corrupted or truncated shard", path, output_stream=sys.stderr
                ),
                lambda: tf.no_op(),
            )
            return record
        ok = tf.debugging.Assert(
            tf.logical_not(bad), ["corrupted or truncated shard", path, "read", count, "of", expected, "episodes"]
        )
        with tf.control_dependencies([ok]):
            return tf.identity(record)

    records = records.map(lambda r, e, n: (check(r, e, n), e))
    return records.filter(lambda r, e: tf.logical_not(e)).map(lambda r, e: (r, path))


def episode_records(
    file_pattern: str | Sequence[str],
    *,
    shuffle: bool = True,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    skip_corrupt: bool = False,
    cycle_length: int | None = None,
    deterministic: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Dataset of ``(serialized_example, shard_path)``, one per episode, read in parallel.

    ``repeat`` loops over the shard list before the interleave, so that every reader thread
    stays busy across epoch boundaries.
    """
    files, expected = _checked_shards(list_shards(file_pattern), skip_corrupt)
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(expected, tf.int64)))
    n_pipes, pipe, shard_files = _pipeline_split(input_context, len(files))
    if shard_files:
        ds = ds.shard(n_pipes, pipe)
    elif n_pipes > 1:
        # Every pipeline reads every shard and keeps every n-th episode: that is a partition
        # only if all pipelines see the episodes in the same order.
        shuffle, deterministic = False, True
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    cycle = cycle_length or max(2, min(len(files), os.cpu_count() or 2))
    ds = ds.interleave(
        lambda f, n: _shard_records(f, n, skip_corrupt, counts_known=min(expected) >= 0),
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if n_pipes > 1 and not shard_files:
        ds = ds.shard(n_pipes, pipe)
    return ds


def _parse(record: tf.Tensor, path: tf.Tensor, kind: str, frame_shape: Sequence[int], latent_dim: int) -> dict:
    """Parses an episode record into tensors with a leading time axis, checking sizes."""
    ex = tf.io.parse_single_example(record, schema.feature_spec(kind))
    actions = tf.reshape(ex[schema.ACTIONS], [-1, schema.ACTION_DIM])
    t = tf.shape(actions)[0]
    out = {
        schema.ACTIONS: actions,
        schema.REWARDS: ex[schema.REWARDS],
        schema.TERMINALS: ex[schema.TERMINALS],
        schema.SEED: ex[schema.SEED][0],
    }
    checks = [
        tf.debugging.Assert(tf.equal(tf.size(out[schema.REWARDS]), t), ["bad rewards length in", path]),
        tf.debugging.Assert(tf.equal(tf.size(out[schema.TERMINALS]), t), ["bad terminals length in", path]),
    ]
    if kind == schema.KIND_ROLLOUTS:
        raw = tf.io.decode_raw(ex[schema.FRAMES], tf.uint8)
        per = int(frame_shape[0] * frame_shape[1] * frame_shape[2])
        checks.append(
            tf.debugging.Assert(
                tf.equal(tf.size(raw), t * per),
                ["frames of", path, "do not hold T x", tuple(frame_shape), "bytes; wrong frame_shape?"],
            )
        )
        with tf.control_dependencies(checks):
            out[schema.FRAMES] = tf.reshape(raw, [-1, *frame_shape])
    else:
        for k in (schema.MU, schema.LOGVAR):
            checks.append(tf.debugging.Assert(tf.equal(tf.size(ex[k]), t * latent_dim), ["bad", k, "size in", path]))
        with tf.control_dependencies(checks):
            out[schema.MU] = tf.reshape(ex[schema.MU], [-1, latent_dim])
            out[schema.LOGVAR] = tf.reshape(ex[schema.LOGVAR], [-1, latent_dim])
    return out


def _parse_frames_only(record: tf.Tensor, path: tf.Tensor, frame_shape: Sequence[int]) -> tf.Tensor:
    raw = tf.io.decode_raw(
        tf.io.parse_single_example(record, {schema.FRAMES: tf.io.FixedLenFeature([], tf.string)})[schema.FRAMES],
        tf.uint8,
    )
    per = int(frame_shape[0] * frame_shape[1] * frame_shape[2])
    ok = tf.debugging.Assert(
        tf.equal(tf.size(raw) % per, 0), ["frames of", path, "are not a whole number of", tuple(frame_shape), "frames"]
    )
    with tf.control_dependencies([ok]):
        return tf.reshape(raw, [-1, *frame_shape])


def _infer_kind(file_pattern: str | Sequence[str], kind: str | None) -> str:
    if kind:
        return kind
    m = dataset_manifest(file_pattern)
    return m.get("kind", schema.KIND_ROLLOUTS) if m else schema.KIND_ROLLOUTS


def _default_frame_shape(file_pattern: str | Sequence[str], frame_shape: Sequence[int] | None) -> tuple[int, ...]:
    if frame_shape is not None:
        return tuple(frame_shape)
    m = dataset_manifest(file_pattern)
    shape = (m or {}).get("frame_shape")
    return tuple(shape) if shape else schema.FRAME_SHAPE


def episodes_dataset(
    file_pattern: str | Sequence[str],
    *,
    kind: str | None = None,
    frame_shape: Sequence[int] | None = None,
    latent_dim: int = schema.LATENT_DIM,
    shuffle: bool = False,
    skip_corrupt: bool = False,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Whole episodes as dicts of tensors with a leading time axis (for encoding and inspection)."""
    kind = _infer_kind(file_pattern, kind)
    shape = _default_frame_shape(file_pattern, frame_shape)
    ds = episode_records(file_pattern, shuffle=shuffle, skip_corrupt=skip_corrupt, deterministic=deterministic)
    return ds.map(
        lambda r, p: _parse(r, p, kind, shape, latent_dim), num_parallel_calls=AUTOTUNE, deterministic=deterministic
    )


def frames_dataset(
    file_pattern: str | Sequence[str],
    batch_size: int,
    *,
    shuffle: bool = True,
    shuffle_buffer: int = 10_000,
    repeat: bool = True,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    frame_shape: Sequence[int] | None = None,
    skip_corrupt: bool = False,
    drop_remainder: bool = True,
    chunk_frames: int = 5,
    reader: str = "auto",
    reader_threads: int | None = None,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Shuffled uint8 frame batches ``[batch_size, H, W, 3]`` for training V.

    Args:
      file_pattern: glob(s) or directory of rollout shards.
      batch_size: the batch this pipeline yields; under a strategy pass
        ``input_context.get_per_replica_batch_size(global_batch)``.
      shuffle_buffer: frames held for shuffling (the memory bound: ~12 KB a frame).
      repeat: loop forever (training) or make one pass (evaluation).
      input_context: from ``distribute_datasets_from_function``; pipelines read disjoint data.
      frame_shape: defaults to the manifest's, else 64 x 64 x 3.
      skip_corrupt: warn and skip damaged shards instead of raising.
      chunk_frames: when shuffling, frames travel through the shuffle buffer in chunks of up
        to this many frames of one episode (drawn at random times from it; the chunk size
        divides batch_size), which makes the pipeline several times cheaper per frame. A batch
        then holds batch_size / chunk chunks from (almost surely) different episodes. 1 shuffles
        single frames.
      reader: ``"isal"`` reads shards with :mod:`tfrecords.fast_reader` (ISA-L inflating in
        Python threads, ~2.5x zlib's speed; the dataset then cannot be serialized), ``"tf"``
        with TensorFlow's reader, ``"auto"`` (default) the first when its libraries import.
      reader_threads: shards inflated at once by the ``"isal"`` reader (default: one per core,
        at most 8 and at most the number of shards).
      deterministic: with ``seed``, the same batches in the same order on every iteration of a
        fresh dataset (one reader thread, ordered maps, the in-episode shuffle run in order):
        slower, for runs that must resume exactly.
    """
    shape = _default_frame_shape(file_pattern, frame_shape)
    if _use_fast_reader(reader):
        threads = 1 if deterministic else reader_threads
        ds = _fast_episode_frames(file_pattern, shape, shuffle, seed, repeat, input_context, skip_corrupt, threads)
    else:
        ds = episode_records(
            file_pattern,
            shuffle=shuffle,
            seed=seed,
            input_context=input_context,
            skip_corrupt=skip_corrupt,
            repeat=repeat,
            deterministic=deterministic,
        )
        parse = lambda r, p: _parse_frames_only(r, p, shape)  # noqa: E731
        ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    chunk = _chunk_size(batch_size, chunk_frames) if shuffle else 1
    if chunk > 1:
        # Shuffling single 12 KB frames costs more per frame than inflating them: shuffle each
        # episode's frames in place, then move them through the shuffle buffer in small chunks.
        # (Its stateful shuffle draws in element order only when the map runs sequentially.)
        parallel = None if deterministic else AUTOTUNE
        shuffled = lambda f: _shuffled_chunks(f, chunk, seed)  # noqa: E731
        ds = ds.map(shuffled, num_parallel_calls=parallel, deterministic=None if parallel is None else False)
    ds = ds.unbatch()
    if shuffle:
        ds = ds.shuffle(max(shuffle_buffer // chunk, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(
        batch_size // chunk, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=deterministic
    )
    if chunk > 1:
        ds = ds.map(lambda x: tf.reshape(x, [-1, *shape]))
    return ds.prefetch(AUTOTUNE)


READERS = fast_reader.READERS


def _use_fast_reader(reader: str) -> bool:
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    if reader == "tf":
        return False
    if fast_reader.available():
        return True
    if reader == "isal":
        raise ValueError(f"reader='isal' needs the isal and google-crc32c packages: {fast_reader.unavailable_reason()}")
    return False


def _fast_episode_frames(
    file_pattern: str | Sequence[str],
    shape: Sequence[int],
    shuffle: bool,
    seed: int | None,
    repeat: bool,
    input_context: Any,
    skip_corrupt: bool,
    threads: int | None,
) -> tf.data.Dataset:
    """Each episode's frames via :mod:`tfrecords.fast_reader`, split between input pipelines like
    ``episode_records``."""
    files, expected = _checked_shards(list_shards(file_pattern), skip_corrupt)
    shards = list(zip(files, expected))
    n_pipes, pipe, shard_files = _pipeline_split(input_context, len(shards))
    keep = None
    if shard_files:
        shards = shards[pipe::n_pipes]  # as Dataset.shard(n_pipes, pipe)
    elif n_pipes > 1:
        # Every pipeline reads every shard and keeps its share of episodes: (shard, episode)
        # pairs split by a rule that needs no reading order.
        keep = lambda j, i: (j + i) % n_pipes == pipe  # noqa: E731
    threads = threads or max(1, min(len(shards), os.cpu_count() or 2, 8))
    return fast_reader.episode_frames_dataset(
        shards, shape, shuffle=shuffle, seed=seed, repeat=repeat, skip_corrupt=skip_corrupt, threads=threads, keep=keep
    )


def _chunk_size(batch_size: int, chunk_frames: int) -> int:
    """The largest divisor of batch_size that is at most chunk_frames."""
    return max(c for c in range(1, max(chunk_frames, 1) + 1) if batch_size % c == 0)


def _shuffled_chunks(frames: tf.Tensor, chunk: int, seed: int | None) -> tf.Tensor:
    """[T, H, W, C] -> [T // chunk, chunk, H, W, C] of the episode's frames in random order.

    The T % chunk frames left over differ every epoch, so none is left out for good.
    """
    t = tf.shape(frames)[0]
    order = tf.random.shuffle(tf.range(t), seed=seed)[: (t // chunk) * chunk]
    return tf.reshape(tf.gather(frames, order), tf.concat([[-1, chunk], tf.shape(frames)[1:]], 0))


def _windows(ep: dict, seq_len: int, data_keys: Sequence[str]) -> tf.data.Dataset:
    """Cuts an episode into non-overlapping windows of seq_len steps; the last is zero-padded."""
    t = tf.shape(ep[schema.ACTIONS])[0]
    n = (t + seq_len - 1) // seq_len
    pad = n * seq_len - t
    out = {}
    for k in data_keys:
        x = ep[k]
        if k == schema.TERMINALS:
            x = tf.cast(x, tf.float32)
        paddings = [[0, pad]] + [[0, 0]] * (len(x.shape) - 1)
        x = tf.pad(x, paddings)
        out[k] = tf.reshape(x, tf.concat([[n, seq_len], tf.shape(x)[1:]], 0))
    out["mask"] = tf.reshape(tf.pad(tf.ones([t], tf.float32), [[0, pad]]), [n, seq_len])
    out[schema.SEED] = tf.fill([n], ep[schema.SEED])
    out["start"] = tf.range(n, dtype=tf.int32) * seq_len
    return tf.data.Dataset.from_tensor_slices(out)


def sequence_dataset(
    file_pattern: str | Sequence[str],
    batch_size: int,
    seq_len: int,
    *,
    kind: str | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 1_000,
    repeat: bool = True,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    frame_shape: Sequence[int] | None = None,
    latent_dim: int = schema.LATENT_DIM,
    skip_corrupt: bool = False,
    drop_remainder: bool = True,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Batches of fixed-length windows of consecutive steps, for training M.

    Each element is a dict with ``actions`` [B, L, 3], ``rewards`` [B, L], ``terminals`` [B, L]
    (float32), ``mask`` [B, L] (1 for real steps, 0 for padding past the episode's end),
    ``seed`` [B], ``start`` [B] (the window's first step within its episode), and either
    ``frames`` [B, L, H, W, 3] uint8 (rollouts) or ``mu`` and ``logvar`` [B, L, Z] float32
    (latent series). Episodes are cut into non-overlapping windows from their first step; the
    last window of an episode is zero-padded.

    ``kind`` defaults to the manifest's (rollouts or latents). ``deterministic``: with ``seed``,
    the same batches in the same order on every iteration of a fresh dataset (ordered reads).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    kind = _infer_kind(file_pattern, kind)
    shape = _default_frame_shape(file_pattern, frame_shape)
    data_keys = [schema.ACTIONS, schema.REWARDS, schema.TERMINALS]
    data_keys += [schema.FRAMES] if kind == schema.KIND_ROLLOUTS else [schema.MU, schema.LOGVAR]
    ds = episode_records(
        file_pattern,
        shuffle=shuffle,
        seed=seed,
        input_context=input_context,
        skip_corrupt=skip_corrupt,
        repeat=repeat,
        deterministic=deterministic,
    )
    parse = lambda r, p: _parse(r, p, kind, shape, latent_dim)  # noqa: E731
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.flat_map(lambda ep: _windows(ep, seq_len, data_keys))
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)
