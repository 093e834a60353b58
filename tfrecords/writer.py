"""Crash-safe, resumable writing of sharded episode datasets (rollouts and latent series).

The layout of a dataset directory ``OUT``:

* ``OUT/<prefix>-00003-of-00010.tfrecord.gz``: finished shards, each renamed into place only
  once complete, so a shard that exists under its final name is whole;
* ``OUT/.incomplete/``: while a run is unfinished, its spec (``spec.json``), the statistics of
  each finished shard (``<shard>.json``, written before the shard is renamed into place) and
  temporary files of shards in progress;
* ``OUT/manifest.json``: written last, atomically; then ``.incomplete/`` is removed.

Rerunning the same command resumes: finished shards are kept, temporary ones are redone.
A directory that holds a different run (another spec) is refused with :class:`RunMismatchError`.
Paths go through ``tf.io.gfile`` so ``gs://`` works as well as local disk.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from tfrecords import fast_reader, schema
from tfrecords.runtime import fileio
from tfrecords.runtime.errors import RunMismatchError, UsageError

INCOMPLETE_DIR = ".incomplete"
SPEC_NAME = "spec.json"


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Which items (episode indices) go into which shard."""

    index: int
    num_shards: int
    items: tuple[int, ...]
    prefix: str = "shard"

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.index:05d}-of-{self.num_shards:05d}{schema.SHARD_SUFFIX}"


def plan_shards(num_items: int, items_per_shard: int, prefix: str = "shard") -> list[ShardPlan]:
    """Splits items ``0..num_items-1`` into consecutive shards of ``items_per_shard``."""
    if num_items <= 0 or items_per_shard <= 0:
        raise ValueError("num_items and items_per_shard must be positive")
    n = -(-num_items // items_per_shard)
    return [
        ShardPlan(i, n, tuple(range(i * items_per_shard, min((i + 1) * items_per_shard, num_items))), prefix)
        for i in range(n)
    ]


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


# ISA-L's level 3 compresses 64x64 frames 4x faster than TensorFlow's zlib level 6, into ~1.26x
# the bytes, which ISA-L inflates as fast (BENCHMARKS.md, rollout generation).
ISAL_LEVEL = 3


class GzipRecordWriter:
    """Writes a GZIP TFRecord file through ISA-L: the same format as ``tf.io.TFRecordWriter(path, "GZIP")``.

    Any TFRecord reader reads it. The GZIP header carries no file name and mtime 0, so equal
    records give byte-identical files.
    """

    def __init__(self, path: str, level: int = ISAL_LEVEL):
        from isal import igzip

        self._raw = _gfile().GFile(path, "wb") if "://" in path else open(path, "wb")
        self._gz = igzip.IGzipFile(filename="", mode="wb", compresslevel=level, fileobj=self._raw, mtime=0)

    def write(self, record: bytes) -> None:
        """Appends one record (length, its checksum, the data, its checksum)."""
        length = struct.pack("<Q", len(record))
        self._gz.write(length + struct.pack("<I", fast_reader.masked_crc(length)))
        self._gz.write(record)
        self._gz.write(struct.pack("<I", fast_reader.masked_crc(record)))

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._raw.close()

    def __enter__(self) -> GzipRecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WRITERS = ("auto", "isal", "tf")


def record_writer(path: str, kind: str = "auto") -> Any:
    """A GZIP TFRecord writer for ``path``: ``"isal"`` (ISA-L level 3), ``"tf"`` (TensorFlow's zlib
    level 6, smaller shards, slower), or ``"auto"``: ISA-L when installed."""
    if kind not in WRITERS:
        raise ValueError(f"writer must be one of {WRITERS}, got {kind!r}")
    if kind == "isal" or (kind == "auto" and fast_reader.available()):
        return GzipRecordWriter(path)
    import tensorflow as tf

    return tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type=schema.COMPRESSION))


def write_shard(out_dir: str, plan: ShardPlan, episodes: Iterable[schema.Episode], writer: str = "auto") -> dict:
    """Writes one shard atomically (through ``record_writer(..., writer)``) and returns its statistics.

    Episodes are written to a temporary file in ``OUT/.incomplete``; the statistics go to
    ``OUT/.incomplete/<shard>.json``; only then is the shard renamed to its final name.
    """
    import tensorflow as tf

    gfile = tf.io.gfile
    inc = fileio.join(out_dir, INCOMPLETE_DIR)
    tmp = fileio.join(inc, f"{plan.name}.tmp-{uuid.uuid4().hex[:8]}")
    stats: dict[str, Any]
    stats = {"name": plan.name, "episodes": 0, "frames": 0, "return_sum": 0.0, "first_item": plan.items[0]}
    try:
        with record_writer(tmp, writer) as w:
            for ep in episodes:
                w.write(schema.encode_episode(ep))
                stats["episodes"] += 1
                stats["frames"] += len(ep)
                stats["return_sum"] += ep.total_reward
        if stats["episodes"] != len(plan.items):
            raise RuntimeError(f"{plan.name}: produced {stats['episodes']} episodes, planned {len(plan.items)}")
        stats["bytes"] = int(gfile.stat(tmp).length)
        fileio.write_json_atomic(fileio.join(inc, plan.name + ".json"), stats)
        gfile.rename(tmp, fileio.join(out_dir, plan.name), overwrite=False)
    except BaseException:
        if gfile.exists(tmp):
            gfile.remove(tmp)
        raise
    return stats


