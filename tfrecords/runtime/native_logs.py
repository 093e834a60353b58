"""Keeps TensorFlow's C++ log lines off a binary's stderr.

TensorFlow's libraries log through absl before anything initializes absl's logging, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach those lines: every binary printed ``I0000 ...
cudart_stub.cc:31] Could not find cuda drivers on your machine``, ``oneDNN custom operations are
on ...`` and ``WARNING: All log messages before absl::InitializeLog() ...`` (twice, once per
TensorFlow library that logs), and on some machines an ``E0000 ... failed call to cuInit`` line
that looks like a failure on a CPU machine. So a one-line error was three to five lines.

:func:`install` points file descriptor 2 (what C and C++ code writes to) at a pipe and a thread
that drops those lines and passes every other line on; Python's own ``sys.stderr`` keeps writing
to the terminal directly, so the binaries' one-line errors, progress bars and tracebacks never wait
on the thread. Worker processes started by a binary inherit the filtered descriptor.

``tfrecords`` installs it when a ``python -m`` binary of this project starts, and in every process
that inherits :data:`ENV` from one (local workers, and Ray workers, which get it through the job's
``runtime_env``), unless the user set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 (asking for TensorFlow's
INFO or WARNING lines). Fatal lines (``F...``) always pass; a process that aborts may lose the
filter's last lines.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading

# absl's format (I0000 00:00:1796533625.156187    1405 port.cc:153] ...), TensorFlow's older one
# (2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...), and absl's notice.
NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ [\w./+-]+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] [\w./+-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$)"
)

ENV = "WM_FILTER_NATIVE_LOGS"
_installed: dict = {}


def is_native_log_line(line: bytes) -> bool:
    """Whether ``line`` is one of the C++ log lines :func:`install` drops (INFO, WARNING, ERROR; not FATAL)."""
    return NATIVE_LOG_LINE.match(line) is not None


def wanted() -> bool:
    """Whether to filter: unless the user set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() not in ("0", "1")


def worker_env() -> dict[str, str]:
    """The environment variables that make a worker process filter too (for Ray's ``runtime_env``)."""
    return {ENV: "1"} if _installed else {}


def install() -> None:
    """Filters C++ log lines out of file descriptor 2 for the rest of the process (once; a no-op if
    stderr is not a file descriptor)."""
    if _installed:
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (AttributeError, OSError, ValueError):
        return
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    os.set_inheritable(2, True)
    # Python's stderr writes to the real descriptor from now on, each write at once (a progress bar's
    # carriage returns too).
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    raw = io.FileIO(real, "w", closefd=False)
    sys.stderr = io.TextIOWrapper(raw, encoding=encoding, errors="backslashreplace", write_through=True)
    thread = threading.Thread(target=_forward, args=(r, real), name="native-log-filter", daemon=True)
    thread.start()
    _installed.update(real=real, thread=thread)
    os.environ[ENV] = "1"
    atexit.register(_drain)


def _forward(r: int, real: int) -> None:
    with os.fdopen(r, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not is_native_log_line(line))
            if out:
                os.write(real, out)
        if pending and not is_native_log_line(pending):
            os.write(real, pending)


def _drain() -> None:
    """At exit: points descriptor 2 back at the real stderr, so the pipe ends and the thread passes on
    what is left."""
    real, thread = _installed["real"], _installed["thread"]
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(real, 2)
    thread.join(timeout=1.0)
