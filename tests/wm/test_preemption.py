"""A real SIGTERM (how spot GPUs and TPU VMs are preempted) during ``python -m wm.train_vae``, ``wm.train_controller``
(CMA-ES), ``wm.train_ppo``, ``wm.encode``, ``data_gen.generate`` and ``wm.pipeline``: the binary keeps what it
finished (steps checkpointed, generations, updates, shards, stages), exits with 143 and one line, and a rerun resumes
with none of that work repeated or lost."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from helpers import shard_digests

from wm import train_vae
from wm.core import workdir
from wm.core.layout import Layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _terminate_when(args: list[str], ready, prog: str) -> str:
    """Starts the binary, sends SIGTERM once ``ready()``, checks the clean stop (exit 143, one line); returns stderr."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert f"{prog}: terminated; rerun the same command to resume" in err
    return err


def _steps(wd: str) -> list[int]:
    return [e["step"] for e in workdir.read_metrics(wd) if e.get("split") == "train"]


@pytest.mark.slow
def test_sigterm_checkpoints_the_steps_done_and_the_rerun_resumes(tiny_rollouts, tmp_path):
    wd = str(tmp_path / "vae")
    flags = ["--batch_size=8", "--steps_per_loop=1", "--log_every=1", "--eval_shards=0", "--seed=0", "--noprogress"]
    args = [sys.executable, "-m", "wm.train_vae", f"--data={tiny_rollouts}", f"--workdir={wd}", "--steps=100000"]
    args += ["--checkpoint_every=100000", *flags]
    err = _terminate_when(args, lambda: len(_steps(wd)) >= 3, "train_vae")
    last = workdir.latest_checkpoint(wd)
    assert last is not None, err[-2000:]
    saved = int(last.rsplit("-", 1)[1])
    assert f"interrupted; saved a checkpoint at step {saved}" in err
    assert saved >= 3 and _steps(wd)[-1] <= saved

    cfg = train_vae.TrainVaeConfig(
        data=tiny_rollouts, workdir=wd, batch_size=8, steps=saved + 2, steps_per_loop=1, log_every=1,
        checkpoint_every=1000, eval_shards=0, seed=0, progress=False,
    )  # fmt: skip
    assert train_vae.run(cfg)["step"] == saved + 2
    steps = _steps(wd)
    assert len(steps) == len(set(steps)) and steps == sorted(steps), steps  # none repeated
    # none lost: every step before the kill is there (a signal landing between a step and its log line
    # can leave out that one line, never a trained step), and the resumed ones follow the checkpoint
    assert set(range(1, saved + 3)) - set(steps) <= {saved} and steps[-2:] == [saved + 1, saved + 2], steps
    assert json.loads(open(os.path.join(wd, "config.json")).read())["model"] == "vae"


@pytest.mark.slow
def test_sigterm_during_cma_es_keeps_the_finished_generations_and_the_rerun_continues(tiny_world, tmp_path):
    from wm import train_controller as tc

    wd = str(tmp_path / "controller")
    common = dict(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], workdir=wd, popsize=2, trials=1, workers=1)
    common.update(max_steps=15, eval_every=0, seed=0)
    args = [sys.executable, "-m", "wm.train_controller", *(f"--{k}={v}" for k, v in common.items())]
    _terminate_when([*args, "--generations=1000", "--noprogress"], lambda: len(workdir.read_metrics(wd)) >= 2,
                    "train_controller")  # fmt: skip
    done = len(workdir.read_metrics(wd))
    assert done >= 2

    result = tc.run(tc.TrainControllerConfig(**common, generations=done + 1, progress=False))
    assert [r["generation"] for r in result["records"]] == list(range(1, done + 2))  # none repeated or lost
    uninterrupted = tc.run(tc.TrainControllerConfig(**{**common, "workdir": str(tmp_path / "u")}, generations=done + 1,
                                                    progress=False))  # fmt: skip
    assert [r["mean"] for r in result["records"]] == [r["mean"] for r in uninterrupted["records"]]


# ---------------------------------------------------------------- PPO, encode, generate and the pipeline


