"""train_controller: a tiny generation, resume equals an uninterrupted run, clear errors."""

import json
import os

import numpy as np
import pytest
from helpers import interrupt_on_call, world_config

from tfrecords.runtime.cli import UsageError
from wm import train_controller as tc
from wm.agents import agent as agent_lib
from wm.agents import loading
from wm.agents import workers as workers_lib
from wm.agents.loading import track_seeds

# Two generations of 3 candidates x 2 trials of 15 steps, evaluated every generation. One central environment
# process: a worker process of --layout=workers starts TensorFlow and loads V and M (~4 s each run), and the
# layouts are compared in tests/wm/test_workers.py and test_ray_workers.py.
TINY_CMA = dict(
    popsize=3,
    trials=2,
    generations=2,
    workers=1,
    layout="central",
    max_steps=15,
    eval_every=1,
    eval_episodes=2,
    seed=0,
    progress=False,
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

    monkeypatch.setattr(workers_lib.WorkerPool, "run", interrupted)  # Ctrl-C mid-generation, either layout
    monkeypatch.setattr(workers_lib.CentralRunner, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tc.run(_cfg(tiny_world, tmp_path / "b"))
    monkeypatch.undo()
    assert [r["generation"] for r in _records(tmp_path / "b")] == [1]
    resumed = tc.run(_cfg(tiny_world, tmp_path / "b"))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_time", "train_time")} for r in rs]  # noqa: E731
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
        "--layout=central",
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
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_time", "train_time")} for r in rs]  # noqa: E731
    assert strip(_records(wd)) == strip(straight["records"])


TINY_DREAM = dict(env="dream", max_steps=30, eval_every=2, eval_episodes=2, workers=1)


def test_dream_run_then_resume_matches_an_uninterrupted_run(dream_world, tmp_path, monkeypatch):
    from wm.agents import dream as dream_lib

    cfg = lambda d, **kw: _cfg(dream_world, tmp_path / d, series=dream_world["series"], **{**TINY_DREAM, **kw})  # noqa: E731
    straight = tc.run(cfg("a", generations=3))
    recs = _records(tmp_path / "a")
    assert [r["generation"] for r in recs] == [1, 2, 3]
    assert all(r["dream_steps"] > 0 and "env_steps" not in r for r in recs)
    assert "eval_mean" not in recs[0] and {"eval_mean", "dream_eval_mean", "best_eval"} <= set(recs[1])
    config = json.load(open(tmp_path / "a" / "config.json"))
    assert config["flags"]["env"] == "dream" and config["dream"]["dropout"] == pytest.approx(0.2)
    with np.load(tmp_path / "a" / tc.PARAMS_NAME) as z:
        assert str(z["source"]) == "eval" and float(z["score"]) == straight["best_eval"]

    tc.run(cfg("b", generations=1, eval_every=0))  # (a last generation is always evaluated)
    # in generation 3: generation 2 calls rollout for its fitness and the mean's dream evaluation
    interrupt_on_call(monkeypatch, dream_lib.DreamEnv, "rollout", 3)
    with pytest.raises(KeyboardInterrupt):
        tc.run(cfg("b", generations=3))
    monkeypatch.undo()
    assert [r["generation"] for r in _records(tmp_path / "b")] == [1, 2]
    resumed = tc.run(cfg("b", generations=3))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_time", "train_time")} for r in rs]  # noqa: E731
    assert strip(_records(tmp_path / "b")) == strip(recs)
    assert resumed["best_eval"] == straight["best_eval"]


def test_a_real_run_whose_m_can_dream_logs_the_gap(tiny_world, dream_world, tmp_path):
    from wm.training.cma_es import _Dream

    cfg = _cfg(dream_world, tmp_path / "gap", series=dream_world["series"], generations=1, workers=1)
    tc.run(cfg)
    (rec,) = _records(tmp_path / "gap")
    assert "env_steps" in rec and {"eval_mean", "dream_eval_mean"} <= set(rec)
    # the evaluated mean (kept: the only evaluation) played again on the same fixed dream worlds
    with np.load(tmp_path / "gap" / tc.PARAMS_NAME) as z:
        params = z["params"]
    agent = loading.load_agent(cfg.vae, cfg.mdnrnn, cfg.controller, cfg.inference_precision)
    again = _Dream(cfg, agent).play(params[None], cfg.eval_episodes, [0, 0])[0].mean()
    np.testing.assert_allclose(rec["dream_eval_mean"], again, rtol=1e-5, atol=1e-4)
    # nothing to compare with: no series, or an M without a reward head
    tc.run(_cfg(dream_world, tmp_path / "no_series", generations=1, workers=1))
    tc.run(_cfg(tiny_world, tmp_path / "no_head", series=tiny_world["series"], generations=1, workers=1))
    for d in ("no_series", "no_head"):
        (rec,) = _records(tmp_path / d)
        assert "eval_mean" in rec and "dream_eval_mean" not in rec


def test_dream_settings_that_cannot_work_are_one_line_and_touch_nothing(tiny_world, dream_world, tmp_path):
    out = tmp_path / "none"
    with pytest.raises(UsageError, match="--env=dream needs --series"):
        tc.run(_cfg(dream_world, out, **TINY_DREAM))
    with pytest.raises(UsageError, match="no reward head"):
        tc.run(_cfg(tiny_world, out, series=tiny_world["series"], **TINY_DREAM))
    with pytest.raises(UsageError, match="not latent series"):
        tc.run(_cfg(dream_world, out, series=dream_world["rollouts"], **TINY_DREAM))
    with pytest.raises(UsageError, match="not a CMA-ES controller workdir"):
        tc.run(_cfg(dream_world, out, series=dream_world["series"], init_from=str(tmp_path), **TINY_DREAM))
    assert not out.exists() or not any(out.iterdir())


def test_screening_ranks_played_members_by_reality_and_the_rest_below_them_by_the_dream():
    from wm.training import screen

    dream = np.array([3.0, 1.0, 2.0, 5.0, 2.0])
    played = screen.pick(dream, 2)
    assert played.tolist() == [0, 3]
    told = screen.combined(np.array([10.0, 7.0]), played, dream)
    # played by their real fitness, then the rest in dream order (a tie: the lower index first)
    assert np.argsort(-told, kind="stable").tolist() == [0, 3, 2, 4, 1]
    assert told[0] == 10.0 and told[3] == 7.0 and told[[1, 2, 4]].max() < 7.0


def test_a_run_screened_in_the_dream_plays_only_the_best_and_resumes_as_an_uninterrupted_run(
    dream_world, tmp_path, monkeypatch
):
    cfg = lambda d, **kw: _cfg(dream_world, tmp_path / d, series=dream_world["series"], screen_worlds=2, **kw)  # noqa: E731
    strip = lambda rs, drop=(): [  # noqa: E731
        {k: v for k, v in r.items() if k not in ("wall_time", "train_time", *drop)} for r in rs
    ]
    # screening that lets every member through is the real run itself
    tc.run(cfg("plain", generations=2))
    tc.run(cfg("all", generations=2, screen=3))
    screened_keys = ("dream_steps", "dream_fitness_mean", "screen_rho")
    assert strip(_records(tmp_path / "all"), screened_keys) == strip(_records(tmp_path / "plain"))
    # two of three: 2 members x 2 trials x 15 steps of the real environment a generation
    straight = tc.run(cfg("a", generations=2, screen=2))
    recs = _records(tmp_path / "a")
    assert [r["env_steps"] for r in recs] == [2 * 2 * 15] * 2
    assert all(r["dream_steps"] > 0 and -1 <= r.get("screen_rho", 0) <= 1 for r in recs)  # (no rho: a tie)
    tc.run(cfg("b", generations=1, screen=2))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(workers_lib.CentralRunner, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tc.run(cfg("b", generations=2, screen=2))
    monkeypatch.undo()
    resumed = tc.run(cfg("b", generations=2, screen=2))
    assert strip(_records(tmp_path / "b")) == strip(recs) and resumed["best_eval"] == straight["best_eval"]
    with pytest.raises(UsageError, match="needs --env=real and --series"):
        tc.run(_cfg(dream_world, tmp_path / "x", screen=2))
    with pytest.raises(UsageError, match="plays more members than --popsize=3"):
        tc.run(cfg("x", screen=4))
    assert not (tmp_path / "x").exists()


def test_init_from_starts_at_the_other_runs_parameters(dream_world, tmp_path):
    src = tmp_path / "dream"
    tc.run(_cfg(dream_world, src, series=dream_world["series"], generations=1, **{**TINY_DREAM, "eval_every": 1}))
    with np.load(src / tc.PARAMS_NAME) as z:
        start = z["params"]
    tc.run(_cfg(dream_world, tmp_path / "real", generations=1, eval_every=0, sigma0=1e-6, init_from=str(src)))
    with np.load(tmp_path / "real" / tc.PARAMS_NAME) as z:  # the fittest member of a tiny-sigma population
        np.testing.assert_allclose(z["params"], start, atol=1e-4)
        assert str(z["source"]) == "fitness"


def test_a_real_run_continues_in_the_dream_and_an_old_spec_still_resumes(dream_world, tmp_path):
    d = tmp_path / "switch"
    tc.run(_cfg(dream_world, d, generations=1, eval_every=0))
    dream = {**TINY_DREAM, "eval_every": 0, "max_steps": 15}
    more = tc.run(_cfg(dream_world, d, series=dream_world["series"], **dream, generations=2))
    recs = _records(d)
    assert more["generation"] == 2 and "env_steps" in recs[0] and "dream_steps" in recs[1]
    # a workdir whose config.json still has the spec keys of earlier versions
    path = d / "config.json"
    config = json.load(open(path))
    config["spec"]["trials"] = 2
    path.write_text(json.dumps(config))
    assert tc.run(_cfg(dream_world, d, generations=3, eval_every=0))["generation"] == 3


def test_when_m_changes_the_kept_parameters_are_evaluated_again_with_it(dream_world, tmp_path, capfd):
    import shutil

    from data_gen.envpool import EnvPool
    from wm.train_mdnrnn import TrainMdnrnnConfig
    from wm.train_mdnrnn import run as train_m

    m = tmp_path / "mdnrnn"
    shutil.copytree(dream_world["mdnrnn"], m)
    world = {**dream_world, "mdnrnn": str(m)}
    first = tc.run(_cfg(world, tmp_path / "c", generations=1))
    with np.load(tmp_path / "c" / tc.PARAMS_NAME) as z:
        kept = z["params"][None]
    # iterative training continues M in place: two more steps
    cfg = json.load(open(m / "config.json"))["flags"]
    train_m(TrainMdnrnnConfig(**{**cfg, "workdir": str(m), "steps": 4, "progress": False}))
    capfd.readouterr()
    again = tc.run(_cfg(world, tmp_path / "c", generations=2, eval_every=2))  # generation 2: no new evaluation
    agent = loading.load_agent(world["vae"], str(m), "linear")
    seeds = track_seeds(0, loading.IN_TRAINING_EVAL_STREAM, 2)
    with EnvPool(tc.TrainControllerConfig.env_id, 2, 2, 15) as pool:
        want = np.mean([r.ret for r in agent_lib.run_episodes(pool, agent, kept, [(0, s) for s in seeds], 15)])
    assert "M changed (ckpt-2 -> ckpt-4): the kept parameters (generation 1)" in capfd.readouterr().err
    assert again["best_eval"] == pytest.approx(want, rel=1e-6) and first["best_eval"] is not None


def test_the_kept_controller_is_scored_on_evaluate_s_tracks_whenever_it_or_m_changes(dream_world, tmp_path):
    import shutil

    from data_gen.envpool import EnvPool
    from wm import evaluate
    from wm.train_mdnrnn import TrainMdnrnnConfig
    from wm.train_mdnrnn import run as train_m

    m = tmp_path / "mdnrnn"
    shutil.copytree(dream_world["mdnrnn"], m)
    world = {**dream_world, "mdnrnn": str(m)}
    seeds = track_seeds(0, evaluate.EVAL_SEED_STREAM, 2)  # wm.evaluate's first two tracks at its default seed

    def played(mdnrnn):
        agent = loading.load_agent(world["vae"], mdnrnn, "linear")
        with np.load(tmp_path / "c" / tc.PARAMS_NAME) as z:
            kept = z["params"][None]
        with EnvPool(tc.TrainControllerConfig.env_id, 2, 2, 15) as pool:
            return np.mean([r.ret for r in agent_lib.run_episodes(pool, agent, kept, [(0, s) for s in seeds], 15)])

    tc.run(_cfg(world, tmp_path / "c", generations=2, score_episodes=2))
    recs = _records(tmp_path / "c")
    assert recs[-1]["heldout_score"] == pytest.approx(played(str(m)), rel=1e-6)
    steps = np.cumsum([r["env_steps"] + r["eval_env_steps"] for r in recs])
    assert [r["real_env_steps"] for r in recs] == list(steps) and steps[-1] == 2 * (3 * 2 + 2) * 15
    assert recs[1]["train_time"] > recs[0]["train_time"] > 0
    # M continued in place: the same parameters are another agent, scored again with the new M
    cfg = json.load(open(m / "config.json"))["flags"]
    train_m(TrainMdnrnnConfig(**{**cfg, "workdir": str(m), "steps": 4, "progress": False}))
    tc.run(_cfg(world, tmp_path / "c", generations=3, eval_every=5, score_episodes=2))
    last = _records(tmp_path / "c")[-1]
    assert last["heldout_key"].endswith("@ckpt-4") and recs[-1]["heldout_key"].endswith("@ckpt-2")
    assert last["heldout_score"] == pytest.approx(played(str(m)), rel=1e-6)
    assert last["recheck_env_steps"] == 2 * 15  # the kept parameters evaluated again with the new M
    assert last["real_env_steps"] == steps[-1] + last["env_steps"] + last["eval_env_steps"] + 2 * 15


# cma_state.pkl: the dict the code before CmaState wrote (run(): the fresh dict, one generation's updates)
_FILE_KEYS = ["es", "generation", "best_fitness", "best_eval", "records", "best_member", "np_random"]


def _state_dict_as_before(num_params=5, popsize=4):
    import cma

    np.random.seed(0)
    es = cma.CMAEvolutionStrategy(np.zeros(num_params), 0.1, {"popsize": popsize, "seed": 1, "verbose": -9})
    state = {"es": es, "generation": 0, "best_fitness": -np.inf, "best_eval": None, "records": []}
    solutions = es.ask()
    fitness = np.arange(float(popsize))
    es.tell(solutions, list(-fitness))
    state["best_fitness"] = float(fitness.max())
    state["best_member"] = np.asarray(solutions[int(fitness.argmax())], np.float32)
    mean = np.asarray(es.mean, np.float32)[None]
    state["best_eval"] = {"score": 1.5, "params": mean[0], "generation": 1, "mdnrnn_checkpoint": "ckpt-2"}
    state["generation"] = 1
    state["records"].append({"generation": 1, "mean": 1.5, "sigma": float(es.sigma)})
    state["np_random"] = np.random.get_state()
    return state


def test_a_state_file_of_todays_format_loads_and_is_written_back_as_it_was():
    import pickle

    from wm.training.cma_state import CmaState

    raw = pickle.dumps(_state_dict_as_before())
    state = CmaState.loads(raw)
    assert (state.generation, state.best_fitness, state.records[0]["mean"]) == (1, 3.0, 1.5)
    assert state.best_eval.generation == 1 and state.best_eval.mdnrnn_checkpoint == "ckpt-2"
    assert state.best_member.dtype == np.float32 and state.np_random[0] == "MT19937"
    back, before = pickle.loads(state.dumps()), pickle.loads(raw)
    assert list(back) == _FILE_KEYS and list(back["best_eval"]) == list(before["best_eval"])
    np.testing.assert_array_equal(back["best_member"], before["best_member"])
    np.testing.assert_array_equal(back["best_eval"]["params"], before["best_eval"]["params"])
    np.testing.assert_array_equal(back["np_random"][1], before["np_random"][1])
    # the strategy continues where it was (pycma samples from NumPy's global RNG)
    asks = []
    for es in (back["es"], before["es"]):
        np.random.set_state(before["np_random"])
        asks.append(np.stack(es.ask()))
    np.testing.assert_array_equal(*asks)
    # an older file: best_eval without M's checkpoint, no best member yet; and a key this version does not know
    older = pickle.loads(raw)
    del older["best_eval"]["mdnrnn_checkpoint"], older["best_member"]
    older["later"] = 7
    state = CmaState.from_dict(older)
    assert state.best_eval.mdnrnn_checkpoint is None and state.best_member is None and state.extra == {"later": 7}
    again = state.to_dict()
    assert list(again) == [k for k in _FILE_KEYS if k != "best_member"] + ["later"]
    assert list(again["best_eval"]) == ["score", "params", "generation"]


def test_the_state_keeps_the_mean_of_every_generation_since_it_was_kept():
    import pickle

    from wm.training.cma_state import CmaState

    state = CmaState.loads(pickle.dumps(_state_dict_as_before()))  # generation 1, from before means were kept
    assert state.means == [] and state.mean_of(1) is None
    for gen in (2, 3):
        state.es.tell(state.es.ask(), list(np.arange(4.0)))
        state.keep_mean()
        state.generation = gen
        np.testing.assert_array_equal(state.mean_of(gen), np.asarray(state.es.mean, np.float32))
    assert state.mean_of(1) is None and state.mean_of(4) is None and state.mean_of(0) is None
    back = CmaState.loads(state.dumps())
    assert back.to_dict()["means"].shape == (2, 5) and back.mean_of(2) is not None and back.mean_of(1) is None
    np.testing.assert_array_equal(back.mean_of(3), state.mean_of(3))


def test_a_state_file_written_before_the_dataclass_resumes_and_the_file_stays_a_dict(tiny_world, tmp_path):
    import pickle

    import cma

    d = tmp_path / "before"
    first = tc.run(_cfg(tiny_world, d, generations=1))
    # the file is the dict the code before read: the same keys, best_eval's too
    raw = pickle.loads((d / tc.STATE_NAME).read_bytes())
    # (plus ``means``, the CMA-ES mean of every finished generation, ``best_member_mdnrnn``, the M its fitness
    # was under, and ``best_member_generation``, which the code before ignores and keeps)
    assert type(raw) is dict and list(raw) == [*_FILE_KEYS, "means", "best_member_mdnrnn", "best_member_generation"]
    np.testing.assert_array_equal(raw["means"], np.asarray(raw["es"].mean, np.float32)[None])
    # (and best_eval's ``tracks``, the evaluation tracks its score is over, which the code before ignores too)
    assert list(raw["best_eval"]) == ["score", "params", "generation", "mdnrnn_checkpoint", "tracks"]
    # generation 0 as the code before made it (seed, pycma, this dict) in place of the file: the same generation 1
    num_params = json.load(open(d / "config.json"))["controller_shape"]["num_params"]
    np.random.seed(0)
    es = cma.CMAEvolutionStrategy(np.zeros(num_params), 0.1, {"popsize": 3, "seed": 1, "verbose": -9})
    state = {"es": es, "generation": 0, "best_fitness": -np.inf, "best_eval": None, "records": []}
    state["np_random"] = np.random.get_state()
    (d / tc.STATE_NAME).write_bytes(pickle.dumps(state))
    again = tc.run(_cfg(tiny_world, d, generations=1))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_time", "train_time")} for r in rs]  # noqa: E731
    assert strip(_records(d)) == strip(first["records"]) and again["best_eval"] == first["best_eval"]


def test_one_generation_alone_with_a_fitness_of_its_own(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer
    from wm.training.cma_state import CmaState

    class Sphere(CmaEsTrainer):  # no episodes: fitness is closeness to all-ones parameters
        def fitness(self, population, gen):
            return -np.sum((population - 1.0) ** 2, axis=1), 0

    d = tmp_path / "sphere"
    trainer = Sphere(_cfg(tiny_world, d, eval_every=0, generations=5))
    trainer.setup()
    state = trainer.restore()
    assert state.generation == 0 and state.best_eval is None
    trainer.write_config()
    with trainer.session(state):
        record = trainer.run_one_generation(state)
    assert state.generation == 1 and record["generation"] == 1 and record["env_steps"] == 0
    assert "eval_mean" not in record and record["max"] == state.best_fitness
    saved = CmaState.loads((d / tc.STATE_NAME).read_bytes())
    assert saved.generation == 1 and saved.records == [record]
    np.testing.assert_array_equal(saved.mean_of(1), np.asarray(state.es.mean, np.float32))
    np.testing.assert_array_equal(saved.best_member, state.best_member)
    with np.load(d / tc.PARAMS_NAME) as z:
        assert str(z["source"]) == "fitness" and int(z["generation"]) == 1
        np.testing.assert_array_equal(z["params"], state.best_member)
    assert _records(d) == [record]


def test_the_fittest_members_file_names_the_generation_it_came_from(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer

    peak = {1: 1.0, 2: 5.0, 3: 4.0, 4: 5.0}  # generation 2's member stays the fittest (4 only ties it)

    class Scripted(CmaEsTrainer):  # no episodes: each generation's best fitness is scripted
        def fitness(self, population, gen):
            return peak[gen] - np.arange(len(population), dtype=np.float64), 0

    d = tmp_path / "scripted"
    trainer = Scripted(_cfg(tiny_world, d, eval_every=0, generations=4))
    trainer.setup()
    state = trainer.restore()
    trainer.write_config()
    with trainer.session(state):
        for _ in range(4):
            trainer.run_one_generation(state)
    assert state.generation == 4 and state.best_member_generation == 2 and state.best_fitness == 5.0
    with np.load(d / tc.PARAMS_NAME) as z:
        assert str(z["source"]) == "fitness" and int(z["generation"]) == 2 and float(z["score"]) == 5.0
        np.testing.assert_array_equal(z["params"], state.best_member)


def test_eval_confirm_keeps_a_mean_only_if_it_stays_ahead_on_more_tracks(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer

    class Scripted:  # each evaluation round: one return on the evaluation tracks, one on the confirmation tracks
        def __init__(self, trainer, rounds):
            self.eval_seeds, self.rounds, self.calls = set(trainer.eval_seeds), list(rounds), []

        def run(self, params, jobs, max_steps, early_stop=0):
            seeds = [s for _, s in jobs]
            self.calls.append(seeds)
            on_eval = all(s in self.eval_seeds for s in seeds)
            ret = self.rounds[0][0] if on_eval else self.rounds.pop(0)[1]
            if on_eval and self.rounds[0][1] is None:  # no confirmation expected in this round
                self.rounds.pop(0)
            return [agent_lib.EpisodeResult(j, s, ret, 7) for j, s in jobs]

    # (evaluation tracks' return, confirmation tracks' return or None if they must not be played)
    rounds = [(100.0, 40.0), (120.0, 10.0), (50.0, None), (80.0, 70.0)]

    def kept_generations(confirm):
        trainer = CmaEsTrainer(_cfg(tiny_world, tmp_path / f"c{confirm}", eval_episodes=2, eval_confirm=confirm))
        trainer.setup()
        state = trainer.restore()
        script = [(e, c if confirm else None) for e, c in rounds]
        trainer.pool = Scripted(trainer, script)
        outs = [trainer.evaluate(state, gen) for gen in range(1, 5)]
        return trainer, state, outs

    trainer, state, outs = kept_generations(3)
    assert len(trainer.confirm_seeds) == 3 and not set(trainer.confirm_seeds) & set(trainer.eval_seeds)
    assert trainer.confirm_seeds == track_seeds(0, loading.IN_TRAINING_EVAL_STREAM, 5)[2:]
    # generation 1: first, kept over all 5 tracks (2 x 100 + 3 x 40) / 5 = 64
    assert outs[0]["confirm_mean"] == 40.0 and outs[0]["confirmed_mean"] == 64.0 and outs[0]["best_eval"] == 64.0
    assert outs[0]["confirm_env_steps"] == 3 * 7
    # generation 2: 120 beats 64 on the 2 tracks, but (240 + 30) / 5 = 54 does not: not kept
    assert outs[1]["confirmed_mean"] == 54.0 and outs[1]["best_eval"] == 64.0
    # generation 3: 50 does not beat 64: no confirmation played
    assert "confirm_mean" not in outs[2] and outs[2]["best_eval"] == 64.0
    # generation 4: (160 + 210) / 5 = 74 beats 64: kept, its score over the 5 tracks
    assert outs[3]["best_eval"] == 74.0 and state.best_eval.generation == 4 and state.best_eval.tracks == 5
    assert [len(c) for c in trainer.pool.calls] == [2, 3, 2, 3, 2, 2, 3]

    # without confirmation generation 2's lucky 120 is kept, and generation 4's better mean is not
    _, state0, outs0 = kept_generations(0)
    assert [o["best_eval"] for o in outs0] == [100.0, 120.0, 120.0, 120.0] and state0.best_eval.generation == 2
    assert all("confirm_mean" not in o for o in outs0) and state0.best_eval.tracks == 2


def test_a_resume_with_another_eval_confirm_scores_the_kept_controller_again(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer
    from wm.training.cma_state import BestEval

    class Pool:
        def __init__(self):
            self.calls = []

        def run(self, params, jobs, max_steps, early_stop=0):
            self.calls.append(len(jobs))
            return [agent_lib.EpisodeResult(i, s, 10.0 * i, 5) for i, (_, s) in enumerate(jobs)]

    class Log:
        def say(self, text):
            self.said = text

    trainer = CmaEsTrainer(_cfg(tiny_world, tmp_path / "c", eval_episodes=2, eval_confirm=3))
    trainer.setup()
    state = trainer.restore()
    trainer.write_config()
    trainer.pool, trainer.log = Pool(), Log()
    params = np.zeros(trainer.agent.controller.num_params, np.float32)
    state.best_eval = BestEval(50.0, params, 1, trainer.m_checkpoint, tracks=5)
    trainer.check_m(state)  # same M, same tracks: nothing played
    assert trainer.pool.calls == [] and state.best_eval.score == 50.0
    state.best_eval = BestEval(50.0, params, 1, trainer.m_checkpoint, tracks=2)  # written with --eval_confirm=0
    trainer.check_m(state)
    assert trainer.pool.calls == [5] and state.best_eval.score == 20.0 and state.best_eval.tracks == 5  # mean of 0..40
    assert trainer.recheck_steps == 25 and "on 5 evaluation tracks" in trainer.log.said
    with np.load(tmp_path / "c" / tc.PARAMS_NAME) as z:
        assert float(z["score"]) == 20.0


def test_with_evaluation_off_a_change_of_m_forgets_the_fittest_member(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer

    class Log:
        said = ""

        def say(self, text):
            self.said = text

    trainer = CmaEsTrainer(_cfg(tiny_world, tmp_path / "c", eval_every=0, generations=1))
    trainer.setup()
    state = trainer.restore()
    trainer.log, trainer.pool = Log(), None
    member = np.ones(trainer.agent.controller.num_params, np.float32)
    state.best_member, state.best_fitness, state.best_member_mdnrnn = member, 78.0, trainer.m_checkpoint
    trainer.check_m(state)  # the same M: kept
    assert state.best_fitness == 78.0 and state.best_member is member and trainer.log.said == ""
    state.best_member_mdnrnn = "ckpt-older"  # found under another M (a dream-trained run's iteration)
    trainer.check_m(state)
    assert state.best_member is None and state.best_fitness == -np.inf and "is forgotten" in trainer.log.said
    # the next generation's fittest member is kept, with this M
    trainer.write_config()
    with trainer.session(state):
        trainer.run_one_generation(state)
    assert state.best_member is not None and state.best_member_mdnrnn == trainer.m_checkpoint
    assert np.isfinite(state.best_fitness) and state.best_fitness != 78.0


def test_start_arithmetic():
    from wm.training import starts

    assert [starts.start_of(g, 3, 2) for g in range(1, 9)] == [0, 0, 1, 1, 2, 2, None, None]
    assert [g for g in range(1, 9) if starts.ends_start(g, 3, 2)] == [2, 4, 6]
    assert starts.start_of(1, 1, 5) is None and not starts.ends_start(5, 1, 5)  # one start: today's run
    assert starts.strategy_seed(7, 0) == 8 and len({starts.strategy_seed(7, k) for k in range(5)}) == 5
    assert starts.best_start([10.0, 50.0, 30.0]) == 1 and starts.best_start([5.0, 5.0]) == 0
    with pytest.raises(ValueError):
        starts.best_start([])


class _Starts:
    """A CMA-ES run without episodes: fitness is closeness to all-ones parameters, and the evaluation of the
    mean at generation g returns ``scores[g]`` (0 when not scripted), recording which generations evaluated."""

    @staticmethod
    def trainer(cfg, scores):
        from wm.training.cma_es import CmaEsTrainer

        class Scripted(CmaEsTrainer):
            evaluated: list = []

            def fitness(self, population, gen):
                return -np.sum((population - 1.0) ** 2, axis=1), 0

            def evaluate(self, state, gen):
                self.evaluated.append(gen)
                return {"eval_mean": scores.get(gen, 0.0), "best_eval": 0.0}

        return Scripted(cfg)

    @staticmethod
    def run(trainer, until):
        trainer.setup()
        state = trainer.restore()
        trainer.write_config()
        with trainer.session(state):
            while state.generation < until:
                trainer.run_one_generation(state)
        return state


def test_starts_spend_the_first_generations_then_the_best_evaluated_one_continues(tiny_world, tmp_path):
    kw = dict(generations=8, starts=3, start_generations=2, eval_every=100)
    scores = {2: 10.0, 4: 50.0, 6: 30.0}  # start 2 (generations 3-4) evaluates best
    trainer = _Starts.trainer(_cfg(tiny_world, tmp_path / "s", **kw), scores)
    state = _Starts.run(trainer, 8)
    recs = state.records
    assert [r.get("start") for r in recs] == [0, 0, 1, 1, 2, 2, None, None]
    assert trainer.evaluated == [2, 4, 6, 8]  # each start's last generation (forced) and the run's last
    assert recs[5]["start_scores"] == [10.0, 50.0, 30.0] and recs[5]["start_continued"] == 1
    assert all("start_continued" not in r for i, r in enumerate(recs) if i != 5) and state.starts == []
    # every start begins at the same mean with its own seed: the first generations' means all differ
    firsts = [state.mean_of(g) for g in (1, 3, 5)]
    assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])
    # generation 7 continues start 2 where generation 4 left it, not start 3 where generation 6 left it
    other = _Starts.trainer(_cfg(tiny_world, tmp_path / "t", **kw), {2: 10.0, 4: 5.0, 6: 30.0})
    alt = _Starts.run(other, 8)  # the same starts, start 3 chosen
    np.testing.assert_array_equal(alt.mean_of(6), state.mean_of(6))
    assert not np.array_equal(alt.mean_of(7), state.mean_of(7))
    # start 1 is the run without starts: its generations equal a plain run's
    plain = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "p", generations=2, eval_every=100), {}), 2)
    for g in (1, 2):
        np.testing.assert_array_equal(plain.mean_of(g), state.mean_of(g))

    # stopped inside start 2 (its strategy and start 1's parked in cma_state.pkl), then resumed: the same run
    part = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "r", **kw), scores), 3)
    assert len(part.starts) == 1
    resumed = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "r", **kw), scores), 8)
    for g in range(1, 9):
        np.testing.assert_array_equal(resumed.mean_of(g), state.mean_of(g), err_msg=f"generation {g}")
    assert resumed.records[5]["start_continued"] == 1


