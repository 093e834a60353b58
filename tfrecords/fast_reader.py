"""The fast path of ``frames_dataset``: ISA-L inflates shards in Python threads, frames reach tf.data uncopied.

TensorFlow's own GZIP TFRecord reader inflates with zlib, about 32,000 of this project's 64x64
frames per second per core, and inflating is most of the cost of feeding V. ISA-L (the
``isal`` package) inflates the same standard GZIP stream about 2.5x faster and releases the
GIL while it does, so a few threads keep every core inflating. Each record is inflated
straight into a fresh 64-byte-aligned buffer at the frames' offset; ``from_generator`` hands
such arrays to TensorFlow without a copy.

The stored format is unchanged, and both masked CRC-32C checksums of every record are verified,
as TensorFlow's reader does: damage raises :class:`ShardError` naming the
shard, or with ``skip_corrupt`` skips the rest of that shard with one warning.

Limit: the resulting dataset runs Python, so it cannot be serialized (tf.data service, or a
remote host that runs the input graph for you). ``frames_dataset(reader="tf")`` keeps the
whole pipeline in TensorFlow for those setups.
"""

from __future__ import annotations

import io
import queue
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from tfrecords import schema
from tfrecords.runtime.errors import OneLineError

try:
    import google_crc32c
    from isal import igzip, isal_zlib

    # isal's stub declares `error: Exception`, an instance; at run time it is the exception class
    _INFLATE_ERRORS: tuple[type[BaseException], ...] = (isal_zlib.error, OSError, EOFError, ValueError)  # type: ignore[assignment]
    _MISSING = None if google_crc32c.implementation == "c" else "google-crc32c has no C extension on this platform"
except ImportError as e:  # a platform without wheels: frames_dataset falls back to TensorFlow's reader
    _MISSING = str(e)

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # record length, masked CRC-32C of the length
_ALIGN = 64  # TensorFlow aliases NumPy arrays this aligned instead of copying them
_PREFIX = 64 << 10  # first read of a record: the Example's small features and the frames' header
_FRAMES_KEY = schema.FRAMES.encode()

READERS = (
    "auto",
    "isal",
    "tf",
)  # frames_dataset(reader=...): this module, TensorFlow's reader, or the first if installed


class ShardError(OneLineError, RuntimeError):
    """A shard is missing, truncated or corrupted (the readers' one-line error, also ``tfrecords.ShardError``)."""


def available() -> bool:
    """True if the fast reader's libraries (isal, google-crc32c with its C extension) are importable."""
    return _MISSING is None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None if it is True)."""
    return _MISSING


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes | np.ndarray) -> int:
    """TFRecord's masked CRC-32C of ``data`` (bytes or a contiguous uint8 array)."""
    return _masked(google_crc32c.value(data))


def _aligned_empty(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes]


# --- where the frames lie in a serialized tf.train.Example (protobuf wire format) ---------------


class _NeedMore(Exception):
    """The answer lies beyond the bytes read so far."""


class _Unusual(Exception):
    """A layout no writer of this project produces: parse the whole record with protobuf instead."""


