"""Stage 1: roll out an exploration policy and write sharded, compressed TFRecords.

    python -m data_gen.generate --out_dir=runs/demo/rollouts --episodes=16 --workers=2

Every episode is seeded from (--seed, episode index), so the same flags give byte-identical
shards whatever --workers is. Shards are renamed into place only when complete and
``manifest.json`` is written last: rerunning the same command after a crash, a kill or
Ctrl-C keeps the finished shards and redoes the rest.

``--ray_address`` writes the shards as Ray tasks, one shard per task, on a Ray cluster (see
:mod:`data_gen.ray_engine`); the shards are the same bytes as a local run's. Every node writes
into ``--out_dir`` itself, so on a cluster of several machines it must be storage they all
reach (``gs://...``). A task whose worker or node dies is retried by Ray (3 times).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

from data_gen import policies, ray_engine, rollout
from tfrecords import fast_reader, schema, writer
from tfrecords.runtime.cli import UsageError, check, option, run_binary

SHARD_PREFIX = "rollouts"


@dataclasses.dataclass
class GenerateConfig:
    """Everything ``run`` needs; the fields marked as data-defining go into the run spec."""

    out_dir: str = option(help="Directory for the shards and manifest.json.", required=True)
    episodes: int = option(16, help="Number of episodes.", min=1)
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    workers: int = option(
        0, help="Worker processes (0: one per CPU core; with --ray_address: shards in flight, 0: no limit).", min=0
    )
    policy: str = option("brownian", help="Exploration policy.", choices=lambda: tuple(sorted(policies.POLICIES)))
    seed: int = option(0, help="Run seed; episode i is seeded from (seed, i).")
    episodes_per_shard: int = option(8, help="Episodes per TFRecord shard.", min=1)
    env_id: str = option(rollout.DEFAULT_ENV_ID, help="Gymnasium environment id (CarRacing-v3 for the stock one).")
    full_frame: bool = option(False, help="Store the full 96x96 frame instead of the paper's 64x64 crop.")
    writer: str = option(
        "auto",
        help="Shard compression: isal (ISA-L level 3, 4x faster), tf (zlib level 6, ~20% smaller "
        "shards), auto: isal if installed.",
        choices=writer.WRITERS,
    )
    ray_address: str = option(
        "",
        help="Write the shards as Ray tasks: '' (default) local processes; 'auto' the Ray cluster this machine "
        "is part of; 'local' a new one-machine Ray cluster; else HOST:PORT or ray://HOST:PORT. On several "
        "machines --out_dir must be shared storage (gs://).",
    )
    progress: bool = option(True, help="Show a progress bar.")

    def spec(self) -> dict:
        """The settings that determine the data (not workers, the shard writer or progress)."""
        keys = ("episodes", "max_steps", "policy", "seed", "episodes_per_shard", "env_id", "full_frame")
        return {k: getattr(self, k) for k in keys}

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return schema.FULL_FRAME_SHAPE if self.full_frame else schema.FRAME_SHAPE


def validate(cfg: GenerateConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    rollout.check_env_id(cfg.env_id)
    ray_engine.check_address(cfg.ray_address)
    if cfg.writer == "isal" and not fast_reader.available():
        raise UsageError(f"--writer=isal needs the isal and google-crc32c packages: {fast_reader.unavailable_reason()}")


# ---------------------------------------------------------------- worker side

_PROGRESS: mp.Queue | None = None
_ENV_CACHE: dict = {}


def _init_worker(progress_queue: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    progress_queue.put(("pid", os.getpid()))


def _episodes(
    cfg: GenerateConfig, items: Iterable[int], report: Callable[[int, float], object]
) -> Iterator[schema.Episode]:
    key = (cfg.env_id, cfg.max_steps, cfg.policy)
    if key not in _ENV_CACHE:
        _ENV_CACHE.clear()
        env = rollout.make_env(cfg.env_id, cfg.max_steps)
        _ENV_CACHE[key] = (env, policies.make_policy(cfg.policy, env.action_space))
    env, policy = _ENV_CACHE[key]
    for index in items:
        env_seed, rng = rollout.episode_seeds(cfg.seed, index)
        ep = rollout.run_episode(env, policy, env_seed, rng, cfg.max_steps, cfg.full_frame)
        report(len(ep), ep.total_reward)
        yield ep


def _write_shard(
    cfg: GenerateConfig, plan: writer.ShardPlan, report: Callable[[int, float], object] | None = None
) -> dict:
    if report is None:
        # (in a pool worker, whose initializer set _PROGRESS)
        report = lambda steps, ret: _PROGRESS.put(("episode", steps, ret))  # type: ignore[union-attr]  # noqa: E731
    return writer.write_shard(cfg.out_dir, plan, _episodes(cfg, plan.items, report), writer=cfg.writer)


def _write_shard_task(cfg: GenerateConfig, plan: writer.ShardPlan) -> dict:
    """One shard as a Ray task (no progress queue: the driver counts finished shards)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return _write_shard(cfg, plan, report=lambda steps, ret: None)


# ---------------------------------------------------------------- parent side