def test_a_run_resumed_after_generation_3_samples_as_an_uninterrupted_one_past_generation_4(tiny_world, tmp_path):
    # pycma samples through its 'randn' option (default: NumPy's global RNG), and its step-size rule for
    # large problems (TPA, over ~250 parameters: the paper's 867) also draws from the global RNG from
    # generation 4 on. Pickled, a 'randn' of the global RNG becomes a private copy, so a resumed strategy drew
    # from two streams where the uninterrupted one drew from one (before each strategy had its own RandomState)
    kw = dict(generations=7, eval_every=100, controller="hidden")  # 1,443 parameters: TPA
    straight = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "a", **kw), {}), 7)
    _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "b", **kw), {}), 3)
    resumed = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "b", **kw), {}), 7)
    for g in range(1, 8):
        np.testing.assert_array_equal(resumed.mean_of(g), straight.mean_of(g), err_msg=f"generation {g}")


def test_a_tiny_run_with_starts_continues_the_start_whose_mean_evaluated_best(tiny_world, tmp_path):
    tc.run(_cfg(tiny_world, tmp_path / "s", generations=3, starts=2, start_generations=1))
    recs = _records(tmp_path / "s")
    assert [r.get("start") for r in recs] == [0, 1, None] and all("eval_mean" in r for r in recs)
    scores = [recs[0]["eval_mean"], recs[1]["eval_mean"]]
    assert recs[1]["start_scores"] == scores and recs[1]["start_continued"] == int(np.argmax(scores))
    with open(tmp_path / "s" / "config.json") as f:
        assert json.load(f)["spec"]["starts"] == 2
    with pytest.raises(UsageError, match="other settings"):  # a resume must keep the starts
        tc.run(_cfg(tiny_world, tmp_path / "s", generations=4, starts=3, start_generations=1))


