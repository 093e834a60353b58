"""train_ppo: a tiny run, resume to a larger budget, wm.evaluate on the PPO agent, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_config, world_config

from tfrecords.runtime.cli import UsageError
from wm import evaluate as ev
from wm import train_ppo as tp
from wm.agents.loading import load_policy

# Three updates of 2 envs x 16 steps, 20-step episodes.
TINY_PPO = dict(
    envs=2, workers=1, env_steps=96, rollout_len=16, epochs=2, minibatch_size=16, max_steps=20, seed=0, progress=False
)
EVAL = dict(episodes=2, seed=3, max_steps=12, workers=1, progress=False)


def _cfg(world, workdir, **kw):
    return world_config(tp.TrainPPOConfig, world, workdir, TINY_PPO, **kw)


def _records(workdir):
    with open(os.path.join(workdir, tp.METRICS_NAME)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def ppo_dir(tiny_world, tmp_path_factory):
    wd = tmp_path_factory.mktemp("ppo") / "controller"
    out = tp.run(_cfg(tiny_world, wd))
    assert out["env_steps"] == 96 and out["updates"] == 3
    return str(wd)


def _weights(workdir):
    import tensorflow as tf

    path = tf.train.latest_checkpoint(os.path.join(workdir, tp.CHECKPOINT_DIR))
    return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)}


def test_the_run_phases_called_one_by_one(tiny_world, tmp_path):
    """PPORunner's phases alone: one update gives its record, metrics line and checkpoint; a new runner resumes."""
    from wm.training.ppo import PPORunner

    cfg = _cfg(tiny_world, tmp_path / "ppo")
    runner = PPORunner(cfg)
    runner.setup()
    runner.restore()
    runner.write_config()
    runner.open_log()
    assert runner.env_steps == 0 and runner.records == []
    with runner.session():
        record = runner.run_one_update()
    assert record["update"] == 1 and record["env_steps"] == runner.env_steps == 32 and runner.records == [record]
    assert [r["update"] for r in _records(cfg.workdir)] == [1]
    again = PPORunner(cfg)
    again.setup()
    again.restore()
    assert again.env_steps == 32 and int(again.counters["updates"]) == 1


def test_run_writes_config_metrics_checkpoints_then_resumes_to_a_larger_budget(ppo_dir, tiny_world):
    with open(os.path.join(ppo_dir, tp.CONFIG_NAME)) as f:
        config = json.load(f)
    assert config["model"] == "controller" and config["algorithm"] == "ppo"
    assert config["vae"] == os.path.abspath(tiny_world["vae"]) and config["arch"]["hidden"] == [64, 64]
    recs = _records(ppo_dir)
    assert [r["env_steps"] for r in recs] == [32, 64, 96] and [r["update"] for r in recs] == [1, 2, 3]
    assert sum(r["episodes"] for r in recs) == 4  # 2 envs x 96 steps, 20-step episodes
    for r in recs:
        assert r["steps_per_sec"] > 0 and np.isfinite(r["policy_loss"]) and np.isfinite(r["value_loss"])
        assert r["mean_return"] is None or np.isfinite(r["mean_return"])
    assert os.listdir(os.path.join(ppo_dir, "tensorboard"))
    before = _weights(ppo_dir)
    # the same budget again: nothing to do; a larger one continues from the checkpoint
    assert tp.run(_cfg(tiny_world, ppo_dir))["updates"] == 3
    out = tp.run(_cfg(tiny_world, ppo_dir, env_steps=192))
    assert out["env_steps"] == 192 and out["updates"] == 6
    recs2 = _records(ppo_dir)
    assert recs2[:3] == recs and [r["env_steps"] for r in recs2[3:]] == [128, 160, 192]
    after = _weights(ppo_dir)
    opt_iter = [k for k in after if k.startswith("optimizer/") and "iteration" in k]
    assert opt_iter and after[opt_iter[0]] == 2 * before[opt_iter[0]]  # the optimizer's step count continued
    assert after["episodes/.ATTRIBUTES/VARIABLE_VALUE"] > before["episodes/.ATTRIBUTES/VARIABLE_VALUE"]


def test_evaluate_plays_the_ppo_agent_deterministically(ppo_dir, tmp_path):
    a = ev.run(make_config(ev.EvaluateConfig, EVAL, agent=ppo_dir, out=str(tmp_path / "a.csv")))
    b = ev.run(
        make_config(ev.EvaluateConfig, EVAL, agent=ppo_dir, envs=1, layout="central", out=str(tmp_path / "b.csv"))
    )
    assert a["episodes"] == 2 and a["env_steps"] == 24
    assert a["mean"] == pytest.approx(b["mean"], abs=1e-4)  # deterministic policy: same tracks, same returns
    policy, params, config = load_policy(ppo_dir)
    assert config["algorithm"] == "ppo" and params.shape == (1, policy.controller.num_params)


@pytest.mark.slow
def test_bad_settings_and_foreign_workdirs_are_refused_and_the_cli_exits_2(tiny_world, ppo_dir, tmp_path):
    with pytest.raises(UsageError, match="--envs must be positive"):
        tp.run(_cfg(tiny_world, tmp_path / "x", envs=0))
    with pytest.raises(UsageError, match="--hidden"):
        tp.run(_cfg(tiny_world, tmp_path / "x", hidden="64,x"))
    with pytest.raises(UsageError, match="--gamma"):
        tp.run(_cfg(tiny_world, tmp_path / "x", gamma=1.5))
    with pytest.raises(UsageError, match="other settings"):
        tp.run(_cfg(tiny_world, ppo_dir, hidden="32"))
    with pytest.raises(UsageError, match="not a PPO controller"):
        tp.run(_cfg(tiny_world, tiny_world["vae"]))
    proc = subprocess.run(
        [sys.executable, "-m", "wm.train_ppo", "--vae=a", "--mdnrnn=b", f"--workdir={tmp_path}", "--rollout_len=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 2
        and proc.stderr.strip().splitlines()[-1] == "train_ppo: error: --rollout_len must be positive, got 0"
    )
