"""wm.collect: rollouts played by a trained agent, deterministic, resumable, in the public format."""

import json
import os

import numpy as np
import pytest
from helpers import TINY_AGENT, interrupt_on_call, shard_digests, world_config

import tfrecords
from tfrecords import writer
from tfrecords.runtime.cli import UsageError
from tfrecords.runtime.errors import RunMismatchError
from wm import collect
from wm import train_controller as tc
from wm.agents import loading
from wm.agents.agent import run_episodes
from wm.agents.collect import episode_params

# layout central: no TensorFlow worker process to start (the layouts are compared in the slow tier)
TINY = dict(
    episodes=3, max_steps=15, episodes_per_shard=2, workers=1, layout="central", param_noise=0.1, seed=0, progress=False
)


@pytest.fixture(scope="module")
def agent_dir(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("collect") / "controller"
    tc.run(world_config(tc.TrainControllerConfig, tiny_world, d, TINY_AGENT, max_steps=15, seed=0))
    return str(d)


def _cfg(agent_dir, out, **kw):
    return collect.CollectConfig(agent=agent_dir, out_dir=str(out), **{**TINY, **kw})


def test_collects_the_agents_noisy_episodes_in_the_public_format(agent_dir, tiny_world, tmp_path, capfd):
    manifest = collect.run(_cfg(agent_dir, tmp_path / "a"))
    assert "%|" not in capfd.readouterr().err  # --noprogress draws no bar, not even an empty one
    assert manifest["kind"] == "rollouts" and manifest["episodes"] == 3 and len(manifest["shards"]) == 2
    assert manifest["policy"]["kind"] == "agent" and manifest["policy"]["param_noise"] == 0.1
    assert manifest["policy"]["agent"] == os.path.abspath(agent_dir) and manifest["policy"]["params_sha256"]
    # M's error on the new data (tiny_world's M has no reward head: z_nll only)
    assert set(manifest["model_errors"]) == {"z_nll", "mdnrnn"} and np.isfinite(manifest["model_errors"]["z_nll"])
    read = tfrecords.episodes_dataset(str(tmp_path / "a"))
    eps = {int(e["seed"]): {k: v.numpy() for k, v in e.items()} for e in read}
    # the same episodes played directly by the agent with the same per-episode parameters and tracks
    agent, params, _ = loading.load_policy(agent_dir)
    jobs = [episode_params(params, 0.1, 0, i) for i in range(3)]
    from data_gen.envpool import EnvPool

    naive: dict[int, list] = {}  # what an on_step that keeps what it is given (as wm.evaluate's videos do) sees

    def keep(steps, actions, zs, slot_jobs):
        for s in actions:
            naive.setdefault(slot_jobs[s], []).append(actions[s])

    with EnvPool(manifest["env_id"], 1, 1, 15) as pool:
        want = run_episodes(
            pool,
            agent,
            np.stack([p for _, p in jobs]),
            [(i, s) for i, (s, _) in enumerate(jobs)],
            15,
            on_step=keep,
            record_jobs=frozenset(range(3)),
        )
    assert sorted(eps) == sorted(s for s, _ in jobs)
    for w, (seed, _) in zip(want, jobs):
        ep = eps[seed]
        assert ep["frames"].shape == (w.steps, 64, 64, 3) and ep["actions"].shape == (w.steps, 3)
        np.testing.assert_allclose(ep["rewards"].sum(), w.ret, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(np.stack(naive[w.job]), ep["actions"], atol=0.02)  # (other batch sizes)
    # the stored actions are the ones played: replayed on the same track they give the stored rewards
    from data_gen import rollout

    env = rollout.make_env(manifest["env_id"], 15)
    for seed, ep in eps.items():
        assert ep["actions"].std(axis=0).max() > 0
        env.reset(seed=seed)
        replayed = [env.step(a)[1] for a in ep["actions"]]
        np.testing.assert_allclose(replayed, ep["rewards"], rtol=1e-5, atol=1e-5)
    env.close()
    # the noise changes the parameters per episode, and the first frame is the track's, as generate stores it
    assert not np.array_equal(jobs[0][1], jobs[1][1])
    generated = {int(e["seed"]): e["frames"].numpy()[0] for e in tfrecords.episodes_dataset(tiny_world["rollouts"])}
    np.testing.assert_array_equal(eps[jobs[0][0]]["frames"][0], generated[jobs[0][0]])
    # the same flags give the same bytes
    collect.run(_cfg(agent_dir, tmp_path / "b"))
    assert shard_digests(tmp_path / "a") == shard_digests(tmp_path / "b")


def test_worker_processes_and_ray_actors_write_the_same_bytes_and_central_the_same_episodes(
    agent_dir, tmp_path, ray_session
):
    workers = collect.run(_cfg(agent_dir, tmp_path / "workers", layout="workers"))
    on_ray = collect.run(_cfg(agent_dir, tmp_path / "ray", layout="workers", ray_address="local"))
    assert shard_digests(tmp_path / "workers") == shard_digests(tmp_path / "ray")
    assert workers["model_errors"] == on_ray["model_errors"]
    # central inference batches the environments differently (two groups taking turns): float error only
    central = collect.run(_cfg(agent_dir, tmp_path / "central", layout="central"))
    read = lambda d: {int(e["seed"]): e for e in tfrecords.episodes_dataset(str(d))}  # noqa: E731
    a, b = read(tmp_path / "workers"), read(tmp_path / "central")
    assert sorted(a) == sorted(b) and central["episodes"] == workers["episodes"] == 3
    for k in a:
        np.testing.assert_array_equal(a[k]["frames"].numpy()[0], b[k]["frames"].numpy()[0])
        np.testing.assert_allclose(a[k]["actions"].numpy(), b[k]["actions"].numpy(), atol=0.02)


def test_a_killed_collection_resumes_and_another_run_is_refused(agent_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    collect.run(_cfg(agent_dir, straight))
    interrupt_on_call(monkeypatch, writer, "write_shard", 2)  # in the second shard
    with pytest.raises(KeyboardInterrupt):
        collect.run(_cfg(agent_dir, tmp_path / "b"))
    monkeypatch.undo()
    assert len(shard_digests(tmp_path / "b")) == 1 and not os.path.exists(tmp_path / "b" / "manifest.json")
    resumed = collect.run(_cfg(agent_dir, tmp_path / "b"))
    assert shard_digests(tmp_path / "b") == shard_digests(straight)
    assert resumed["model_errors"] == json.load(open(straight / "manifest.json"))["model_errors"]
    with pytest.raises(RunMismatchError, match="different settings"):
        collect.run(_cfg(agent_dir, tmp_path / "b", param_noise=0.2))


def test_bad_agents_are_one_line(tiny_world, tmp_path):
    with pytest.raises(UsageError, match="not an agent workdir"):
        collect.run(_cfg(str(tmp_path), tmp_path / "out"))
    with pytest.raises(UsageError, match="not a trained agent"):
        collect.run(_cfg(tiny_world["vae"], tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_model_errors_match_a_direct_reference():
    import tensorflow as tf

    from tfrecords import schema
    from wm.agents.collect import model_errors
    from wm.models.mdnrnn import MDNRNN, mixture_log_prob

    m = MDNRNN(hidden=8, reward_head=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 32)).astype(np.float32)
    ep = schema.Episode(
        actions=rng.uniform(-1, 1, (6, 3)).astype(np.float32),
        rewards=rng.normal(size=6).astype(np.float32),
        terminals=np.zeros(6, np.int64),
        seed=0,
    )
    got = model_errors(m, z, ep)
    state, preds, nll = m.initial_state(1), [], []
    for t in range(6):  # one step at a time through M's step API
        h, state, mix = m.step(z[t : t + 1], ep.actions[t : t + 1], state)
        preds.append(float(m.reward(h)[0, 0]))
        if t < 5:
            nll.append(-float(tf.reduce_mean(mixture_log_prob(mix, z[t + 1 : t + 2]))))
    np.testing.assert_allclose(got["reward_mse"], np.mean((np.array(preds) - ep.rewards) ** 2), rtol=1e-4)
    np.testing.assert_allclose(got["return_error"], sum(preds) - ep.total_reward, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["z_nll"], np.mean(nll), rtol=1e-4)