def _stop_mid_run(args: list[str], ready, prog: str, *, group: bool = False, timeout: float = 120) -> str:
    """Starts the binary, waits (at most ``timeout`` s) until ``ready()``, then sends SIGTERM, to the binary alone
    or, with ``group``, to its whole process group (its workers too, as a machine going down does). Checks the clean
    stop: exit 143 and the one line. Fails at once, with the binary's stderr, if it ends or stalls before the signal;
    returns its stderr."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would stall the binary
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            start_new_session=True,  # its own process group: a group signal reaches its workers, not pytest
        )
        stderr = lambda: (log.seek(0), log.read())[1][-2000:]  # noqa: E731
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not ready():
                if time.monotonic() > deadline:
                    pytest.fail(f"{prog} made no progress in {timeout:.0f} s: {stderr()}")
                time.sleep(0.05)
            if proc.poll() is not None:
                pytest.fail(f"{prog} ended (exit {proc.returncode}) before the signal: {stderr()}")
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:  # stalled: end it (and its workers) so that the test fails instead of hanging
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        err = log.read()
    assert proc.returncode == 143, err[-2000:]
    assert f"{prog}: terminated; rerun the same command to resume" in err.splitlines(), err[-2000:]
    return err


def _rerun(args: list[str]) -> str:
    """Runs the same command again to the end; returns its stderr."""
    r = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


def _mtimes(d: str, names) -> dict[str, int]:
    return {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in names}


@pytest.mark.slow
def test_sigterm_during_ppo_keeps_the_finished_updates_and_the_rerun_finishes_them_all(tiny_world, tmp_path):
    import tensorflow as tf

    wd = str(tmp_path / "ppo")
    updates = 30  # of 2 envs x 16 steps, about 0.2 s each: the kill lands well before the end
    args = [sys.executable, "-m", "wm.train_ppo", f"--vae={tiny_world['vae']}", f"--mdnrnn={tiny_world['mdnrnn']}"]
    args += [f"--workdir={wd}", "--envs=2", "--workers=1", f"--env_steps={32 * updates}", "--rollout_len=16"]
    args += ["--epochs=2", "--minibatch_size=16", "--max_steps=20", "--seed=0", "--noprogress"]
    # 3 lines: at least 2 updates checkpointed (an update's line is written just before its checkpoint)
    _stop_mid_run(args, lambda: len(workdir.read_metrics(wd)) >= 3, "train_ppo")

    path = tf.train.latest_checkpoint(os.path.join(wd, "checkpoints"))
    assert path is not None
    saved = int(tf.train.load_variable(path, "updates/.ATTRIBUTES/VARIABLE_VALUE"))
    assert int(tf.train.load_variable(path, "env_steps/.ATTRIBUTES/VARIABLE_VALUE")) == 32 * saved
    assert path.endswith(f"ckpt-{saved}") and 2 <= saved < updates
    before = workdir.read_metrics(wd)
    # every checkpointed update has its metrics line (the one in flight may have logged its own, dropped on resume)
    assert [r["update"] for r in before] in (list(range(1, saved + 1)), list(range(1, saved + 2)))

    err = _rerun(args)
    assert f"train_ppo: resuming at {32 * saved} env steps (update {saved})" in err
    after = workdir.read_metrics(wd)
    assert [r["update"] for r in after] == list(range(1, updates + 1))  # none repeated or lost
    assert [r["env_steps"] for r in after] == [32 * u for u in range(1, updates + 1)]
    assert after[:saved] == before[:saved]  # the finished updates' metrics kept as they were
    assert tf.train.latest_checkpoint(os.path.join(wd, "checkpoints")).endswith(f"ckpt-{updates}")


@pytest.fixture(scope="module")
def six_shards(tmp_path_factory) -> str:
    """Rollouts in 6 one-episode shards of 200 frames: enough for a kill to land between encode's shards."""
    from data_gen.generate import GenerateConfig
    from data_gen.generate import run as generate

    out = str(tmp_path_factory.mktemp("six") / "rollouts")
    generate(GenerateConfig(out_dir=out, episodes=6, max_steps=200, episodes_per_shard=1, workers=1, progress=False))
    return out


