"""File access on local disk or any ``tf.io.gfile`` filesystem (``gs://``, ``ram://``, ...).

The one set of helpers every layer uses instead of ``open``/``os.replace``/``os.path.join``:
path joins that keep URLs intact, atomic writes (a temporary object, then a rename over the
target; on GCS a rename is a copy and a delete, so a reader sees the old or the new object, never
half of one), reads that return None for a missing file, appends, and copying a locally written
file (a video) to its destination. ``wm.core.workdir`` builds the run-directory conventions
(config.json, metrics.jsonl, checkpoints) on top of these. TensorFlow is imported on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any

from tfrecords.runtime.errors import UsageError


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def gfile() -> Any:
    """``tf.io.gfile`` (imports TensorFlow on first use), for listing and stat."""
    return _gfile()


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths (gs://, ram://, ...), which must not go through os.path.abspath."""
    return "://" in str(path)


def join(*parts: str) -> str:
    """``os.path.join`` for local paths; ``/``-joined for URLs of any scheme."""
    if is_url(parts[0]):
        return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])
    return os.path.join(*parts)


def abspath(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs are returned as they are."""
    return path if is_url(path) else os.path.abspath(path)


def dirname(path: str) -> str:
    """The parent directory of ``path`` (absolute for local paths)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_url(path) else os.path.dirname(os.path.abspath(path))


def makedirs(path: str) -> None:
    """Creates ``path`` and its parents (no error if it exists)."""
    _gfile().makedirs(path)


def exists(path: str) -> bool:
    """True if ``path`` exists (file or directory)."""
    return _gfile().exists(path)


def open_read(path: str) -> Any:
    """A binary file object for reading (np.load and pickle.load accept it)."""
    return _gfile().GFile(path, "rb")


def read_bytes(path: str) -> bytes | None:
    """The file's contents, or None if it does not exist."""
    gfile = _gfile()
    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    """The parsed JSON file, or None if it does not exist."""
    data = read_bytes(path)
    return None if data is None else json.loads(data.decode("utf-8"))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` under a temporary name next to ``path``, then renames it over ``path``
    (local files are also fsynced first)."""
    if os.path.isdir(path) if not is_url(path) else _gfile().isdir(path):  # local writes need no TensorFlow
        raise UsageError(f"{path} is a directory; give a file name")
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not is_url(path):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    gfile = _gfile()
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    finally:
        if gfile.exists(tmp):
            gfile.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented, key-sorted JSON atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_text(path: str, text: str) -> None:
    """Appends to a file (on GCS, gfile rewrites the object: fine for small logs)."""
    with _gfile().GFile(path, "a") as f:
        f.write(text)


def copy_from_local(local_path: str, dest: str) -> None:
    """Puts a locally written file at ``dest`` (local or URL), replacing what was there, atomically."""
    if is_url(dest):
        tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        gfile = _gfile()
        try:
            gfile.copy(local_path, tmp, overwrite=True)
            gfile.rename(tmp, dest, overwrite=True)
        finally:
            if gfile.exists(tmp):
                gfile.remove(tmp)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class LocalTemp:
    """A local temporary file named like ``dest`` (same suffix, so writers pick the format); on
    ``commit()`` it is moved/copied to ``dest``; it is always removed at exit."""

    def __init__(self, dest: str):
        self.dest = dest
        fd, self.path = tempfile.mkstemp(suffix=os.path.splitext(dest)[1], prefix="wm-")
        os.close(fd)

    def __enter__(self) -> LocalTemp:
        return self

    def commit(self) -> None:
        copy_from_local(self.path, self.dest)

    def __exit__(self, *exc: object) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
