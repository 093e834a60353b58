"""Ray as the engine past one machine: ``--ray_address`` checked, then connected, in one place.

``--ray_address`` values: ``""`` no Ray (local processes, the default); ``auto`` the cluster this
machine is part of (``ray start`` ran here, or ``RAY_ADDRESS``); ``local`` a new Ray cluster on
this machine only (for tests and trying it out); otherwise ``HOST:PORT`` of a cluster's head
(GCS) or ``ray://HOST:PORT`` (Ray Client). A malformed address, a missing ``ray`` package or a
cluster that cannot be reached is one line (:class:`RayError`, exit status 2), never a long
wait: a ``HOST:PORT`` is first probed with a plain TCP connection (``timeout`` seconds), because
``ray.init`` itself retries an unreachable address for minutes.

Used by ``data_gen.generate`` and, above it, by ``wm.agents.workers`` and ``wm.agents.engines``; it imports nothing from
``wm`` and imports ``ray`` only when asked to connect.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from tfrecords.runtime.errors import OneLineError, UsageError

_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class RayError(OneLineError, RuntimeError):
    """Ray is missing or the cluster cannot be reached."""


def check_address(address: str) -> None:
    """UsageError (one line) for a ``--ray_address`` that is neither empty, ``auto``, ``local`` nor
    ``[ray://]HOST:PORT``."""
    if address in ("", "auto", "local"):
        return
    m = _HOST_PORT.match(address)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise UsageError(f"--ray_address must be auto, local, HOST:PORT or ray://HOST:PORT, got {address!r}")


def _probe(address: str, timeout: float) -> None:
    m = _HOST_PORT.match(address)
    assert m is not None  # connect() ran check_address first
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str, num_cpus: int | None = None, timeout: float = 5.0) -> Any:
    """Connects this process to Ray (once; later calls reuse the connection) and returns the ``ray`` module.

    ``local`` starts a one-machine cluster with ``num_cpus`` CPUs (default: all). Raises
    UsageError for a malformed address, RayError if ``ray`` is not installed or the cluster is
    not reachable.
    """
    check_address(address)
    if not address:
        raise ValueError("connect() needs a Ray address")
    try:
        import ray
    except ImportError:
        raise RayError("--ray_address needs the ray package: pip install 'world-models[ray]'") from None
    if ray.is_initialized():
        return ray
    if address not in ("auto", "local"):
        _probe(address, timeout)
    from tfrecords.runtime import native_logs

    runtime_env = {"env_vars": native_logs.worker_env()}  # the workers keep TensorFlow's C++ lines off too
    try:
        if address == "local":
            # ray.init takes a level's name as well as its number (its stub says int)
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="warning", runtime_env=runtime_env)  # type: ignore[arg-type]
        else:
            ray.init(address=address, logging_level="warning", runtime_env=runtime_env)  # type: ignore[arg-type]
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise RayError(f"cannot connect to the Ray cluster at {address}: {_first_line(e)}") from None
    return ray


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