# ``python -m wm.encode`` with one change: after its first shard, the next one holds (its temporary file open)
# until the signal comes. The tiny V encodes a shard in a few milliseconds, so without the hold the whole run
# could end between two polls of the test (it did, in CI).
_ENCODE_HELD_AFTER_THE_FIRST_SHARD = """
import runpy, time
from tfrecords import writer
write_shard, written = writer.write_shard, []
def held(out_dir, plan, episodes, *args, **kwargs):
    def episodes_held():
        for i, ep in enumerate(episodes):
            if written and i == 0:
                time.sleep(600)
            yield ep
    stats = write_shard(out_dir, plan, episodes_held(), *args, **kwargs)
    written.append(plan.name)
    return stats
writer.write_shard = held
runpy.run_module("wm.encode", run_name="__main__")
"""


@pytest.mark.slow
def test_sigterm_during_encode_keeps_the_finished_shards_and_the_rerun_equals_an_uninterrupted_encode(
    tiny_world, six_shards, tmp_path
):
    from wm import encode

    out = str(tmp_path / "series")
    flags = dict(vae=tiny_world["vae"], data=six_shards, batch_size=1)
    argv = [*(f"--{k}={v}" for k, v in flags.items()), f"--out_dir={out}"]
    args = [sys.executable, "-m", "wm.encode", *argv]
    held = [sys.executable, "-c", _ENCODE_HELD_AFTER_THE_FIRST_SHARD, *argv, "--noprogress"]
    _stop_mid_run(held, lambda: len(shard_digests(out)) >= 1, "encode")
    # the shard being written when the signal came is gone; the finished one's statistics stay for the manifest
    assert not [n for n in os.listdir(os.path.join(out, ".incomplete")) if ".tmp-" in n]
    finished = shard_digests(out)
    assert len(finished) == 1
    assert not os.path.exists(os.path.join(out, "manifest.json"))  # written only when every shard is
    stamps = _mtimes(out, finished)

    _rerun([*args, "--noprogress"])
    assert _mtimes(out, finished) == stamps  # the finished shards were not redone
    reference = str(tmp_path / "uninterrupted")
    encode.run(encode.EncodeConfig(**flags, out_dir=reference, progress=False))
    assert shard_digests(out) == shard_digests(reference) and len(shard_digests(out)) == 6
    manifest, ref = (json.load(open(os.path.join(d, "manifest.json"))) for d in (out, reference))
    assert manifest["shards"] == ref["shards"] and manifest["episodes"] == 6
    assert not os.path.exists(os.path.join(out, ".incomplete"))


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["parent", "process-group"])
def test_sigterm_during_parallel_generate_keeps_the_finished_shards_and_the_rerun_is_byte_identical(group, tmp_path):
    from data_gen.generate import GenerateConfig
    from data_gen.generate import run as generate

    out = str(tmp_path / "rollouts")
    flags = dict(episodes=12, max_steps=100, episodes_per_shard=1)
    args = [sys.executable, "-m", "data_gen.generate", f"--out_dir={out}", *(f"--{k}={v}" for k, v in flags.items())]
    args += ["--workers=2", "--noprogress"]
    _stop_mid_run(args, lambda: len(shard_digests(out)) >= 2, "generate", group=group)
    finished = shard_digests(out)
    assert 2 <= len(finished) < 12
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    stamps = _mtimes(out, finished)
    reference = str(tmp_path / "uninterrupted")
    generate(GenerateConfig(out_dir=reference, workers=1, progress=False, **flags))
    clean = shard_digests(reference)
    assert all(finished[n] == clean[n] for n in finished)  # only whole shards under their final names

    err = _rerun(args)
    assert f"generate: resuming, {len(finished)} of 12 shards already written" in err
    assert _mtimes(out, finished) == stamps
    assert shard_digests(out) == clean  # byte-identical to the uninterrupted run: no episode repeated or missing
    assert (
        json.load(open(os.path.join(out, "manifest.json")))["shards"]
        == json.load(open(os.path.join(reference, "manifest.json")))["shards"]
    )
    assert not os.path.exists(os.path.join(out, ".incomplete"))


