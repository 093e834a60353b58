"""data_gen.generate: round trip, determinism, resume, refusal, flag errors, policies."""

import glob
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY
from helpers import shard_digests

from data_gen import policies, rollout
from data_gen.generate import GenerateConfig, run
from tfrecords import schema, writer
from tfrecords.runtime import fileio


def _shards(d):
    return sorted(glob.glob(os.path.join(d, "*" + schema.SHARD_SUFFIX)))


def _records(d):
    out = []
    for f in _shards(d):
        for r in tf.data.TFRecordDataset(f, compression_type="GZIP"):
            out.append(schema.decode_episode(r.numpy()))
    return out


def _cli(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "data_gen.generate", "--progress=false", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_round_trip_equals_what_the_env_produced(tiny_rollouts):
    eps = _records(tiny_rollouts)
    assert [e.seed for e in eps] == [rollout.episode_seeds(0, i)[0] for i in range(TINY["episodes"])]
    env = gym.make("CarRacing-v3", max_episode_steps=TINY["max_steps"])  # stock env vs data from the fast one
    policy = policies.make_policy("brownian", env.action_space)
    for i, stored in enumerate(eps):
        env_seed, rng = rollout.episode_seeds(0, i)
        obs, _ = env.reset(seed=env_seed)
        policy.reset(rng)
        for t in range(len(stored)):
            a = policy.act(obs)
            np.testing.assert_array_equal(stored.frames[t], rollout.preprocess_frame(obs))
            np.testing.assert_array_equal(stored.actions[t], a)
            obs, r, term, trunc, _ = env.step(a)
            assert stored.rewards[t] == np.float32(r)
            assert stored.terminals[t] == int(term)
        assert len(stored) == TINY["max_steps"] and trunc
    m = fileio.read_json(os.path.join(tiny_rollouts, "manifest.json"))
    assert m["episodes"] == 4 and m["frames"] == 4 * TINY["max_steps"]
    assert [s["episodes"] for s in m["shards"]] == [2, 2]
    assert m["env_id"] == "CarRacingFast-v3" and m["versions"]["tensorflow"] == tf.__version__
    assert np.isclose(m["mean_return"], np.mean([e.total_reward for e in eps]), atol=1e-4)


def test_frames_are_cropped_and_resized():
    obs = np.zeros((96, 96, 3), np.uint8)
    obs[84:] = 255  # the indicator bar must be dropped
    out = rollout.preprocess_frame(obs)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.max() == 0
    assert rollout.preprocess_frame(obs, full_frame=True).shape == (96, 96, 3)


def test_same_bytes_whatever_the_worker_count(tmp_path, tiny_rollouts):
    out = str(tmp_path / "w2")
    run(GenerateConfig(out_dir=out, progress=False, **dict(TINY, workers=2)))
    assert shard_digests(out) == shard_digests(tiny_rollouts)


def test_crash_mid_run_resumes_without_duplicates(tmp_path, tiny_rollouts, monkeypatch):
    out = str(tmp_path / "crash")
    cfg = GenerateConfig(out_dir=out, progress=False, **dict(TINY, episodes_per_shard=1))
    real = rollout.run_episode
    calls = []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(rollout, "run_episode", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg)
    assert len(_shards(out)) == 2 and not os.path.exists(os.path.join(out, "manifest.json"))
    finished = shard_digests(out)
    monkeypatch.setattr(rollout, "run_episode", real)
    m = run(cfg)
    assert m["episodes"] == 4
    after = shard_digests(out)
    assert all(after[k] == v for k, v in finished.items())  # finished shards kept as they were
    assert [e.seed for e in _records(out)] == [e.seed for e in _records(tiny_rollouts)]
    assert not os.path.exists(os.path.join(out, ".incomplete"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_then_rerun_completes_the_same_data(tmp_path, sig):
    out = str(tmp_path / "killed")
    args = [f"--out_dir={out}", "--episodes=6", "--max_steps=60", "--episodes_per_shard=1", "--workers=1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.Popen(
        [sys.executable, "-m", "data_gen.generate", "--progress=false", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(_shards(out)) < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(sig)
    p.wait()
    assert p.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143)  # SIGTERM: a clean stop
    n_before = len(_shards(out))
    assert 2 <= n_before < 6, "the kill should land mid-run"
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    eps = _records(out)
    assert [e.seed for e in eps] == [rollout.episode_seeds(0, i)[0] for i in range(6)]
    clean = str(tmp_path / "clean")
    run(GenerateConfig(out_dir=clean, episodes=6, max_steps=60, episodes_per_shard=1, progress=False))
    assert shard_digests(out) == shard_digests(clean)


def test_rerun_of_finished_run_is_a_no_op(tiny_rollouts):
    before = {f: os.stat(f).st_mtime_ns for f in _shards(tiny_rollouts)}
    m = run(GenerateConfig(out_dir=tiny_rollouts, progress=False, **TINY))
    assert m["episodes"] == 4
    assert {f: os.stat(f).st_mtime_ns for f in _shards(tiny_rollouts)} == before


@pytest.mark.slow
def test_foreign_run_is_refused_and_untouched(tiny_rollouts):
    before = shard_digests(tiny_rollouts)
    with pytest.raises(writer.RunMismatchError, match="seed: 0 there, 1 now"):
        run(GenerateConfig(out_dir=tiny_rollouts, progress=False, **dict(TINY, seed=1)))
    r = _cli(f"--out_dir={tiny_rollouts}", "--episodes=5", "--max_steps=40", "--episodes_per_shard=2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("generate: error:")
    assert shard_digests(tiny_rollouts) == before


def test_unfinished_foreign_run_is_refused(tmp_path, monkeypatch):
    out = str(tmp_path / "unfinished")
    monkeypatch.setattr(rollout, "run_episode", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(GenerateConfig(out_dir=out, episodes=2, max_steps=10, progress=False))
    with pytest.raises(writer.RunMismatchError, match="unfinished run"):
        run(GenerateConfig(out_dir=out, episodes=3, max_steps=10, progress=False))


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--episodes=0", "--episodes must be positive"),
        ("--episodes_per_shard=-1", "--episodes_per_shard must be positive"),
        ("--policy=greedy", "--policy must be one of brownian, random, got 'greedy'"),
        ("--env_id=NoSuchEnv-v9", "unknown environment 'NoSuchEnv-v9'"),
        ("--out_dir=/proc/forbidden/x", "cannot write to /proc/forbidden/x"),
        ("--writer=lz4", "--writer must be one of auto, isal, tf"),
    ],
)
@pytest.mark.slow
def test_bad_flags_give_one_line_and_exit_2(tmp_path, flag, message):
    args = [f"--out_dir={tmp_path / 'out'}", "--episodes=1", "--max_steps=5", flag]
    r = _cli(*args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("generate: error:") and message in last, r.stderr
    assert "Traceback" not in r.stderr
    if "out_dir" not in flag:
        assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_brownian_policy_walks_inside_the_box():
    space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32))
    p = policies.BrownianPolicy(space)
    p.reset(np.random.default_rng(0))
    acts = np.stack([p.act(None) for _ in range(2000)])
    assert np.all(acts >= space.low) and np.all(acts <= space.high)
    steps = np.diff(acts, axis=0)
    inside = np.all(
        (acts[1:] > space.low) & (acts[1:] < space.high) & (acts[:-1] > space.low) & (acts[:-1] < space.high), axis=1
    )
    assert abs(steps[inside].std() - np.sqrt(1 / 50)) < 0.02  # increments of sqrt(dt) * N(0, 1) away from the walls
    r = policies.RandomPolicy(space)
    r.reset(np.random.default_rng(0))
    acts = np.stack([r.act(None) for _ in range(2000)])
    assert abs(acts[:, 0].mean()) < 0.1 and np.abs(np.diff(acts[:, 0])).mean() > 0.5  # i.i.d., not a walk


def test_policy_registry():
    class Still:
        def __init__(self, space):
            pass

        def reset(self, rng):
            pass

        def act(self, obs):
            return np.zeros(3, np.float32)

    policies.register_policy("still", Still)
    try:
        assert isinstance(policies.make_policy("still", None), Still)
    finally:
        del policies.POLICIES["still"]
    with pytest.raises(ValueError, match="unknown policy"):
        policies.make_policy("nope", None)


class _BufferReusingEnv(gym.Env):
    """Writes every observation into the same array (as some envs do): frame t is all t % 251."""

    observation_space = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
    action_space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))

    def __init__(self):
        self._obs = np.zeros((96, 96, 3), np.uint8)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        self._t = 0
        self._obs[:] = 0
        return self._obs, {}

    def step(self, action):
        self._t += 1
        self._obs[:] = self._t % 251
        return self._obs, 1.0, False, False, {}


def test_frames_are_copied_and_kept_in_order_across_preprocessing_blocks():
    env = _BufferReusingEnv()
    policy = policies.make_policy("random", env.action_space)
    n = 2 * rollout.PREPROCESS_BLOCK + 7  # two full blocks and a partial one
    ep = rollout.run_episode(env, policy, 0, np.random.default_rng(0), n)
    assert ep.frames.shape == (n, 64, 64, 3) and len(ep.actions) == n
    np.testing.assert_array_equal(ep.frames[:, 0, 0, 0], np.arange(n) % 251)


def test_either_shard_writer_stores_the_same_episodes(tmp_path):
    out = {}
    for kind in ("isal", "tf"):
        d = str(tmp_path / kind)
        run(GenerateConfig(out_dir=d, episodes=2, max_steps=5, episodes_per_shard=2, writer=kind, progress=False))
        out[kind] = glob.glob(os.path.join(d, "*.tfrecord.gz"))[0]
    a, b = (_records(os.path.dirname(out[k])) for k in ("isal", "tf"))
    assert [e.frames.tobytes() for e in a] == [e.frames.tobytes() for e in b] and len(a) == 2
    assert open(out["isal"], "rb").read() != open(out["tf"], "rb").read()  # compressed differently
