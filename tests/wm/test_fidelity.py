"""The dream's fidelity gauge: Spearman's rho against a float64 reference, the controller set, and
``wm.fidelity`` on a tiny agent (its table, its JSON and its last line; the dream and reality replayed
alone give the same numbers)."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from helpers import TINY_AGENT

from tfrecords.runtime.errors import UsageError
from wm.agents import fidelity


def _spearman_reference(x, y) -> float:
    """Spearman's rho the slow way: ranks by counting (ties averaged), then Pearson's r in float64."""

    def rank(v):
        v = [float(a) for a in v]
        return [sum(b < a for b in v) + (sum(b == a for b in v) + 1) / 2.0 for a in v]

    rx, ry = np.array(rank(x), np.float64), np.array(rank(y), np.float64)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_spearman_matches_a_float64_reference_on_random_inputs_with_and_without_ties():
    rng = np.random.default_rng(0)
    for n, ties in itertools.product((3, 5, 12, 40), (False, True)):
        for _ in range(5):
            x, y = rng.normal(size=n), rng.normal(size=n)
            if ties:
                x, y = np.round(x), np.round(y * 2) / 2  # many equal values
            if len(set(x)) < 2 or len(set(y)) < 2:
                continue
            assert fidelity.spearman(x, y) == pytest.approx(_spearman_reference(x, y), abs=1e-12)
    x = rng.normal(size=9)
    assert fidelity.spearman(x, 3 * x + 1) == pytest.approx(1.0)
    assert fidelity.spearman(x, -np.exp(x)) == pytest.approx(-1.0)  # monotone, not linear: still -1
    assert np.isnan(fidelity.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(fidelity.ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    with pytest.raises(ValueError):
        fidelity.spearman([1.0, 2.0], [1.0])


def test_the_controller_set_is_the_agent_zero_and_perturbations_that_grow_with_the_scale():
    params = np.random.default_rng(1).normal(0, 0.3, 867).astype(np.float32)
    rows, names = fidelity.controller_set(params, [0.5, 4.0], 3, seed=7)
    assert rows.shape == (8, 867) and rows.dtype == np.float32
    assert names == ["agent", "zero"] + [f"noise {s:g} #{i}" for s in (0.5, 4.0) for i in (1, 2, 3)]
    np.testing.assert_array_equal(rows[0], params)
    assert not rows[1].any()
    rms = np.sqrt(np.mean(params.astype(np.float64) ** 2))
    dist = np.sqrt(np.mean((rows[2:] - params) ** 2, axis=1)) / rms
    np.testing.assert_allclose(dist[:3], 0.5, rtol=0.1)
    np.testing.assert_allclose(dist[3:], 4.0, rtol=0.1)
    again, _ = fidelity.controller_set(params, [0.5, 4.0], 3, seed=7)
    np.testing.assert_array_equal(rows, again)  # seeded
    other, _ = fidelity.controller_set(params, [0.5, 4.0], 3, seed=8)
    assert not np.array_equal(rows[2:], other[2:])
    with_means, names = fidelity.controller_set(params, [0.5], 1, 7, [("mean gen 3", params * 2)])
    assert names == ["agent", "zero", "mean gen 3", "noise 0.5 #1"]
    np.testing.assert_array_equal(with_means[2], params * 2)
    assert fidelity.spaced(1, 50, 4) == [1, 17, 34, 50] and fidelity.spaced(3, 3, 4) == [3]
    assert fidelity.spaced(1, 3, 8) == [1, 2, 3] and fidelity.spaced(1, 5, 0) == []
    assert fidelity.parse_scales("0.25, 1,4") == [0.25, 1.0, 4.0]
    for bad in ("", "0", "-1", "a"):
        with pytest.raises(ValueError):
            fidelity.parse_scales(bad)


def test_the_gauge_ranks_best_first_and_measures_the_gap():
    real = np.array([[900.0, 880.0], [-50.0, -60.0], [300.0, 320.0]])
    dream = np.array([[100.0, 120.0], [400.0, 380.0], [200.0, 220.0]])
    g = fidelity.Gauge(["a", "b", "c"], real, dream)
    assert g.rho == pytest.approx(-1.0)
    assert g.mean_gap == pytest.approx(np.mean(dream.mean(1) - real.mean(1)))
    rows = {r["name"]: r for r in g.rows()}
    assert [rows[n]["real_rank"] for n in "abc"] == [1.0, 3.0, 2.0]
    assert [rows[n]["dream_rank"] for n in "abc"] == [3.0, 1.0, 2.0]
    assert g.table().splitlines()[1].startswith("a ")  # best real controller first


@pytest.fixture(scope="module")
def dream_agent(tmp_path_factory, dream_world) -> str:
    from wm import train_controller as tc

    wd = str(tmp_path_factory.mktemp("fidelity") / "controller")
    tc.run(
        tc.TrainControllerConfig(
            vae=dream_world["vae"], mdnrnn=dream_world["mdnrnn"], workdir=wd, series=dream_world["series"], **TINY_AGENT
        )
    )
    return wd


def test_fidelity_plays_every_controller_in_both_worlds_and_writes_the_gauge(dream_agent, dream_world, capsys):
    from wm import fidelity as binary
    from wm.agents import loading
    from wm.agents.dream import DreamEnv, start_latents
    from wm.training.cma_state import STATE_NAME, CmaState

    cfg = binary.FidelityConfig(
        agent=dream_agent,
        episodes=2,
        scales="1,8",
        max_steps=12,
        workers=1,
        layout="central",
        progress=False,
        variants=["dream_done=threshold", "temperature=0,dream_done=sample"],
    )
    result = binary.run(cfg)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"spearman rho = {result['spearman_rho']:.2f} (5 controllers)"
    assert lines[-4].startswith("variant temperature=1, dream_dropout=0.2, dream_done=threshold: spearman rho = ")
    saved = json.load(open(f"{dream_agent}/{binary.OUT_NAME}"))
    assert saved["spearman_rho"] == pytest.approx(result["spearman_rho"], nan_ok=True)
    rows = saved["controllers"]
    assert [r["name"] for r in rows] == ["agent", "zero", "mean gen 1", "noise 1 #1", "noise 8 #1"]
    assert saved["env_steps"] <= 5 * 2 * 12 and saved["dream_steps"] <= 5 * 2 * 12

    # the numbers are the dream's and reality's own: replayed one controller at a time, the same returns
    agent, params, config = loading.load_policy(dream_agent)
    state = CmaState.loads(open(f"{dream_agent}/{STATE_NAME}", "rb").read())
    ctrl, _ = fidelity.controller_set(params, [1.0, 8.0], 1, 0, [("mean gen 1", state.mean_of(1))])
    np.testing.assert_array_equal(ctrl[2], np.asarray(state.es.mean, np.float32))
    starts = start_latents(dream_world["series"], "first", seed=0)
    rng = np.random.default_rng([0, fidelity.FIDELITY_STREAM])
    starts = starts[rng.choice(len(starts), 2, replace=len(starts) < 2)]
    seed = int(rng.integers(1 << 62))
    env = DreamEnv(agent.mdnrnn, agent.controller, 12, 1.0, agent.mdnrnn.dropout, True)
    sampled = DreamEnv(agent.mdnrnn, agent.controller, 12, 0.0, agent.mdnrnn.dropout, True, "sample")
    same, other = saved["variants"]  # the base setting again, and a deterministic dream with sampled endings
    assert same["setting"] == {"temperature": 1.0, "dream_dropout": agent.mdnrnn.dropout, "dream_done": "threshold"}
    assert same["spearman_rho"] == pytest.approx(saved["spearman_rho"], nan_ok=True)
    for k, row in enumerate(ctrl):
        res = env.rollout(np.repeat(row[None], 2, axis=0), starts, np.arange(2, dtype=np.int32), seed)
        assert rows[k]["dream_mean"] == pytest.approx(float(res.returns.mean()), rel=1e-5, abs=1e-4)
        assert same["dream_means"][k] == rows[k]["dream_mean"]
        res = sampled.rollout(np.repeat(row[None], 2, axis=0), starts, np.arange(2, dtype=np.int32), seed)
        assert other["dream_means"][k] == pytest.approx(float(res.returns.mean()), rel=1e-5, abs=1e-4)
    from wm.agents.workers import CentralRunner

    seeds = loading.track_seeds(0, fidelity.FIDELITY_STREAM, 2)
    with CentralRunner(agent, config["env_id"], 2, 1, 12) as runner:
        for k in (0, 2, 4):
            real = [r.ret for r in runner.run(ctrl[k][None], [(0, s) for s in seeds], 12)]
            assert rows[k]["real_mean"] == pytest.approx(float(np.mean(real)), rel=1e-5, abs=1e-4)


def test_fidelity_gauges_an_ensemble_and_branched_short_dreams_as_variants(dream_agent, dream_world, capsys):
    from wm import fidelity as binary
    from wm.agents import loading
    from wm.agents.dream import DreamEnv, dream_starts
    from wm.models.loading import load_mdnrnn

    variants = ["members=1", "dream_start=branch,dream_horizon=5", "ensemble_reward=min,dream_disagreement=1.5"]
    cfg = binary.FidelityConfig(
        agent=dream_agent,
        episodes=2,
        scales="1",
        means=0,
        max_steps=12,
        workers=1,
        layout="central",
        progress=False,
        dream_ensemble=dream_world["mdnrnn"],  # M twice: an ensemble of identical members
        variants=variants,
    )
    result = binary.run(cfg)
    alone, branched, pessimistic = result["variants"]
    # identical members dream as one M: the ensemble's base and the M-alone variant agree
    base = [r["dream_mean"] for r in result["controllers"]]
    np.testing.assert_allclose(alone["dream_means"], base, rtol=1e-5, atol=1e-4)
    assert alone["setting"]["members"] == 1 and branched["setting"]["dream_horizon"] == 5
    # identical members: min = mean, and no disagreement
    np.testing.assert_allclose(pessimistic["dream_means"], base, rtol=1e-5, atol=1e-4)
    # the branched, 5-step variant is the dream of those starts and states, replayed directly
    agent, params, _ = loading.load_policy(dream_agent)
    m = load_mdnrnn(dream_world["mdnrnn"])
    starts, states = dream_starts(dream_world["series"], "branch", [agent.mdnrnn, m], seed=0)
    rng = np.random.default_rng([0, fidelity.FIDELITY_STREAM])
    idx = rng.choice(len(starts), 2, replace=len(starts) < 2)
    base_starts = dream_starts(dream_world["series"], "first", [agent.mdnrnn], seed=0)[0]
    rng = np.random.default_rng([0, fidelity.FIDELITY_STREAM])
    rng.choice(len(base_starts), 2, replace=len(base_starts) < 2)
    seed = int(rng.integers(1 << 62))  # the base's world noise
    env = DreamEnv(agent.mdnrnn, agent.controller, 5, 1.0, agent.mdnrnn.dropout, True, ensemble=[m])
    rows, _ = fidelity.controller_set(params, [1.0], 1, 0)
    returns, _ = env.rollout_on_worlds(rows, starts[idx], seed, states[idx])
    np.testing.assert_allclose(branched["dream_means"], returns.mean(axis=1), rtol=1e-5, atol=1e-4)
    with pytest.raises(UsageError, match="members=3: the dream has 2"):
        binary.run(dataclasses.replace(cfg, variants=["members=3"]))


def test_fidelity_refuses_what_it_cannot_gauge_in_one_line(dream_agent, tiny_world, tmp_path):
    from wm import fidelity as binary
    from wm import train_controller as tc

    def cfg(**kw):
        return binary.FidelityConfig(**{"agent": dream_agent, "progress": False, **kw})

    with pytest.raises(UsageError, match="--scales must be positive"):
        binary.run(cfg(scales="0,1"))
    with pytest.raises(UsageError, match="--variant 'tau=1': give KEY=VALUE pairs"):
        binary.run(cfg(variants=["tau=1"]))
    with pytest.raises(UsageError, match="dream_dropout out of range"):
        binary.run(cfg(variants=["dream_dropout=1"]))
    with pytest.raises(UsageError, match="dream_horizon must be a whole number"):
        binary.run(cfg(variants=["dream_horizon=2.5"]))
    with pytest.raises(UsageError, match="dream_start is one of first, random, branch"):
        binary.run(cfg(variants=["dream_start=middle"]))
    with pytest.raises(UsageError, match="no reward head"):
        binary.run(cfg(dream_ensemble=tiny_world["mdnrnn"]))
    with pytest.raises(UsageError, match="not a"):
        binary.run(cfg(agent=str(tmp_path)))
    no_head = str(tmp_path / "no_head")
    tc.run(tc.TrainControllerConfig(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], workdir=no_head, **TINY_AGENT))
    with pytest.raises(UsageError, match="no reward head"):
        binary.run(cfg(agent=no_head))
