"""Agent: batched inference equals per-environment inference; the episode runner; worker loss."""

import numpy as np
import pytest
from helpers import act_reference, crash_worker

from data_gen.envpool import EnvPool, PoolError, WorkerLost
from wm.agents.agent import Agent, run_episodes
from wm.models.controller import Controller
from wm.models.loading import load_mdnrnn, load_vae


@pytest.fixture(scope="module")
def agent(tiny_world):
    v = load_vae(tiny_world["vae"])
    m = load_mdnrnn(tiny_world["mdnrnn"])
    return Agent(v, m, Controller(input_dim=32 + m.hidden))


def test_batched_inference_equals_per_environment(agent):
    rng = np.random.default_rng(0)
    n = 6
    frames = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    params = rng.normal(size=(n, agent.controller.num_params)).astype(np.float32) * 0.3
    state = (
        rng.normal(size=(n, agent.hidden)).astype(np.float32) * 0.5,
        rng.normal(size=(n, agent.hidden)).astype(np.float32),
    )
    a, (h, c), z = agent.act(frames, state, params)
    a_ref, (h_ref, c_ref) = act_reference(agent, frames, state, params)
    np.testing.assert_allclose(a, a_ref, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_allclose(c, c_ref, atol=1e-5)
    assert a.shape == (n, 3) and z.shape == (n, 32)


def test_run_episodes_is_deterministic_and_survives_a_dead_worker(agent):
    rng = np.random.default_rng(1)
    params = rng.normal(size=(2, agent.controller.num_params)).astype(np.float32) * 0.1
    jobs = [(0, 11), (1, 11), (0, 12), (1, 12), (0, 13)]
    with EnvPool("CarRacingFast-v3", 3, 2, 30) as pool:
        first = run_episodes(pool, agent, params, jobs, max_steps=30)
        calls = {"n": 0}

        def kill_once(steps, actions, z, slot_jobs):
            calls["n"] += 1
            if calls["n"] == 10:
                crash_worker(pool, 1)

        again = run_episodes(pool, agent, params, jobs, max_steps=30, on_step=kill_once, raw_jobs=frozenset(range(5)))
        assert pool.restarts == 1
    assert [r.steps for r in first] == [30] * 5
    assert [(r.job, r.seed) for r in first] == [(i, s) for i, (_, s) in enumerate(jobs)]
    np.testing.assert_allclose([r.ret for r in again], [r.ret for r in first], rtol=1e-6)


def test_pool_gives_up_after_too_many_failures():
    with EnvPool("CarRacingFast-v3", 2, 1, 10, max_restarts=0) as pool:
        pool.reset({0: 1, 1: 2})
        crash_worker(pool, 0)
        with pytest.raises(PoolError, match="giving up"):
            pool.step({0: np.zeros(3), 1: np.zeros(3)})


def test_pool_replies_reach_their_requests_in_any_order():
    """Two requests in flight on one worker, received newest first: each gets its own steps,
    equal to stepping in order; a crash after them fails only the request that met it."""
    a = np.array([0.3, 0.5, 0.0], np.float32)
    with EnvPool("CarRacingFast-v3", 4, 2, 20) as pool:  # slots 1 and 3 live on worker 1
        pool.reset({1: 5, 3: 6})
        in_order = [pool.step({1: a})[1].frame, pool.step({3: a})[3].frame]
        pool.reset({1: 5, 3: 6})
        t1, t2 = pool.send({1: a}), pool.send({3: a})
        t0 = pool.send({}, {0: 7})  # worker 0
        assert pool.wait_any([t1, t2]) == 0
        r2, r1 = pool.recv(t2), pool.recv(t1)
        assert set(r1) == {1} and set(r2) == {3}
        np.testing.assert_array_equal(r1[1].frame, in_order[0])
        np.testing.assert_array_equal(r2[3].frame, in_order[1])
        assert set(pool.recv(t0)) == {0}
        assert not np.array_equal(in_order[0], in_order[1])  # a swap would show
        crash_worker(pool, 1)
        with pytest.raises(WorkerLost):
            pool.recv(pool.send({1: a}))
        assert pool.restarts == 1
        assert set(pool.reset({1: 5, 3: 6})) == {1, 3}


@pytest.mark.parametrize("n, workers, groups", [(32, 2, 2), (16, 2, 4), (3, 2, 2), (5, 3, 2), (1, 2, 2), (7, 1, 3)])
def test_slot_groups_partition_the_slots_and_span_the_workers(n, workers, groups):
    from wm.agents.agent import _groups

    got = _groups(n, workers, groups)
    assert sorted(s for g in got for s in g) == list(range(n))  # every slot exactly once
    assert 1 <= len(got) <= groups
    w = min(workers, n)
    if n >= w * len(got):  # enough slots: every group holds some of every worker's slots
        assert all({s % w for s in g} == set(range(w)) for g in got)
