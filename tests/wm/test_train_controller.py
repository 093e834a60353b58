"""train_controller: a tiny generation, resume equals an uninterrupted run, clear errors."""

import json
import os

import numpy as np
import pytest
from helpers import world_config

from tfrecords.cli import UsageError
from wm import train_controller as tc
from wm.agents import agent as agent_lib
from wm.agents.loading import track_seeds

# Two generations of 3 candidates x 2 trials of 15 steps, evaluated every generation.
TINY_CMA = dict(
    popsize=3, trials=2, generations=2, workers=2, max_steps=15, eval_every=1, eval_episodes=2, seed=0, progress=False
)


def _cfg(world, workdir, **kw):
    return world_config(tc.TrainControllerConfig, world, workdir, TINY_CMA, **kw)


def _records(workdir):
    with open(os.path.join(workdir, tc.METRICS_NAME)) as f:
        return [json.loads(line) for line in f]


def test_tiny_run_then_resume_matches_an_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    straight = tc.run(_cfg(tiny_world, tmp_path / "a"))
    recs = _records(tmp_path / "a")
    assert [r["generation"] for r in recs] == [1, 2]
    for r in recs:
        assert r["min"] <= r["mean"] <= r["max"] and "best_eval" in r and r["wall_time"] > 0
    with np.load(tmp_path / "a" / tc.PARAMS_NAME) as z:
        assert z["params"].shape == ((32 + 32) * 3 + 3,)  # linear on [z, h] with the tiny M's 32 units
        assert str(z["source"]) == "eval"

    # interrupted in generation 2, then resumed: same numbers as the straight run
    tc.run(_cfg(tiny_world, tmp_path / "b", generations=1))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(agent_lib, "run_episodes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tc.run(_cfg(tiny_world, tmp_path / "b"))
    monkeypatch.undo()
    assert [r["generation"] for r in _records(tmp_path / "b")] == [1]
    resumed = tc.run(_cfg(tiny_world, tmp_path / "b"))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time"} for r in rs]  # noqa: E731
    assert strip(_records(tmp_path / "b")) == strip(recs)
    assert resumed["best_eval"] == straight["best_eval"]
    # a finished run is left alone
    assert tc.run(_cfg(tiny_world, tmp_path / "b"))["generation"] == 2


def test_bad_popsize_foreign_or_changed_workdirs_are_refused(tiny_world, tmp_path):
    with pytest.raises(UsageError, match="--popsize must be at least 2"):
        tc.run(_cfg(tiny_world, tmp_path / "x", popsize=1))
    with pytest.raises(UsageError, match="not a train_vae workdir|no config"):
        tc.run(_cfg(tiny_world, tmp_path / "x", vae=str(tmp_path / "nope")))
    tc.run(_cfg(tiny_world, tmp_path / "c", generations=1, eval_every=0))
    with pytest.raises(UsageError, match="other settings"):
        tc.run(_cfg(tiny_world, tmp_path / "c", popsize=4))
    with pytest.raises(UsageError, match="not a controller"):
        tc.run(_cfg(tiny_world, tiny_world["mdnrnn"]))


def test_track_seed_streams_are_disjoint():
    a = track_seeds(0, 1, 50)
    b = track_seeds(0, 2, 50)
    c = track_seeds(0, 3, 50)
    assert len(set(a) | set(b) | set(c)) == 150
    assert track_seeds(0, 1, 5, offset=5) == a[5:10]


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_continues(tiny_world, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    wd = tmp_path / "killed"
    flags = [
        f"--vae={tiny_world['vae']}",
        f"--mdnrnn={tiny_world['mdnrnn']}",
        f"--workdir={wd}",
        "--popsize=2",
        "--trials=1",
        "--generations=4",
        "--workers=1",
        "--max_steps=15",
        "--eval_every=0",
        "--noprogress",
    ]
    cmd = [sys.executable, "-m", "wm.train_controller", *flags]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = wd / tc.METRICS_NAME
    deadline = time.time() + 120
    while (
        time.time() < deadline and p.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 1)
    ):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(_records(wd))
    assert 1 <= done < 4, "the kill should land mid-run"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-1500:]
    assert f"resuming after generation {done}" in r.stderr
    straight = tc.run(
        _cfg(tiny_world, tmp_path / "straight", popsize=2, trials=1, generations=4, workers=1, eval_every=0)
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time"} for r in rs]  # noqa: E731
    assert strip(_records(wd)) == strip(straight["records"])