@pytest.mark.slow
def test_sigterm_during_a_pipeline_stage_marks_it_interrupted_and_the_rerun_skips_the_stages_done(tmp_path):
    wd = str(tmp_path / "run")
    w = Layout(wd)
    m = w.mdnrnn
    args = [sys.executable, "-m", "wm.pipeline", f"--workdir={wd}", "--preset=smoke", "--noprogress"]
    args += ["--stages=generate,train_vae,encode,train_mdnrnn", "--set=train_mdnrnn.steps=300"]
    done = ("generate", "train_vae", "encode")
    err = _stop_mid_run(args, lambda: any(s >= 4 for s in _steps(m)), "pipeline")

    status = {s["name"]: s for s in json.load(open(w.pipeline_json))["stages"]}
    assert [status[n]["status"] for n in done] == ["done"] * 3
    assert status["train_mdnrnn"]["status"] == "interrupted" and status["train_mdnrnn"]["wall_time"] > 0
    markers = {n: open(w.marker(n)).read() for n in done}
    assert not os.path.exists(w.marker("train_mdnrnn"))
    last = workdir.latest_checkpoint(m)
    assert last is not None, err[-2000:]
    saved = int(last.rsplit("-", 1)[1])
    # (a stop just after a scheduled checkpoint finds the steps saved already, and says so)
    said = (f"saved a checkpoint at step {saved}\n", f"every step done is in the checkpoint at step {saved}\n")
    assert any(f"mdnrnn: interrupted; {s}" in err for s in said) and 4 <= saved < 300, err[-2000:]

    err = _rerun(args)
    for n in done:
        assert f"pipeline: {n}: already done, skipped" in err
    assert f"mdnrnn: resuming from step {saved}" in err
    status2 = {s["name"]: s for s in json.load(open(w.pipeline_json))["stages"]}
    assert [status2[n]["status"] for n in done] == ["skipped"] * 3
    assert status2["train_mdnrnn"]["status"] == "done"
    assert status2["train_mdnrnn"]["wall_time"] > status["train_mdnrnn"]["wall_time"]  # both attempts
    assert {n: open(w.marker(n)).read() for n in done} == markers
    assert os.path.exists(w.marker("train_mdnrnn"))
    steps = _steps(m)
    assert len(steps) == len(set(steps)) and steps == sorted(steps) and steps[-1] == 300, steps
    assert workdir.latest_checkpoint(m).endswith("-300")


@pytest.mark.parametrize("where", ["metrics_line", "checkpoint"])
def test_a_stop_between_a_ppo_update_and_its_metrics_line_loses_neither(where, tiny_world, tmp_path, monkeypatch):
    """A stop (Ctrl-C, or SIGTERM: a KeyboardInterrupt too) landing as the third update writes its metrics line or
    its checkpoint: the rerun redoes that update, so metrics.jsonl holds every update exactly once."""
    import tensorflow as tf
    from helpers import interrupt_on_call, world_config

    from wm import train_ppo as tp

    tiny = dict(envs=2, workers=1, env_steps=160, rollout_len=16, epochs=1, minibatch_size=16, max_steps=20, seed=0)
    cfg = world_config(tp.TrainPPOConfig, tiny_world, tmp_path / "ppo", dict(tiny, progress=False))
    owner = workdir.MetricsLog if where == "metrics_line" else tf.train.CheckpointManager
    interrupt_on_call(monkeypatch, owner, "write" if where == "metrics_line" else "save", 3)
    with pytest.raises(KeyboardInterrupt):
        tp.run(cfg)
    monkeypatch.undo()
    logged = [r["update"] for r in workdir.read_metrics(cfg.workdir)]
    assert logged == ([1, 2] if where == "metrics_line" else [1, 2, 3])  # the line first, then the checkpoint
    assert tf.train.latest_checkpoint(os.path.join(cfg.workdir, "checkpoints")).endswith("ckpt-2")
    out = tp.run(cfg)
    assert out["updates"] == 5 and [r["update"] for r in workdir.read_metrics(cfg.workdir)] == [1, 2, 3, 4, 5]