class _Progress:
    def __init__(self, total: int, done: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="ep", desc="generate", disable=not enabled, file=sys.stderr)
        self.steps = 0
        self.returns: list[float] = []
        self.start = time.perf_counter()

    def shard(self, stats: dict) -> None:
        """A finished shard's episodes at once (Ray tasks report per shard)."""
        self.steps += stats["frames"]  # as episode() counts: len(episode) each
        self.returns.append(stats["return_sum"])
        self.bar.set_postfix_str(f"{self.steps_per_sec:.0f} steps/s")
        self.bar.update(stats["episodes"])

    def episode(self, steps: int, ret: float) -> None:
        self.steps += steps
        self.returns.append(ret)
        self.bar.set_postfix_str(f"{self.steps_per_sec:.0f} steps/s")
        self.bar.update(1)

    @property
    def steps_per_sec(self) -> float:
        return self.steps / max(time.perf_counter() - self.start, 1e-9)


def _run_parallel(cfg: GenerateConfig, pending: list[writer.ShardPlan], progress: _Progress, workers: int) -> None:
    ctx = mp.get_context("spawn")  # never fork a process that may hold TensorFlow threads
    q = ctx.Queue()
    pids: list[int] = []
    pool = futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(q,))
    try:
        todo = {pool.submit(_write_shard, cfg, p) for p in pending}
        while todo:
            done, todo = futures.wait(todo, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            _drain(q, progress, pids)
            for f in done:
                f.result()  # re-raises a worker's error
        _drain(q, progress, pids)
    except BaseException:
        for pid in pids:  # stop at once; unfinished shards are temporary files, redone on rerun
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(cfg: GenerateConfig, pending: list[writer.ShardPlan], progress: _Progress) -> int:
    """The pending shards as Ray tasks (at most ``cfg.workers`` in flight if set); returns the cluster's CPUs."""
    ray = ray_engine.connect(cfg.ray_address, cfg.workers or None)
    task = ray.remote(num_cpus=1, max_retries=3)(_write_shard_task)
    todo = list(pending)[::-1]
    running: list[Any] = []
    limit = cfg.workers or len(todo)
    try:
        while todo or running:
            while todo and len(running) < limit:
                running.append(task.remote(cfg, todo.pop()))
            ready, running = ray.wait(running, num_returns=1, timeout=5.0)
            for ref in ready:
                try:
                    progress.shard(ray.get(ref))
                except ray.exceptions.RayTaskError as e:  # the task's own error, as a local run raises it
                    cause = getattr(e, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else e) from None
    except BaseException:
        for ref in running:  # stop at once; unfinished shards are temporary files, redone on rerun
            ray.cancel(ref, force=True)
        raise
    return int(ray.cluster_resources().get("CPU", 0))


def _drain(q: Any, progress: _Progress, pids: list[int]) -> None:
    while True:
        try:
            msg = q.get_nowait()
        except queue.Empty:
            return
        if msg[0] == "pid":
            pids.append(msg[1])
        else:
            progress.episode(msg[1], msg[2])


def run(cfg: GenerateConfig) -> dict:
    """Generates (or finishes) the dataset described by ``cfg`` and returns its manifest."""
    validate(cfg)
    plans = writer.plan_shards(cfg.episodes, cfg.episodes_per_shard, SHARD_PREFIX)
    out = writer.ShardedRun(cfg.out_dir, schema.KIND_ROLLOUTS, cfg.spec(), plans)
    finished = out.open()
    if finished is not None:
        print(f"generate: {cfg.out_dir} is already complete: " + summary(finished), file=sys.stderr)
        return finished
    pending = out.pending()
    done_eps = sum(len(p.items) for p in plans) - sum(len(p.items) for p in pending)
    if done_eps:
        print(
            f"generate: resuming, {len(plans) - len(pending)} of {len(plans)} shards already written", file=sys.stderr
        )
    progress = _Progress(cfg.episodes, done_eps, cfg.progress)
    workers = min(cfg.workers or os.cpu_count() or 1, len(pending))
    try:
        if cfg.ray_address:
            workers = _run_ray(cfg, pending, progress)
        elif workers <= 1:
            for p in pending:
                _write_shard(cfg, p, progress.episode)
        else:
            _run_parallel(cfg, pending, progress, workers)
    finally:
        progress.bar.close()
    manifest = out.finalize(
        {
            "env_id": cfg.env_id,
            "frame_shape": list(cfg.frame_shape),
            "flags": dataclasses.asdict(cfg),
            "versions": writer.package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    where = f"Ray tasks on {workers} CPUs" if cfg.ray_address else f"{workers} worker(s)"
    rate = f"; {progress.steps_per_sec:.0f} env steps/s with {where}" if progress.steps else ""
    print(f"generate: wrote {summary(manifest)}{rate}", file=sys.stderr)
    return manifest


def summary(manifest: dict) -> str:
    """One line describing a rollout dataset's manifest."""
    eps = manifest["episodes"]
    return (
        f"{eps} episodes, {manifest['frames']} frames in {len(manifest['shards'])} shards "
        f"(mean length {manifest['frames'] / max(eps, 1):.0f}, mean return {manifest['mean_return']:.1f})"
    )


if __name__ == "__main__":
    run_binary(GenerateConfig, run, "generate")
