"""tfrecords.fast_reader: the same frames as TensorFlow's reader, checksums, layouts, partitions, gfile paths."""

import glob
import gzip
import hashlib
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf
from helpers import file_digest

import tfrecords
from tfrecords import fast_reader, schema
from tfrecords.fast_reader import _NeedMore, _ShardFrames, _Unusual, locate_bytes_feature

FRAME_BYTES = 64 * 64 * 3


def _shards(d):
    return sorted(glob.glob(os.path.join(d, "*.tfrecord.gz")))


def _tf_frames(path):
    return [schema.decode_episode(r.numpy()).frames for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def _key(frames):
    return sorted(f.tobytes() for f in frames.reshape(-1, *schema.FRAME_SHAPE))


def _write(path, payloads):
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for p in payloads:
            w.write(bytes(p))


def test_fast_reader_is_installed():
    # setup.cfg depends on isal and google-crc32c: CI must exercise the fast path, not fall back
    assert fast_reader.available(), fast_reader.unavailable_reason()


def test_reads_exactly_what_tensorflow_reads(tiny_rollouts):
    for path in _shards(tiny_rollouts):
        ours, theirs = list(_ShardFrames(path, FRAME_BYTES)), _tf_frames(path)
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs):
            assert a.ctypes.data % 64 == 0  # aligned, so tf.data takes it without a copy
            np.testing.assert_array_equal(a.reshape(b.shape), b)


def test_episode_tensors_stay_intact_while_held(tiny_rollouts):
    # Arrays go to TensorFlow uncopied: every episode must keep its own buffer.
    files = _shards(tiny_rollouts)
    ds = fast_reader.episode_frames_dataset(
        [(f, 2) for f in files], schema.FRAME_SHAPE, shuffle=True, seed=1, repeat=False, skip_corrupt=False, threads=2
    )
    held = list(ds)  # all alive at once
    want = [f for p in files for f in _tf_frames(p)]
    assert sorted(t.numpy().tobytes() for t in held) == sorted(f.tobytes() for f in want)


@pytest.mark.parametrize("where", ["frames", "start"])
def test_record_checksums_are_verified(tiny_rollouts, tmp_path, where):
    # A valid GZIP stream around a changed payload: only the records' own checksums can tell.
    raw = bytearray(gzip.decompress(open(_shards(tiny_rollouts)[0], "rb").read()))
    (n0,) = struct.unpack_from("<Q", raw, 0)
    (n1,) = struct.unpack_from("<Q", raw, 16 + n0)
    # one bit of the second episode: deep in its frames (read straight into the output) or near its start
    flip = 16 + n0 + 12 + (n1 // 2 if where == "frames" else 20)
    raw[flip] ^= 0x01
    bad = str(tmp_path / "bad.tfrecord.gz")
    open(bad, "wb").write(gzip.compress(bytes(raw)))
    it = iter(_ShardFrames(bad, FRAME_BYTES))
    next(it)  # the first episode is intact
    with pytest.raises(tfrecords.ShardError, match=r"bad\.tfrecord\.gz.*fails its checksum"):
        next(it)
    raw[flip] ^= 0x01
    raw[3] ^= 0x01  # the first record's length
    open(bad, "wb").write(gzip.compress(bytes(raw)))
    with pytest.raises(tfrecords.ShardError, match="length fails its checksum"):
        list(_ShardFrames(bad, FRAME_BYTES))


def _example(order, frames=b"\x07" * FRAME_BYTES * 2, extra=3):
    feats = {
        "actions": tf.train.Feature(float_list=tf.train.FloatList(value=np.arange(6 * extra, dtype=np.float32))),
        "frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=[frames])),
        "seed": tf.train.Feature(int64_list=tf.train.Int64List(value=[-5])),
        "tag": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"frames"])),
    }
    ex = tf.train.Example()
    for k in order:
        ex.features.feature[k].CopyFrom(feats[k])
    return ex.SerializeToString()


@pytest.mark.parametrize(
    "order", [("frames", "actions", "seed", "tag"), ("tag", "actions", "seed", "frames"), ("seed", "frames", "tag")]
)
def test_locate_bytes_feature_agrees_with_protobuf(order):
    rec = _example(order, frames=bytes(range(256)) * 96)
    start, n = locate_bytes_feature(rec, len(rec), len(rec))
    assert rec[start : start + n] == tf.train.Example.FromString(rec).features.feature["frames"].bytes_list.value[0]
    # with only a prefix read, it asks for more unless the frames' header is in it
    prefix = start - 1
    with pytest.raises(_NeedMore):
        locate_bytes_feature(rec, prefix, len(rec))
    assert locate_bytes_feature(rec, start, len(rec)) == (start, n)
    assert locate_bytes_feature(_example(("actions", "seed")), 10**6, len(_example(("actions", "seed")))) is None


def test_unusual_layouts_fall_back_to_protobuf(tmp_path):
    two_values = tf.train.Example()
    two_values.features.feature["frames"].bytes_list.value.extend([b"\x01" * FRAME_BYTES, b"\x02" * FRAME_BYTES])
    with pytest.raises(_Unusual):
        rec = two_values.SerializeToString()
        locate_bytes_feature(rec, len(rec), len(rec))
    # a map entry with its value before its key: legal protobuf, read through the general path
    frames = np.random.default_rng(0).integers(0, 256, 3 * FRAME_BYTES, dtype=np.uint8).tobytes()
    value = tf.train.Feature(bytes_list=tf.train.BytesList(value=[frames])).SerializeToString()
    entry = b"\x12" + _varint(len(value)) + value + b"\x0a\x06frames"
    features = b"\x0a" + _varint(len(entry)) + entry
    rec = b"\x0a" + _varint(len(features)) + features
    assert tf.train.Example.FromString(rec).features.feature["frames"].bytes_list.value[0] == frames
    path = str(tmp_path / "odd.tfrecord.gz")
    _write(path, [rec, _example(("actions", "frames"))])
    got = list(_ShardFrames(path, FRAME_BYTES))
    assert got[0].tobytes() == frames and got[1].tobytes() == b"\x07" * FRAME_BYTES * 2
    assert all(a.ctypes.data % 64 == 0 for a in got)
    # frames that are not whole frames are refused, naming the file
    _write(path, [_example(("frames",), frames=b"\x00" * (FRAME_BYTES + 1))])
    with pytest.raises(tfrecords.ShardError, match="odd.tfrecord.gz.*not whole frames"):
        list(_ShardFrames(path, FRAME_BYTES))