def test_starts_without_their_length_or_an_evaluation_are_one_line(tiny_world, tmp_path):
    with pytest.raises(UsageError, match="--start_generations"):
        tc.run(_cfg(tiny_world, tmp_path / "x", starts=2))
    with pytest.raises(UsageError, match="--eval_every"):
        tc.run(_cfg(tiny_world, tmp_path / "x", starts=2, start_generations=1, eval_every=0))
    assert not (tmp_path / "x").exists()


def test_tracks_seed_changes_the_training_tracks_and_nothing_else(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer

    class Spy:
        def __init__(self):
            self.seeds = []

        def run(self, params, jobs, max_steps, early_stop=0):
            self.seeds.append(sorted({s for _, s in jobs}))
            return [agent_lib.EpisodeResult(j, s, 1.0, 3) for j, s in jobs]

    def trainer(name, **kw):
        t = CmaEsTrainer(_cfg(tiny_world, tmp_path / name, **kw))
        t.setup()
        t.pool = Spy()
        return t, t.restore()

    plain, plain_state = trainer("plain")
    other, other_state = trainer("other", tracks_seed=5)
    np.testing.assert_array_equal(plain_state.es.ask(), other_state.es.ask())  # the same CMA-ES samples
    assert other.eval_seeds == plain.eval_seeds  # and the same selection tracks
    population = np.zeros((3, other.agent.controller.num_params))
    plain.real_fitness(population, 2)
    other.real_fitness(population, 2)
    assert plain.pool.seeds == [sorted(track_seeds(0, loading.TRAIN_STREAM, 2, offset=2))]
    assert other.pool.seeds == [sorted(track_seeds(5, loading.TRAIN_STREAM, 2, offset=2))]
    assert set(other.pool.seeds[0]).isdisjoint(plain.pool.seeds[0])


def test_mirrored_samples_pairs_through_the_mean_and_resumes_as_an_uninterrupted_run(tiny_world, tmp_path):
    from wm.training.cma_es import CmaEsTrainer

    kw = dict(generations=6, eval_every=100, controller="hidden", popsize=6, mirrored=True)  # TPA, as the paper's C
    t = CmaEsTrainer(_cfg(tiny_world, tmp_path / "p", **kw))
    t.setup()
    es = t.restore().es
    for _ in range(3):  # every member has its mirror through the mean, generation after generation
        x = np.stack(es.ask())
        d = x - es.mean
        assert sorted(min(range(6), key=lambda j: np.abs(d[i] + d[j]).max()) for i in range(6)) == list(range(6))
        assert max(np.abs(d[i] + d).max(axis=1).min() for i in range(6)) < 1e-9 * np.abs(d).max()
        es.tell(list(x), list(np.sum((x - 1.0) ** 2, axis=1)))
    straight = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "a", **kw), {}), 6)
    _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "b", **kw), {}), 3)
    resumed = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "b", **kw), {}), 6)
    for g in range(1, 7):
        np.testing.assert_array_equal(resumed.mean_of(g), straight.mean_of(g), err_msg=f"generation {g}")
    plain = _Starts.run(_Starts.trainer(_cfg(tiny_world, tmp_path / "c", **{**kw, "mirrored": False}), {}), 2)
    assert not np.array_equal(plain.mean_of(2), straight.mean_of(2))
    with pytest.raises(UsageError, match="other settings"):  # a resume keeps the sampling
        tc.run(_cfg(tiny_world, tmp_path / "b", **{**kw, "mirrored": False, "generations": 7}))


def test_mirrored_with_an_odd_population_is_one_line(tiny_world, tmp_path):
    with pytest.raises(UsageError, match="must be even"):
        tc.run(_cfg(tiny_world, tmp_path / "x", popsize=5, mirrored=True))
    assert not (tmp_path / "x").exists()