class ShardedRun:
    """The state of one output directory: what is finished, what is left, and the manifest.

    Args:
      out_dir: the dataset directory (created if missing).
      kind: ``schema.KIND_ROLLOUTS`` or ``schema.KIND_LATENTS``.
      spec: everything that determines the data (flags that change content). Resuming with
        a different spec is refused; settings that do not change the data (worker counts)
        must not be in it.
      plans: the shard plan.
    """

    def __init__(self, out_dir: str, kind: str, spec: dict, plans: Sequence[ShardPlan]):
        self.out_dir = out_dir
        self.kind = kind
        self.spec = json.loads(json.dumps(spec))  # normalized as it will read back
        self.plans = list(plans)
        self.manifest_path = fileio.join(out_dir, schema.MANIFEST_NAME)
        self.inc_dir = fileio.join(out_dir, INCOMPLETE_DIR)

    def prepare(self) -> bool:
        """Checks the directory and readies it for writing. Returns True if the run is already complete.

        Raises RunMismatchError if the directory belongs to another run, OSError-like errors
        if it cannot be created or written.
        """
        gfile = _gfile()
        if gfile.exists(self.manifest_path):
            manifest = fileio.read_json(self.manifest_path)
            if manifest.get("spec") != self.spec or manifest.get("kind") != self.kind:
                raise RunMismatchError(
                    f"{self.out_dir} already holds a finished {manifest.get('kind', 'unknown')} dataset made with "
                    f"different settings ({_spec_diff(manifest.get('spec') or {}, self.spec)}); "
                    "choose another output directory"
                )
            return True
        spec_path = fileio.join(self.inc_dir, SPEC_NAME)
        if gfile.exists(spec_path):
            old = fileio.read_json(spec_path)
            if old != {"kind": self.kind, "spec": self.spec}:
                raise RunMismatchError(
                    f"{self.out_dir} holds an unfinished run with different settings "
                    f"({_spec_diff(old.get('spec') or {}, self.spec)}); rerun that command to finish it, "
                    "or choose another output directory"
                )
        else:
            if gfile.exists(self.out_dir) and gfile.glob(fileio.join(self.out_dir, "*" + schema.SHARD_SUFFIX)):
                raise RunMismatchError(
                    f"{self.out_dir} already holds shards from an unknown run; choose another output directory"
                )
            gfile.makedirs(self.inc_dir)
            fileio.write_json_atomic(spec_path, {"kind": self.kind, "spec": self.spec})
        # Temporary files are shards a killed run did not finish: redo them.
        for tmp in gfile.glob(fileio.join(self.inc_dir, "*.tmp-*")):
            gfile.remove(tmp)
        return False

    def open(self) -> dict | None:
        """:meth:`prepare` for a binary: the finished run's manifest if it is already complete, else None.

        RunMismatchError passes through; any other failure to read or create the directory becomes
        a one-line UsageError ("cannot write to OUT: ...").
        """
        try:
            return fileio.read_json(self.manifest_path) if self.prepare() else None
        except RunMismatchError:
            raise
        except Exception as e:  # gfile raises OSError or tf.errors.OpError subclasses
            raise UsageError(f"cannot write to {self.out_dir}: {getattr(e, 'message', e)}") from None

    def is_done(self, plan: ShardPlan) -> bool:
        gfile = _gfile()
        return gfile.exists(fileio.join(self.out_dir, plan.name)) and gfile.exists(
            fileio.join(self.inc_dir, plan.name + ".json")
        )

    def pending(self) -> list[ShardPlan]:
        """Plans whose shard is not finished yet."""
        return [p for p in self.plans if not self.is_done(p)]

    def finalize(self, extra: dict | None = None) -> dict:
        """Writes the manifest from the finished shards' statistics and removes ``.incomplete``."""
        gfile = _gfile()
        missing = [p.name for p in self.pending()]
        if missing:
            raise RuntimeError(f"cannot finalize {self.out_dir}: {len(missing)} shards unfinished, e.g. {missing[0]}")
        shards = [fileio.read_json(fileio.join(self.inc_dir, p.name + ".json")) for p in self.plans]
        episodes = sum(s["episodes"] for s in shards)
        manifest = {
            "schema_version": schema.SCHEMA_VERSION,
            "kind": self.kind,
            "episodes": int(episodes),
            "frames": int(sum(s["frames"] for s in shards)),
            "mean_return": float(sum(s["return_sum"] for s in shards) / max(episodes, 1)),
            "shards": shards,
            "spec": self.spec,
            **(extra or {}),
        }
        fileio.write_json_atomic(self.manifest_path, manifest)
        gfile.rmtree(self.inc_dir)
        return manifest


def _spec_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not keys:
        return "different kind"
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys[:4])


def package_versions(names: Sequence[str] = ("tensorflow", "gymnasium", "numpy", "world-models")) -> dict:
    """Installed versions of the packages that shape the data, for manifests."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out
