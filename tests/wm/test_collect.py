"""wm.collect: rollouts played by a trained agent, deterministic, resumable, in the public format."""

import glob
import os

import numpy as np
import pytest
from helpers import world_config

import tfrecords
from tfrecords import writer
from tfrecords.cli import UsageError
from tfrecords.errors import RunMismatchError
from wm import collect
from wm import train_controller as tc
from wm.agents import loading
from wm.agents.agent import run_episodes
from wm.agents.collect import episode_params

TINY = dict(episodes=3, max_steps=15, episodes_per_shard=2, workers=1, param_noise=0.1, seed=0, progress=False)


@pytest.fixture(scope="module")
def agent_dir(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("collect") / "controller"
    cma = dict(popsize=2, trials=1, generations=1, workers=1, max_steps=15, eval_every=0, seed=0, progress=False)
    tc.run(world_config(tc.TrainControllerConfig, tiny_world, d, cma))
    return str(d)


def _cfg(agent_dir, out, **kw):
    return collect.CollectConfig(agent=agent_dir, out_dir=str(out), **{**TINY, **kw})


def _shard_bytes(out):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(f"{out}/*.tfrecord.gz"))}


def test_collects_the_agents_noisy_episodes_in_the_public_format(agent_dir, tiny_world, tmp_path):
    manifest = collect.run(_cfg(agent_dir, tmp_path / "a"))
    assert manifest["kind"] == "rollouts" and manifest["episodes"] == 3 and len(manifest["shards"]) == 2
    assert manifest["policy"]["kind"] == "agent" and manifest["policy"]["param_noise"] == 0.1
    assert manifest["policy"]["agent"] == os.path.abspath(agent_dir) and manifest["policy"]["params_sha256"]
    read = tfrecords.episodes_dataset(str(tmp_path / "a"))
    eps = {int(e["seed"]): {k: v.numpy() for k, v in e.items()} for e in read}
    # the same episodes played directly by the agent with the same per-episode parameters and tracks
    agent, params, _ = loading.load_policy(agent_dir)
    jobs = [episode_params(params, 0.1, 0, i) for i in range(3)]
    from data_gen.envpool import EnvPool

    with EnvPool(manifest["env_id"], 1, 1, 15) as pool:
        want = run_episodes(pool, agent, np.stack([p for _, p in jobs]), [(i, s) for i, (s, _) in enumerate(jobs)], 15)
    assert sorted(eps) == sorted(s for s, _ in jobs)
    for w, (seed, _) in zip(want, jobs):
        ep = eps[seed]
        assert ep["frames"].shape == (w.steps, 64, 64, 3) and ep["actions"].shape == (w.steps, 3)
        np.testing.assert_allclose(ep["rewards"].sum(), w.ret, rtol=1e-5, atol=1e-4)
    # the noise changes the parameters per episode, and the first frame is the track's, as generate stores it
    assert not np.array_equal(jobs[0][1], jobs[1][1])
    generated = {int(e["seed"]): e["frames"].numpy()[0] for e in tfrecords.episodes_dataset(tiny_world["rollouts"])}
    np.testing.assert_array_equal(eps[jobs[0][0]]["frames"][0], generated[jobs[0][0]])
    # the same flags give the same bytes
    collect.run(_cfg(agent_dir, tmp_path / "b"))
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")


def test_a_killed_collection_resumes_and_another_run_is_refused(agent_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    collect.run(_cfg(agent_dir, straight))
    real_write = writer.write_shard
    calls = {"n": 0}

    def dies_on_the_second_shard(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_write(*a, **k)

    monkeypatch.setattr(writer, "write_shard", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        collect.run(_cfg(agent_dir, tmp_path / "b"))
    monkeypatch.undo()
    assert len(_shard_bytes(tmp_path / "b")) == 1 and not os.path.exists(tmp_path / "b" / "manifest.json")
    collect.run(_cfg(agent_dir, tmp_path / "b"))
    assert _shard_bytes(tmp_path / "b") == _shard_bytes(straight)
    with pytest.raises(RunMismatchError, match="different settings"):
        collect.run(_cfg(agent_dir, tmp_path / "b", param_noise=0.2))


def test_bad_agents_are_one_line(tiny_world, tmp_path):
    with pytest.raises(UsageError, match="not an agent workdir"):
        collect.run(_cfg(str(tmp_path), tmp_path / "out"))
    with pytest.raises(UsageError, match="not a trained agent"):
        collect.run(_cfg(tiny_world["vae"], tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
