"""frames_dataset throughput against a naive tf.data pipeline, measured in the same run.

    python benchmarks/bench_frames_dataset.py --data=runs/quickstart/rollouts

Naive: TFRecordDataset over all shards in sequence -> parse -> unbatch -> shuffle -> batch.
Ours: tfrecords.frames_dataset with each of --readers ("isal": ISA-L inflating in Python
threads, the default when installed; "tf": TensorFlow's reader with a parallel interleave).
Rounds alternate between the pipelines so machine noise hits all of them; the median of each
is reported, with its ratio to the naive one. Use a dataset of full-length (1000-step) episodes
for representative numbers.
"""

import argparse
import os
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import

import tensorflow as tf
from rounds import latest, medians  # benchmarks/ is on sys.path when run as a script

import tfrecords
from tfrecords import schema


def naive(files, batch, buffer):
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    spec = {schema.FRAMES: tf.io.FixedLenFeature([], tf.string)}
    ds = ds.map(
        lambda r: tf.reshape(
            tf.io.decode_raw(tf.io.parse_single_example(r, spec)[schema.FRAMES], tf.uint8), [-1, 64, 64, 3]
        )
    )
    return ds.repeat().unbatch().shuffle(buffer).batch(batch, drop_remainder=True)


def rate(ds, frames, batch, buffer):
    it = iter(ds)
    for _ in range(buffer // batch + 20):  # warm up: fill the shuffle buffer and start the threads
        next(it)
    n = frames // batch
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * batch / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="rollout dataset directory")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--shuffle_buffer", type=int, default=10_000)
    p.add_argument("--frames", type=int, default=60_000, help="frames timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--readers", default="isal,tf", help="frames_dataset readers to time, comma-separated")
    a = p.parse_args()
    files = tfrecords.list_shards(a.data)
    readers = [r for r in a.readers.split(",") if r]
    base, ours = [], {r: [] for r in readers}
    for i in range(a.rounds):
        base.append(rate(naive(files, a.batch, a.shuffle_buffer), a.frames, a.batch, a.shuffle_buffer))
        for r in readers:
            ds = tfrecords.frames_dataset(a.data, a.batch, shuffle_buffer=a.shuffle_buffer, reader=r)
            ours[r].append(rate(ds, a.frames, a.batch, a.shuffle_buffer))
        print(f"round {i}: naive {base[-1]:,.0f} frames/s, " + latest("frames_dataset", readers, ours, ",.0f"))
    for r, o, b in medians(base, readers, ours):
        print(
            f"frames_dataset[{r}]: {o:,.0f} frames/s; naive: {b:,.0f} frames/s; ratio {o / b:.2f}x "
            f"({len(files)} GZIP shards, batch {a.batch}, shuffle buffer {a.shuffle_buffer}, {os.cpu_count()} cores)"
        )


if __name__ == "__main__":
    main()