def _varint(buf: Any, i: int, avail: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= avail:
            raise _NeedMore
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise _Unusual


def _skip(buf: Any, i: int, wire: int, avail: int) -> int:
    if wire == 0:
        return _varint(buf, i, avail)[1]
    if wire == 1:
        return i + 8
    if wire == 5:
        return i + 4
    if wire == 2:
        n, i = _varint(buf, i, avail)
        return i + n
    raise _Unusual


def _frames_in_entry(buf: Any, i: int, avail: int, key: bytes) -> tuple[int, int] | None:
    """A ``Features.feature`` map entry: key (field 1), then value (field 2: Feature.bytes_list.value)."""
    tag, i = _varint(buf, i, avail)
    if tag != 0x0A:
        raise _Unusual
    klen, i = _varint(buf, i, avail)
    if i + klen > avail:
        raise _NeedMore
    if bytes(buf[i : i + klen]) != key:
        return None
    i += klen
    for expected in (0x12, 0x0A, 0x0A):  # entry.value, Feature.bytes_list, BytesList.value
        tag, i = _varint(buf, i, avail)
        if tag != expected:
            raise _Unusual
        n, i = _varint(buf, i, avail)
    return i, n


def locate_bytes_feature(
    buf: bytes | bytearray | memoryview, avail: int, size: int, key: bytes = _FRAMES_KEY
) -> tuple[int, int] | None:
    """Offset and length of the bytes value of feature ``key`` in a serialized ``tf.train.Example``.

    ``buf[:avail]`` holds the first bytes of a ``size``-byte record. Returns None if the Example
    has no such feature. Raises ``_NeedMore`` if finding it needs bytes past ``avail``, and
    ``_Unusual`` for layouts this project's writers never produce (a bytes list of several values,
    an entry with its value before its key). The first entry with that key is taken; protobuf's
    rule is the last, which differs only for records holding the key twice.
    """
    i = 0
    while i < size:
        tag, i = _varint(buf, i, avail)
        if tag != 0x0A:  # not Example.features
            i = _skip(buf, i, tag & 7, avail)
            continue
        flen, i = _varint(buf, i, avail)
        end = i + flen
        while i < end:
            tag, i = _varint(buf, i, avail)
            if tag != 0x0A:  # not a Features.feature entry
                i = _skip(buf, i, tag & 7, avail)
                continue
            elen, i = _varint(buf, i, avail)
            found = _frames_in_entry(buf, i, avail, key)
            if found is not None:
                start, n = found
                if start + n != i + elen:
                    raise _Unusual  # more than one value, or fields after it
                return found
            i += elen
    return None


# --- records of one shard ------------------------------------------------------------------------


class _GFileRaw(io.RawIOBase):
    """A ``tf.io.gfile`` file (gs://, ram://, ...) as the raw stream igzip reads from."""

    def __init__(self, path: str):
        import tensorflow as tf

        self._f = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def _open(path: str) -> io.RawIOBase | io.BufferedReader:
    return _GFileRaw(path) if "://" in path else open(path, "rb")


def _read_exact(stream: Any, view: memoryview) -> int:
    """Fills ``view`` from ``stream``; returns the bytes read (fewer only at the end of the stream)."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _ShardFrames:
    """Iterates the frames of each episode of one GZIP TFRecord shard, checking every checksum."""

    def __init__(self, path: str, frame_bytes: int):
        self.path = path
        self.frame_bytes = frame_bytes

    def _bad(self, what: str) -> ShardError:
        return ShardError(f"corrupted or truncated shard {self.path}: {what}")

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            with _open(self.path) as raw, igzip.IGzipFile(fileobj=raw, mode="rb") as gz:
                header = bytearray(_HEADER.size)
                while True:
                    got = _read_exact(gz, memoryview(header))
                    if got == 0:
                        return
                    if got < len(header):
                        raise self._bad("it ends inside a record header")
                    size, length_crc = _HEADER.unpack(header)
                    if masked_crc(bytes(header[:8])) != length_crc:
                        raise self._bad("a record length fails its checksum")
                    yield self._record(gz, size)
        except ShardError:
            raise
        except _INFLATE_ERRORS as e:  # bad deflate data, a bad GZIP header or trailer, an early end
            raise self._bad(f"{type(e).__name__}: {e}") from None

    def _record(self, gz: Any, size: int) -> np.ndarray:
        """Reads one record of ``size`` bytes (and its checksum); returns its frames, flat and aligned."""
        avail = min(size, _PREFIX)
        buf = bytearray(avail)
        if _read_exact(gz, memoryview(buf)) < avail:
            raise self._bad("it ends inside a record")
        while True:
            try:
                loc = locate_bytes_feature(buf, avail, size)
                break
            except _NeedMore:
                if avail >= size:
                    raise self._bad("a record is not a valid tf.train.Example") from None
                more = min(size - avail, avail)
                buf.extend(bytes(more))
                if _read_exact(gz, memoryview(buf)[avail:]) < more:
                    raise self._bad("it ends inside a record") from None
                avail += more
            except _Unusual:
                return self._whole_record(gz, buf, avail, size)
        if loc is None:
            raise self._bad(f"a record has no {schema.FRAMES!r} bytes feature")
        start, n = loc
        self._check_size(n)
        out = _aligned_empty(n)
        have = max(0, min(avail, start + n) - start)  # frames bytes already read
        out[:have] = np.frombuffer(buf, np.uint8, have, start)
        crc = google_crc32c.value(np.frombuffer(buf, np.uint8, avail))
        if have < n:
            # numpy's stubs give ndarray __buffer__ only from Python 3.12 on
            if _read_exact(gz, memoryview(out[have:])) < n - have:  # type: ignore[arg-type]
                raise self._bad("it ends inside a record")
            crc = google_crc32c.extend(crc, out[have:])
        rest = size - max(avail, start + n)
        tail = bytearray(rest + 4)
        if _read_exact(gz, memoryview(tail)) < len(tail):
            raise self._bad("it ends inside a record")
        crc = google_crc32c.extend(crc, np.frombuffer(tail, np.uint8, rest))
        if _masked(crc) != struct.unpack_from("<I", tail, rest)[0]:
            raise self._bad("a record fails its checksum")
        return out

    def _whole_record(self, gz: Any, buf: bytearray, avail: int, size: int) -> np.ndarray:
        """The slow, general path: read all of the record and let protobuf parse it."""
        import tensorflow as tf

        buf.extend(bytes(size + 4 - avail))
        if _read_exact(gz, memoryview(buf)[avail:]) < size + 4 - avail:
            raise self._bad("it ends inside a record")
        if masked_crc(bytes(buf[:size])) != struct.unpack_from("<I", buf, size)[0]:
            raise self._bad("a record fails its checksum")
        feature = tf.train.Example.FromString(bytes(buf[:size])).features.feature.get(schema.FRAMES)
        if feature is None or len(feature.bytes_list.value) != 1:
            raise self._bad(f"a record has no single {schema.FRAMES!r} bytes value")
        data = feature.bytes_list.value[0]
        self._check_size(len(data))
        out = _aligned_empty(len(data))
        out[:] = np.frombuffer(data, np.uint8)
        return out

    def _check_size(self, n: int) -> None:
        if n % self.frame_bytes:
            raise self._bad(
                f"a record's frames ({n} bytes) are not whole frames of {self.frame_bytes} bytes; wrong frame_shape?"
            )


# --- several shards, read by threads ----------------------------------------------------------------


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


class _Feed:
    """Reader threads that take shards in turn and put each episode's frames into a bounded queue.

    Memory: at most ``threads`` episodes queued plus one being read per thread.
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, int]],
        frame_bytes: int,
        *,
        threads: int,
        shuffle: bool,
        seed: int | None,
        repeat: bool,
        skip_corrupt: bool,
        keep: Callable[[int, int], bool] | None,
    ):
        self._shards = list(shards)
        self._frame_bytes = frame_bytes
        self._skip_corrupt = skip_corrupt
        self._keep = keep
        self._order = self._shard_order(shuffle, seed, repeat)
        self._lock = threading.Lock()
        self._bad: set[str] = set()
        self._productive: set[str] = set()
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=threads)
        self._threads = [
            threading.Thread(target=self._work, daemon=True, name=f"shard-reader-{i}") for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _shard_order(self, shuffle: bool, seed: int | None, repeat: bool) -> Iterator[int]:
        rng = np.random.default_rng(seed)
        while True:
            yield from (rng.permutation(len(self._shards)) if shuffle else range(len(self._shards)))
            if not repeat:
                return

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    j = next(self._order, None)
                    if j is not None and self._bad and not self._productive and len(self._bad) == len(self._shards):
                        raise ShardError("no episode can be read: every shard is corrupted")
                if j is None:
                    break
                self._read(j)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(_Failure(e))
        finally:
            self._put(_DONE)

    def _read(self, j: int) -> None:
        path, expected = self._shards[j]
        count = 0
        try:
            for frames in _ShardFrames(path, self._frame_bytes):
                if self._keep is None or self._keep(j, count):
                    if not self._put(frames):
                        return
                    if path not in self._productive:
                        with self._lock:
                            self._productive.add(path)
                count += 1
            if expected >= 0 and count != expected:
                raise ShardError(f"corrupted or truncated shard {path}: read {count} of {expected} episodes")
        except ShardError as e:
            if not self._skip_corrupt:
                raise
            with self._lock:
                first = path not in self._bad
                self._bad.add(path)
            if first:
                logging.warning("skipping the rest of a shard: %s", e)

    def __iter__(self) -> Iterator[np.ndarray]:
        done = 0
        while done < len(self._threads):
            item = self._queue.get()
            if item is _DONE:
                done += 1
            elif isinstance(item, _Failure):
                raise item.error
            else:
                yield item

    def close(self) -> None:
        self._stop.set()


def episode_frames_dataset(
    shards: Sequence[tuple[str, int]],
    frame_shape: Sequence[int],
    *,
    shuffle: bool,
    seed: int | None,
    repeat: bool,
    skip_corrupt: bool,
    threads: int,
    keep: Callable[[int, int], bool] | None = None,
) -> Any:
    """A ``tf.data.Dataset`` of each episode's frames ``[T, H, W, C]`` uint8, in no fixed order.

    Args:
      shards: ``(path, expected_episodes)`` pairs; -1 when the count is unknown.
      frame_shape: ``(H, W, C)``.
      shuffle: a new random shard order every epoch (``seed`` makes the sequence of orders repeat).
      repeat: loop over the shards forever.
      skip_corrupt: warn once and skip the rest of a damaged shard instead of raising.
      threads: reader threads (each inflates one shard at a time).
      keep: ``keep(shard_index, episode_index)`` selects episodes (for disjoint input pipelines).
    """
    import tensorflow as tf

    if not available():
        raise ShardError(f"the fast shard reader is unavailable: {_MISSING}")
    shape = tuple(int(d) for d in frame_shape)
    frame_bytes = int(np.prod(shape))

    def generate() -> Iterator[np.ndarray]:
        opts: dict[str, Any] = dict(
            threads=threads, shuffle=shuffle, seed=seed, repeat=repeat, skip_corrupt=skip_corrupt, keep=keep
        )
        feed = _Feed(shards, frame_bytes, **opts)
        try:
            for flat in feed:
                yield flat.reshape(-1, *shape)
        finally:
            feed.close()

    return tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec([None, *shape], tf.uint8))
