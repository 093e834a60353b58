"""Workers as Ray actors (one local Ray cluster per test session): same episodes as local runs, lost actors."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wm.agents import workers as wk  # noqa: E402

ENV = "CarRacingFast-v3"
STEPS = 15
JOBS = [(m, s) for m in range(2) for s in (31, 32, 33, 34)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ray_cluster(ray_session):
    """The session's local Ray cluster, with this module pickled by value (actors unpickle DiesOnceSpec)."""
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray_session


class _DiesOnce:
    """An agent whose actor process SIGKILLs itself at its 5th step, once per test (``marker`` is created
    first, so the replacement lives): a death in the middle of the actor's jobs, whatever the timing."""

    def __init__(self, agent, marker):
        self.agent, self.z_size, self.marker, self.calls = agent, agent.z_size, marker, 0

    def initial_state(self, n):
        return self.agent.initial_state(n)

    def act(self, *a):
        self.calls += 1
        if self.calls == 5 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.agent.act(*a)


@dataclasses.dataclass(frozen=True)
class DiesOnceSpec(wk.AgentSpec):
    marker: str = ""

    def load(self):
        return _DiesOnce(super().load(), self.marker)


@pytest.fixture(scope="module")
def spec(tiny_world):
    return wk.AgentSpec(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], controller="linear", precision="auto")


@pytest.fixture(scope="module")
def params(spec):
    p = np.random.default_rng(4).normal(size=(2, spec.load().controller.num_params)).astype(np.float32) * 0.3
    p[:, -2] = [2.0, -3.0]  # gas bias: the two rows' returns differ
    return p


@pytest.fixture(scope="module")
def local(spec, params):
    with wk.WorkerPool(spec, ENV, 4, 2, STEPS) as pool:
        out = pool.run(params, JOBS, STEPS)
    assert len({round(r.ret, 3) for r in out}) > 1
    return out


def _same(a, b):
    assert [(r.job, r.seed, r.steps) for r in a] == [(r.job, r.seed, r.steps) for r in b]
    np.testing.assert_allclose([r.ret for r in a], [r.ret for r in b], rtol=1e-5, atol=1e-5)


def test_ray_actors_play_the_same_episodes_as_local_worker_processes(ray_cluster, spec, params, local):
    with wk.WorkerPool(spec, ENV, 4, 2, STEPS, ray_address="local") as pool:
        assert len(set(pool.pids) - {os.getpid()}) == 2  # two actor processes, not this one
        first = pool.run(params, JOBS, STEPS)
        again = pool.run(params, JOBS, STEPS)  # parameters sent again; the actors are reused
    _same(first, local)
    _same(again, local)
    # one call per actor, as one chunk per local worker: the same inference batches, so bit-equal returns
    assert [r.ret for r in first] == [r.ret for r in local] == [r.ret for r in again]


def test_an_actor_killed_mid_run_is_replaced_and_its_episodes_rerun(ray_cluster, tiny_world, params, local, tmp_path):
    marker = str(tmp_path / "died")
    dies = DiesOnceSpec(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], precision="auto", marker=marker)
    with wk.WorkerPool(dies, ENV, 4, 2, STEPS, ray_address="local") as pool:
        out = pool.run(params, JOBS, STEPS)
        assert pool.restarts == 1 and os.path.exists(marker)
    _same(out, local)


def test_actors_that_keep_failing_end_in_one_error(ray_cluster, tmp_path):
    bad = wk.AgentSpec(vae=str(tmp_path), mdnrnn=str(tmp_path))
    t = time.perf_counter()
    with wk.WorkerPool(bad, ENV, 2, 2, STEPS, ray_address="local", max_restarts=1) as pool:
        with pytest.raises(wk.WorkerError, match="failed 2 times, last: .*giving up") as e:
            pool.run(np.zeros((1, 3), np.float32), [(0, 1), (0, 2)], STEPS)
    assert "\n" not in str(e.value)
    assert time.perf_counter() - t < 120


def test_generate_on_ray_writes_the_same_bytes_as_a_local_run(ray_cluster, tmp_path, tiny_rollouts):
    from conftest import TINY

    from data_gen.generate import GenerateConfig, run

    def _bytes(d):
        return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d)) if ".tfrecord" in f}

    out = str(tmp_path / "ray")
    manifest = run(GenerateConfig(out_dir=out, progress=False, ray_address="local", **TINY))
    assert manifest["episodes"] == TINY["episodes"]
    assert _bytes(out) == _bytes(tiny_rollouts) and len(_bytes(out)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "binary,args",
    [
        ("wm.evaluate", ["--agent=/nonexistent"]),
        ("wm.train_controller", ["--vae=/nonexistent", "--mdnrnn=/nonexistent", "--workdir=/tmp/none"]),
        ("data_gen.generate", ["--out_dir=/tmp/none", "--episodes=1"]),
    ],
)
@pytest.mark.parametrize("address,message", [("127.0.0.1:1", "cannot reach the Ray cluster"), ("no port", "must be")])
def test_a_bad_or_unreachable_ray_address_is_one_line_and_exit_2(binary, args, address, message):
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", binary, *args, f"--ray_address={address}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=120,
    )
    prog = binary.rpartition(".")[2]
    err = [line for line in p.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(err) == 1 and message in err[0] and "Traceback" not in p.stderr
    assert time.perf_counter() - t < 60


TINY_CMA = dict(
    popsize=2, trials=2, generations=1, workers=2, max_steps=12, eval_every=1, eval_episodes=2, progress=False
)


@pytest.mark.slow  # three tiny trainings and evaluations: ~40 s
def test_binaries_give_the_same_episodes_in_every_layout_and_on_ray(ray_cluster, tiny_world, tmp_path):
    from wm import evaluate as ev
    from wm import train_controller as tc

    world = dict(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"])
    runs = {}
    for name, kw in {
        "central": dict(layout="central"),
        "workers": dict(layout="workers"),
        "ray": dict(ray_address="local"),
    }.items():
        tc.run(tc.TrainControllerConfig(workdir=str(tmp_path / name), **world, **TINY_CMA, **kw))
        with open(tmp_path / name / tc.METRICS_NAME) as f:
            rec = [line for line in f][0]
        summary = ev.run(
            ev.EvaluateConfig(agent=str(tmp_path / name), episodes=3, max_steps=12, workers=2, progress=False, **kw)
        )
        runs[name] = (rec, summary)
    import json

    ref = json.loads(runs["central"][0])
    for name, (rec, summary) in runs.items():
        rec = json.loads(rec)
        for k in ("mean", "max", "min", "eval_mean", "env_steps"):
            assert rec[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-5), (name, k)
        assert summary["mean"] == pytest.approx(runs["central"][1]["mean"], rel=1e-5, abs=1e-5), name
        assert summary["env_steps"] == 36
