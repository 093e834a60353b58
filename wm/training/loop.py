"""The loop skeleton V/M training, CMA-ES and PPO share: logging, triggers, stopping.

A training loop here is::

    log = RunLog("cma-es", workdir, total=generations, initial=done, unit="gen")
    with log, stopping(on_stop=save_what_is_done):
        while not finished:
            ...one unit of work (steps, a generation, an update)...
            log.record(entry, step=n, scalars={...})     # metrics.jsonl + TensorBoard
            log.advance(units, postfix="mean=...")       # progress bar with rates
            if due(n, checkpoint_every, last=finished): save()

:class:`RunLog` owns ``WORKDIR/metrics.jsonl``, the TensorBoard writers and the tqdm bar;
:func:`due` is the one interval trigger; :func:`stopping` is the one place that turns SIGINT
and SIGTERM (preemption) into a stop that first saves what the loop has done. Resume is each
loop's own state (a checkpoint, a CMA-ES pickle) plus :meth:`RunLog.keep_only`, which drops the
metrics a killed run logged past it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import stop_signals
from wm.core.workdir import MetricsLog


def due(step: int, every: int, last: bool = False) -> bool:
    """True when an ``every``-step trigger fires at ``step`` (never for ``every <= 0``), or on the last step."""
    return last or (every > 0 and step % every == 0)


class RunLog:
    """``metrics.jsonl``, TensorBoard and a progress bar for one run.

    Args:
      name: the run's name on the bar and in messages.
      workdir: where ``metrics.jsonl`` and ``tensorboard/`` go.
      total, initial: the bar's extent in ``unit``s (steps, items, generations, env steps).
      splits: TensorBoard writers, ``tensorboard/SPLIT`` each; ``(None,)`` writes to ``tensorboard/``.
      chief: only the chief writes files (other workers of a multi-worker run keep quiet).
      progress: show the bar.
    """

    def __init__(
        self,
        name: str,
        workdir: str,
        *,
        total: float,
        initial: float = 0,
        unit: str = "step",
        unit_scale: bool = False,
        splits: Sequence[str | None] = (None,),
        chief: bool = True,
        progress: bool = True,
    ):
        import tensorflow as tf
        from tqdm import tqdm

        self.name, self.chief = name, chief
        self.metrics = MetricsLog(workdir)
        tb = fileio.join(workdir, "tensorboard")
        self.writers = {
            split: tf.summary.create_file_writer(tb if split is None else fileio.join(tb, split))
            if chief
            else tf.summary.create_noop_writer()
            for split in splits
        }
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=unit_scale,
            desc=name,
            disable=not (progress and chief),
            file=sys.stderr,
        )
        self._mark = (time.perf_counter(), initial)

    def keep_only(self, keep: Callable[[dict], bool]) -> list[dict]:
        """On resume: drops the entries ``keep`` rejects (logged after the last saved state)."""
        return self.metrics.keep_only(keep) if self.chief else self.metrics.read()

    def rate(self, done: float) -> float:
        """Units per second since the previous call (or the start), with ``done`` units done now."""
        now = time.perf_counter()
        t0, d0 = self._mark
        self._mark = (now, done)
        return (done - d0) / max(now - t0, 1e-9)

    def record(
        self,
        entry: Mapping[str, Any] | None,
        *,
        step: int,
        scalars: Mapping[str, float] | None = None,
        split: str | None = None,
    ) -> None:
        """Appends ``entry`` to metrics.jsonl and writes ``scalars`` (default: the entry's numbers) to TensorBoard."""
        if not self.chief:
            return
        import tensorflow as tf

        if entry is not None:
            self.metrics.write(entry)
        if scalars is None:
            scalars = {
                k: v for k, v in (entry or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        with self.writers[split].as_default(step=step):
            for k, v in scalars.items():
                if v is not None:
                    tf.summary.scalar(k, v)

    def writer(self, split: str | None = None) -> Any:
        """The TensorBoard writer of ``split`` (for images and other summaries)."""
        return self.writers[split]

    def advance(self, n: float, postfix: str | None = None) -> None:
        """Moves the bar ``n`` units on."""
        self.bar.update(n)
        if postfix is not None:
            self.bar.set_postfix_str(postfix)

    def say(self, message: str) -> None:
        """A line above the bar."""
        if self.chief:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        """Closes the bar and flushes the writers."""
        self.bar.close()
        for w in self.writers.values():
            w.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def stopping(on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM inside: ``on_stop()`` saves what is done, then the stop goes on
    up to ``tfrecords.runtime.cli.run_main`` (exit 130 or 143, "rerun the same command to resume")."""
    with stop_signals():
        try:
            yield
        except KeyboardInterrupt:
            if on_stop is not None:
                on_stop()
            raise
