"""The one place that turns a strategy name into a ``tf.distribute`` strategy and decides
mixed precision and XLA per device type.

Strategies: ``default`` (one device), ``mirrored`` (all local GPUs; without GPUs, all logical
CPU devices), ``tpu`` (``TPUStrategy`` on ``tpu_address``), ``multi_worker``
(``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``).

Mixed precision ``auto``: float16 with dynamic loss scaling on GPU, bfloat16 on TPU, float32
on CPU; or ``off``/``float16``/``bfloat16``. XLA ``auto``: on for GPU and TPU, off on CPU (XLA
makes the VAE train step ~1.9x slower on a 2-core CPU); or ``on``/``off``.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "tpu", "multi_worker")
PRECISIONS = ("auto", "off", "float16", "bfloat16")
JIT_MODES = ("auto", "on", "off")

_POLICY = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True)
class Setup:
    """A strategy with the numeric choices that go with it.

    Attributes:
      strategy: the ``tf.distribute.Strategy``; build variables under ``strategy.scope()``.
      device_type: "CPU", "GPU" or "TPU".
      dtype_policy: the Keras dtype policy name for models ("float32", "mixed_float16",
        "mixed_bfloat16").
      jit_compile: whether the train step is XLA-compiled.
    """

    strategy: tf.distribute.Strategy
    device_type: str
    dtype_policy: str
    jit_compile: bool

    @property
    def loss_scaling(self) -> bool:
        """float16 needs dynamic loss scaling (bfloat16 has float32's range)."""
        return self.dtype_policy == "mixed_float16"

    @property
    def num_replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        """True on the worker that writes checkpoints, summaries and exports."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not getattr(resolver, "task_type", None):
            return True
        return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)

    def describe(self) -> dict:
        return {
            "strategy": type(self.strategy).__name__,
            "replicas": self.num_replicas,
            "device_type": self.device_type,
            "dtype_policy": self.dtype_policy,
            "jit_compile": self.jit_compile,
        }


def make_strategy(name: str = "default", tpu_address: str | None = None) -> tf.distribute.Strategy:
    """The strategy called ``name`` (see the module docstring). Raises ValueError for unknown names.

    One instance per (name, address) and process: a second MirroredStrategy in the same process
    (V, then M, in one pipeline) would reuse the first one's collective instance keys with
    other tensor shapes and abort, and a TPU system or a multi-worker cluster must be set up
    only once.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    key = (name, tpu_address or "")
    if key not in _STRATEGY_CACHE:
        _STRATEGY_CACHE[key] = _new_strategy(name, tpu_address)
    return _STRATEGY_CACHE[key]


_STRATEGY_CACHE: dict[tuple[str, str], tf.distribute.Strategy] = {}


def _new_strategy(name: str, tpu_address: str | None) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")


def is_chief_process(strategy_name: str) -> bool:
    """Whether this process is the chief, known before any strategy exists: only a multi-worker
    run has other workers, named by ``TF_CONFIG`` (worker 0, or the task of type ``chief``)."""
    from tfrecords.runtime import lock

    return lock.is_chief(strategy_name)


def device_type(strategy: tf.distribute.Strategy) -> str:
    """The kind of device the strategy computes on: "TPU", "GPU" or "CPU"."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    try:
        devices = tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: whatever TensorFlow places ops on
        devices = ()
    if any("GPU" in d.upper() for d in devices):
        return "GPU"
    if not devices and tf.config.list_logical_devices("GPU"):
        return "GPU"
    return "CPU"


def resolve_precision(mode: str, device: str) -> str:
    """The Keras dtype policy for ``mode`` ("auto", "off", "float16", "bfloat16") on ``device``."""
    if mode == "auto":
        return {"GPU": "mixed_float16", "TPU": "mixed_bfloat16"}.get(device, "float32")
    if mode not in _POLICY:
        raise ValueError(f"unknown mixed precision mode {mode!r}; known: {', '.join(PRECISIONS)}")
    return _POLICY[mode]


def resolve_jit(mode: str, device: str) -> bool:
    """Whether to XLA-compile the train step for ``mode`` ("auto", "on", "off") on ``device``."""
    if mode == "auto":
        return device in ("GPU", "TPU")
    if mode not in ("on", "off"):
        raise ValueError(f"unknown jit_compile mode {mode!r}; known: {', '.join(JIT_MODES)}")
    return mode == "on"


def check_modes(strategy: str, mixed_precision: str, jit_compile: str) -> None:
    """Validates the three names without touching any device (for config validation)."""
    for value, known, what in (
        (strategy, STRATEGIES, "strategy"),
        (mixed_precision, PRECISIONS, "mixed_precision"),
        (jit_compile, JIT_MODES, "jit_compile"),
    ):
        if value not in known:
            raise ValueError(f"unknown --{what} {value!r}; known: {', '.join(known)}")


def setup(
    strategy: str = "default", tpu_address: str | None = None, mixed_precision: str = "auto", jit_compile: str = "auto"
) -> Setup:
    """Builds the strategy and resolves the precision and XLA choices for its devices."""
    check_modes(strategy, mixed_precision, jit_compile)
    strat = make_strategy(strategy, tpu_address)
    device = device_type(strat)
    return Setup(strat, device, resolve_precision(mixed_precision, device), resolve_jit(jit_compile, device))


INFERENCE_PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_bfloat16() -> bool:
    """True when this CPU has bfloat16 matrix units (AMX-BF16 or AVX512-BF16), which oneDNN uses."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return False
    return " amx_bf16" in text or " avx512_bf16" in text


def inference_policy(mode: str = "auto") -> str:
    """The Keras dtype policy for V's encoder when the agent acts (not for training).

    ``auto``: "bfloat16" on CPUs with bfloat16 units (there it encodes frames ~3x faster than
    float32 and the agent's per-step inference is the bottleneck), else "float32". The weights
    are stored in bfloat16 (see ``wm.train_vae.load``), which computes exactly what
    "mixed_bfloat16" does without casting every weight on every call.
    """
    if mode not in INFERENCE_PRECISIONS:
        raise ValueError(f"unknown inference precision {mode!r}; known: {', '.join(INFERENCE_PRECISIONS)}")
    if mode == "auto":
        return "bfloat16" if not tf.config.list_physical_devices("GPU") and cpu_has_bfloat16() else "float32"
    return mode


def inference_threads(workers: int, threads: int = 0, cores: int | None = None, accelerator: bool | None = None) -> int:
    """TensorFlow's CPU thread count for a process that runs the agent beside ``workers``
    environment processes; 0 means TensorFlow's default.

    ``threads`` > 0 is kept. Auto (0): one thread when the workers occupy every core and there
    is no GPU; there TF's own thread pool only contends with the environments (one thread cut
    this process's CPU per env step by ~20%, see BENCHMARKS.md). ``cores`` and ``accelerator``
    default to this machine's.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        return threads
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if accelerator is None:
        accelerator = bool(tf.config.list_physical_devices("GPU"))
    return 1 if workers >= cores and not accelerator else 0


def set_inference_threads(workers: int, threads: int = 0) -> int:
    """Applies :func:`inference_threads` to TensorFlow's intra- and inter-op pools; returns the
    count applied (0: TF's default). Call it before TensorFlow runs its first op: afterwards the
    pools are fixed, and this leaves them as they are (with a log line)."""
    n = inference_threads(workers, threads)
    if n:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # TensorFlow is already running: its pools are fixed
            logging.info("TensorFlow already initialized; keeping its thread pools (wanted %d threads)", n)
            return 0
    return n
