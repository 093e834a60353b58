"""Reading a workdir for the report, local or gs:// (``tfrecords.runtime.fileio``), and embedding its GIFs."""

from __future__ import annotations

import json
from typing import Any

from tfrecords.runtime import fileio
from wm.core.workdir import read_metrics
from wm.reporting.html import esc, img

EMBED_LIMIT = 16 << 20  # GIFs above this many bytes are linked, not embedded

join = fileio.join
exists = fileio.exists


def read_bytes(path: str) -> bytes:
    """The file's bytes; FileNotFoundError if it does not exist."""
    data = fileio.read_bytes(path)
    if data is None:
        raise FileNotFoundError(path)
    return data


def read_json(path: str) -> Any:
    """The file's JSON value."""
    return json.loads(read_bytes(path).decode("utf-8"))


def read_jsonl(path: str) -> list[dict]:
    """A metrics.jsonl file's complete entries (``path`` is WORKDIR/metrics.jsonl)."""
    return read_metrics(fileio.dirname(path))


def gif(workdir: str, rel: str, alt: str) -> str:
    """An embedded GIF (or a relative link when it is too large)."""
    path = join(workdir, rel)
    size = fileio.gfile().stat(path).length
    if size > EMBED_LIMIT:
        return (
            f'<p><a href="{esc(rel)}">{esc(rel)}</a> ({size / 2**20:.1f} MB, linked rather than embedded; '
            "open it from the workdir).</p>"
        )
    return img(read_bytes(path), "image/gif", alt, css="pixel")
