"""Worker-side inference (wm.agents.workers, wm.agents.engines): same episodes as the central layout; lost workers."""

import time

import numpy as np
import pytest
from helpers import crash_worker

from data_gen.envpool import InlineEnvs
from tfrecords.runtime.errors import UsageError
from wm.agents import workers as wk
from wm.agents.engines import EpisodeWorker

ENV = "CarRacingFast-v3"
STEPS = 15
# 2 parameter rows x 3 tracks; each layout plays them on 4 environments over 2 processes
JOBS = [(m, s) for m in range(2) for s in (21, 22, 23)]


@pytest.fixture(scope="module")
def spec(tiny_world):
    # the same precision in both layouts (auto is bfloat16 on CPUs with bfloat16 units)
    return wk.AgentSpec(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], controller="linear", precision="auto")


@pytest.fixture(scope="module")
def params(spec):
    agent = spec.load()
    p = np.random.default_rng(3).normal(size=(2, agent.controller.num_params)).astype(np.float32) * 0.3
    p[:, -2] = [2.0, -3.0]  # the gas bias: full throttle vs none, so the rows' returns differ
    return p


@pytest.fixture(scope="module")
def central(spec, params):
    with wk.CentralRunner(spec.load(), ENV, 4, 2, STEPS) as runner:
        return runner.run(params, JOBS, STEPS)


def _same(a, b):
    assert [(r.job, r.seed, r.steps) for r in a] == [(r.job, r.seed, r.steps) for r in b]
    np.testing.assert_allclose([r.ret for r in a], [r.ret for r in b], rtol=1e-5, atol=1e-5)


def test_the_central_episodes_differ_between_parameter_rows(central):
    # else "same returns" below would hold for any parameters
    assert [r.steps for r in central] == [STEPS] * len(JOBS)
    assert not np.allclose([r.ret for r in central[:3]], [r.ret for r in central[3:]])


def test_worker_processes_play_the_same_episodes_as_the_central_layout(spec, params, central):
    seen = []
    with wk.WorkerPool(spec, ENV, 4, 2, STEPS) as pool:
        t = time.perf_counter()
        first = pool.run(params, JOBS, STEPS, on_episode=seen.append)
        again = pool.run(params[::-1], [(1 - m, s) for m, s in JOBS], STEPS, record=frozenset({2}))  # new params
        assert list(pool.recorded) == [2] and len(pool.recorded[2]["a"]) == STEPS  # the last step included
        assert len(pool.recorded[2]["raw"]) == STEPS + 1
        assert time.perf_counter() - t < 60
        assert pool.restarts == 0
    _same(first, central)
    _same(again, central)
    assert sorted(r.job for r in seen) == list(range(len(JOBS)))


def test_an_in_process_worker_plays_the_same_episodes(spec, params, central):
    w = EpisodeWorker(spec, ENV, 3, STEPS)
    w.set_params(params)
    out = w.run([(j, m, s) for j, (m, s) in enumerate(JOBS)], STEPS, record=frozenset({4}))
    w.close()
    _same([r for r, _ in out], central)
    rec = [rec for _, rec in out]
    assert [i for i, x in enumerate(rec) if x is not None] == [4]
    assert len(rec[4]["raw"]) == STEPS + 1 and len(rec[4]["a"]) == STEPS and rec[4]["raw"][0].shape == (96, 96, 3)


@pytest.mark.slow  # kill -9 of a worker process, and its replacement
def test_a_killed_worker_s_unfinished_episodes_rerun_on_a_fresh_one(spec, params, central):
    # one environment per worker: each plays its 3 episodes one after another
    with wk.WorkerPool(spec, ENV, 2, 2, STEPS) as pool:
        old = pool.pids
        killed = []

        def kill_first(res):
            if not killed:
                killed.append(res.job)
                crash_worker(pool, 0)

        out = pool.run(params, JOBS, STEPS, on_episode=kill_first)
        assert pool.restarts == 1
        assert pool.pids[0] != old[0] and pool.pids[1] == old[1]
    _same(out, central)


@pytest.mark.slow  # worker processes started and killed until the pool gives up
def test_workers_that_keep_failing_end_in_one_error_not_a_hang(tmp_path):
    bad = wk.AgentSpec(vae=str(tmp_path), mdnrnn=str(tmp_path))
    t = time.perf_counter()
    with wk.WorkerPool(bad, ENV, 2, 1, STEPS, max_restarts=1) as pool:
        with pytest.raises(wk.WorkerError, match="failed 2 times, last: .*giving up") as e:
            pool.run(np.zeros((1, 3), np.float32), [(0, 1)], STEPS)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert time.perf_counter() - t < 120


def test_inline_envs_step_like_the_pool():
    with InlineEnvs(ENV, 2, 5) as envs:
        first = envs.reset({0: 7, 1: 7})
        assert np.array_equal(first[0].frame, first[1].frame) and first[0].frame.shape == (64, 64, 3)
        out = envs.step({0: np.zeros(3), 1: np.array([1.0, 1.0, 0.0])})
        assert set(out) == {0, 1} and not np.array_equal(out[0].frame, out[1].frame)


def test_layouts_resolve_and_refuse_central_on_ray():
    assert wk.resolve_layout("auto") == wk.AUTO_LAYOUT
    assert wk.resolve_layout("central") == "central"
    assert wk.resolve_layout("auto", "auto") == "workers"
    with pytest.raises(UsageError, match="--layout=central runs on this machine"):
        wk.resolve_layout("central", "10.0.0.1:6379")
    with pytest.raises(UsageError, match="--ray_address must be"):
        wk.check_ray_address("no port")


def test_layout_auto_is_central_for_models_other_processes_cannot_read():
    assert wk.resolve_layout("auto", "", ["ram://w/vae", "/tmp/m"]) == "central"
    assert wk.resolve_layout("auto", "", ["/tmp/vae", "gs://b/m"]) == wk.AUTO_LAYOUT
    with pytest.raises(UsageError, match="ram://w/vae"):
        wk.resolve_layout("workers", "", ["ram://w/vae"])
    with pytest.raises(UsageError, match="Ray actors cannot read"):
        wk.resolve_layout("auto", "auto", ["ram://w/agent"])