def _varint(n):
    out = bytearray()
    while True:
        if n < 0x80:
            return bytes(out + bytes([n]))
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def test_long_records_grow_the_prefix(tmp_path):
    # small features larger than the first read: the header of the frames lies past 64 KiB
    rec = _example(("actions", "frames"), extra=5000)
    path = str(tmp_path / "long.tfrecord.gz")
    _write(path, [rec])
    (got,) = list(_ShardFrames(path, FRAME_BYTES))
    assert got.tobytes() == b"\x07" * FRAME_BYTES * 2


@pytest.mark.parametrize("pipelines", [2, 3])  # 2: whole shards each; 3 > 2 shards: a share of every shard
def test_input_pipelines_read_disjoint_and_complete_frames(tiny_rollouts, pipelines):
    parts = []
    for i in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, i, pipelines)
        ds = tfrecords.frames_dataset(tiny_rollouts, 4, shuffle=False, repeat=False, input_context=ctx, reader="isal")
        parts.append([f.tobytes() for b in ds for f in b.numpy()])
    everything = _key(np.concatenate([f for p in _shards(tiny_rollouts) for f in _tf_frames(p)]))
    assert sorted(f for p in parts for f in p) == everything
    assert all(p for p in parts)


def test_reads_through_gfile_filesystems(tiny_rollouts):
    d = "ram://fast_reader_test/rollouts"
    tf.io.gfile.makedirs(d)
    for f in glob.glob(os.path.join(tiny_rollouts, "*")):
        if os.path.isfile(f):
            tf.io.gfile.copy(f, d + "/" + os.path.basename(f), overwrite=True)
    got = np.concatenate([b.numpy() for b in tfrecords.frames_dataset(d, 8, repeat=False, reader="isal")])
    want = np.concatenate([f for p in _shards(tiny_rollouts) for f in _tf_frames(p)])
    assert _key(got) == _key(want)


def test_every_shard_corrupted_is_an_error_even_when_skipping(tiny_rollouts, tmp_path):
    d = str(tmp_path / "allbad")
    shutil.copytree(tiny_rollouts, d)
    os.remove(os.path.join(d, "manifest.json"))
    for f in _shards(d):
        open(f, "wb").write(b"\x1f\x8b\x08\x00garbage" * 10)
    tfrecords.reader._manifest.cache_clear()
    with pytest.raises(tf.errors.OpError, match="every shard is corrupted"):
        next(iter(tfrecords.frames_dataset(d, 8, skip_corrupt=True, reader="isal")))


def test_unknown_reader_is_refused(tiny_rollouts):
    with pytest.raises(ValueError, match="reader must be one of"):
        tfrecords.frames_dataset(tiny_rollouts, 8, reader="fastest")


def test_binaries_report_a_damaged_shard_in_one_line(tiny_rollouts, tmp_path):
    from tfrecords.runtime.cli import shard_error_line

    d = str(tmp_path / "damaged")
    shutil.copytree(tiny_rollouts, d)
    shard = _shards(d)[0]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    with pytest.raises(tf.errors.OpError) as e:
        for _ in tfrecords.frames_dataset(d, 8, repeat=False, reader="isal"):
            pass
    line = shard_error_line(e.value)
    assert line.startswith("corrupted or truncated shard " + shard) and "\n" not in line
    assert shard_error_line(tf.errors.UnknownError(None, None, "something else")) is None
    assert shard_error_line(ValueError("ShardError: not from TensorFlow")) is None


@pytest.mark.parametrize("kind", ["isal", "tf"])
def test_shard_writers_write_standard_gzip_tfrecords(tmp_path, kind):
    from tfrecords import writer

    records = [b"", b"x", np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()]
    paths = [str(tmp_path / f"{kind}-{i}.tfrecord.gz") for i in range(2)]
    for p in paths:
        with writer.record_writer(p, kind) as w:
            for r in records:
                w.write(r)
    read = [r.numpy() for r in tf.data.TFRecordDataset(paths[0], compression_type="GZIP")]
    assert [hashlib.sha256(r).hexdigest() for r in read] == [hashlib.sha256(r).hexdigest() for r in records]
    assert file_digest(paths[0]) == file_digest(paths[1])  # same records, same bytes
    with pytest.raises(ValueError, match="writer must be one of"):
        writer.record_writer(paths[0], "lz4")


def test_reader_threads_stop_with_their_iterator(tiny_rollouts):
    import gc
    import threading
    import time

    def readers():
        return [t for t in threading.enumerate() if t.name.startswith("shard-reader-")]

    it = iter(tfrecords.frames_dataset(tiny_rollouts, 8, reader="isal"))  # repeats forever
    next(it)
    assert readers()
    del it
    gc.collect()
    deadline = time.time() + 10
    while readers() and time.time() < deadline:
        time.sleep(0.05)
    assert not readers()
