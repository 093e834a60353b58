"""tfrecords readers: shapes, contents, InputContext sharding, corrupted shards, writer units."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfrecords
from tfrecords import schema, writer
from tfrecords.inspect import verify


def _episodes(d):
    out = []
    for f in sorted(glob.glob(os.path.join(d, "*.tfrecord.gz"))):
        out += [schema.decode_episode(r.numpy()) for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]
    return out


READERS = ["isal", "tf"]


@pytest.mark.parametrize("reader", READERS)
def test_frames_dataset_shapes_dtypes_and_content(tiny_rollouts, reader):
    ds = tfrecords.frames_dataset(tiny_rollouts, 16, repeat=False, shuffle_buffer=1000, reader=reader)
    assert ds.element_spec.shape.as_list() == [16, 64, 64, 3] and ds.element_spec.dtype == tf.uint8
    got = np.concatenate([b.numpy() for b in ds])
    assert got.shape == (160, 64, 64, 3)  # 4 x 40 frames, all of them in one pass
    want = np.concatenate([e.frames for e in _episodes(tiny_rollouts)])
    key = lambda a: sorted(x.tobytes() for x in a)  # noqa: E731
    assert key(got) == key(want)
    assert not np.array_equal(got, want), "frames should come shuffled"


def test_frames_dataset_repeats_and_drops_remainder(tiny_rollouts):
    ds = tfrecords.frames_dataset(tiny_rollouts, 48, shuffle_buffer=100)
    assert sum(1 for _ in ds.take(7)) == 7  # 336 frames > 160: it repeats
    assert ds.element_spec.shape[0] == 48


def test_sequence_dataset_windows_and_mask(tiny_rollouts):
    eps = {e.seed: e for e in _episodes(tiny_rollouts)}
    ds = tfrecords.sequence_dataset(tiny_rollouts, 1, 25, repeat=False, shuffle=False)
    spec = ds.element_spec
    assert spec["frames"].shape.as_list() == [1, 25, 64, 64, 3] and spec["frames"].dtype == tf.uint8
    assert spec["actions"].shape.as_list() == [1, 25, 3] and spec["mask"].shape.as_list() == [1, 25]
    seen = {}
    for b in ds:
        seed = int(b["seed"][0])
        seen.setdefault(seed, []).append(b)
    assert set(seen) == set(eps)
    for seed, wins in seen.items():
        ep = eps[seed]
        assert len(wins) == 2  # 40 steps -> 25 + 15 padded
        wins.sort(key=lambda w: int(w["start"][0]))
        assert [int(w["start"][0]) for w in wins] == [0, 25]
        mask = np.concatenate([w["mask"][0].numpy() for w in wins])
        np.testing.assert_array_equal(mask, np.r_[np.ones(40), np.zeros(10)])
        frames = np.concatenate([w["frames"][0].numpy() for w in wins])[:40]
        actions = np.concatenate([w["actions"][0].numpy() for w in wins])[:40]
        np.testing.assert_array_equal(frames, ep.frames)
        np.testing.assert_array_equal(actions, ep.actions)
        assert np.all(np.concatenate([w["actions"][0].numpy() for w in wins])[40:] == 0)


def _seeds_for(pattern, ctx):
    ds = tfrecords.sequence_dataset(pattern, 1, 100, repeat=False, shuffle=False, input_context=ctx)
    return [int(b["seed"][0]) for b in ds]


@pytest.mark.parametrize("pipelines", [2, 3])  # 2: whole shards per pipeline; 3 > 2 shards: every n-th episode
def test_input_context_sharding_is_disjoint_and_complete(tiny_rollouts, pipelines):
    everything = sorted(e.seed for e in _episodes(tiny_rollouts))
    parts = [_seeds_for(tiny_rollouts, tf.distribute.InputContext(pipelines, i, pipelines)) for i in range(pipelines)]
    flat = [s for p in parts for s in p]
    assert sorted(flat) == everything  # complete, and no episode twice
    assert sorted(len(p) for p in parts) == ([2, 2] if pipelines == 2 else [1, 1, 2])


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst, sorted(glob.glob(os.path.join(dst, "*.tfrecord.gz")))


@pytest.mark.parametrize("reader", READERS)
def test_corrupted_shard_raises_naming_the_file(tiny_rollouts, tmp_path, reader):
    d, shards = _copy(tiny_rollouts, str(tmp_path / "bad"))
    data = bytearray(open(shards[1], "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shards[1], "wb").write(bytes(data))
    with pytest.raises(tf.errors.OpError, match=os.path.basename(shards[1])):
        for _ in tfrecords.frames_dataset(d, 8, repeat=False, reader=reader):
            pass
    # skip_corrupt keeps the intact shard (and any episode read before the damage)
    n = sum(b.shape[0] for b in tfrecords.frames_dataset(d, 8, repeat=False, skip_corrupt=True, reader=reader))
    assert 80 <= n < 160
    _, problems = verify(d)
    assert len(problems) == 1 and os.path.basename(shards[1]) in problems[0]


@pytest.mark.parametrize("reader", READERS)
def test_truncated_shard_raises_naming_the_file(tiny_rollouts, tmp_path, reader):
    d, shards = _copy(tiny_rollouts, str(tmp_path / "trunc"))
    data = open(shards[0], "rb").read()
    open(shards[0], "wb").write(data[: len(data) * 2 // 3])
    with pytest.raises(tfrecords.ShardError, match=os.path.basename(shards[0])):
        tfrecords.frames_dataset(d, 8, reader=reader)
    n = sum(b.shape[0] for b in tfrecords.frames_dataset(d, 8, repeat=False, skip_corrupt=True, reader=reader))
    assert n == 80
    # without a manifest the size check is impossible, but the stream still fails loudly
    # (TensorFlow's reader with a DataLossError that does not name the file)
    os.remove(os.path.join(d, "manifest.json"))
    tfrecords.reader._manifest.cache_clear()
    match = os.path.basename(shards[0]) if reader == "isal" else None
    with pytest.raises(tf.errors.DataLossError if reader == "tf" else tf.errors.OpError, match=match):
        for _ in tfrecords.frames_dataset(d, 8, repeat=False, reader=reader):
            pass


def test_no_matching_shards_is_a_clear_error(tmp_path):
    with pytest.raises(tfrecords.ShardError, match="no shards match"):
        tfrecords.frames_dataset(str(tmp_path / "nothing*.tfrecord.gz"), 8)


def test_inspect_verifies_a_good_dataset(tiny_rollouts):
    manifest, problems = verify(tiny_rollouts)
    assert problems == [] and manifest["episodes"] == 4


def test_schema_round_trip_of_latents():
    rng = np.random.default_rng(0)
    ep = schema.Episode(
        actions=rng.normal(size=(7, 3)).astype(np.float32),
        rewards=rng.normal(size=7).astype(np.float32),
        terminals=np.r_[np.zeros(6), 1].astype(np.int64),
        seed=123,
        mu=rng.normal(size=(7, 32)).astype(np.float32),
        logvar=rng.normal(size=(7, 32)).astype(np.float32),
    )
    back = schema.decode_episode(schema.encode_episode(ep))
    for k in ("actions", "rewards", "terminals", "mu", "logvar"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ep, k))
    assert back.seed == 123 and back.frames is None
    with pytest.raises(ValueError, match="frames must be"):
        schema.encode_episode(
            schema.Episode(ep.actions, ep.rewards, ep.terminals, 1, frames=np.zeros((6, 8, 8, 3), np.uint8))
        )


def test_plan_shards_covers_every_item_once():
    plans = writer.plan_shards(10, 4, "x")
    assert [p.items for p in plans] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert plans[2].name == "x-00002-of-00003.tfrecord.gz"
    with pytest.raises(ValueError):
        writer.plan_shards(0, 4)
