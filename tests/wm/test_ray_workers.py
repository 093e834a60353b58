"""Workers as Ray actors (one local Ray cluster per test session): same episodes as local runs, lost actors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import shard_digests

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
    first, so the replacement lives): a death in the middle of the actor's jobs, whatever the timing. The
    marker is created exclusively: of two actors reaching their 5th step together, only one dies (checking
    for it first let both die, once, on the clean-clone CI of 2026-12-07)."""

    def __init__(self, agent, marker):
        self.agent, self.z_size, self.marker, self.calls = agent, agent.z_size, marker, 0

    def initial_state(self, n):
        return self.agent.initial_state(n)

    def act(self, *a):
        self.calls += 1
        if self.calls == 5:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return self.agent.act(*a)
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

    out = str(tmp_path / "ray")
    manifest = run(GenerateConfig(out_dir=out, progress=False, ray_address="local", **TINY))
    assert manifest["episodes"] == TINY["episodes"]
    assert shard_digests(out) == shard_digests(tiny_rollouts) and len(shard_digests(out)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "binary,args",
    [
        ("wm.evaluate", ["--agent=/nonexistent"]),
        ("wm.train_controller", ["--vae=/nonexistent", "--mdnrnn=/nonexistent", "--workdir=/tmp/none"]),
        ("data_gen.generate", ["--out_dir=/tmp/none", "--episodes=1"]),
        ("wm.train_ppo", ["--vae=/nonexistent", "--mdnrnn=/nonexistent", "--workdir=/tmp/none"]),
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

    ref = json.loads(runs["central"][0])
    for name, (rec, summary) in runs.items():
        rec = json.loads(rec)
        for k in ("mean", "max", "min", "eval_mean", "env_steps"):
            assert rec[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-5), (name, k)
        assert summary["mean"] == pytest.approx(runs["central"][1]["mean"], rel=1e-5, abs=1e-5), name
        assert summary["env_steps"] == 36


def test_env_actors_step_like_local_processes_and_a_killed_one_is_replaced(ray_cluster):
    from data_gen.envpool import EnvPool, PoolError, WorkerLost
    from data_gen.ray_envpool import RayEnvPool

    actions = {0: np.array([0.3, 1.0, 0.0]), 1: np.array([-0.5, 0.5, 0.2]), 2: np.array([0.0, 1.0, 0.0])}

    def play(pool):
        out = [pool.reset({0: 7, 1: 8, 2: 9})]
        out += [pool.step(actions) for _ in range(3)]
        return [{s: (st.frame.tobytes(), st.reward, st.terminated, st.tiles) for s, st in o.items()} for o in out]

    with EnvPool(ENV, 3, 2, STEPS) as local:
        want = play(local)
    with RayEnvPool(ENV, 3, 2, STEPS, "local", max_restarts=1) as pool:
        assert pool.workers == 2 and os.getpid() not in pool.pids
        assert play(pool) == want
        os.kill(pool.pids[0], signal.SIGKILL)  # actor 0 holds slots 0 and 2
        with pytest.raises(WorkerLost) as e:
            pool.step(actions)
        assert e.value.slots == [0, 2] and set(e.value.partial) == {1}
        assert pool.restarts == 1
        again = pool.reset({0: 7, 2: 9})  # the replacement serves the lost slots from a reset
        assert {s: st.frame.tobytes() for s, st in again.items()} == {s: want[0][s][0] for s in (0, 2)}
        os.kill(pool.pids[1], signal.SIGKILL)
        with pytest.raises(PoolError, match="failed 2 times.*giving up"):
            pool.step(actions)


@pytest.mark.slow  # two tiny PPO runs: ~30 s
def test_ppo_on_ray_actors_trains_the_weights_of_a_local_run(ray_cluster, tiny_world, tmp_path):
    import tensorflow as tf

    from wm import train_ppo as tp

    def weights(wd):
        path = tf.train.latest_checkpoint(os.path.join(wd, tp.CHECKPOINT_DIR))
        names = [n for n, _ in tf.train.list_variables(path) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
        return {n: tf.train.load_variable(path, n) for n in names}

    tiny = dict(envs=2, workers=2, env_steps=64, rollout_len=16, epochs=1, minibatch_size=16, max_steps=20)
    runs = {}
    for name, kw in {"local": {}, "ray": dict(ray_address="local")}.items():
        wd = str(tmp_path / name)
        cfg = tp.TrainPPOConfig(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], workdir=wd, progress=False)
        out = tp.run(dataclasses.replace(cfg, **tiny, **kw))
        recs = [{k: r[k] for k in ("env_steps", "policy_loss", "value_loss")} for r in out["records"]]
        runs[name] = (recs, weights(wd))
    (rec_l, w_l), (rec_r, w_r) = runs["local"], runs["ray"]
    assert rec_l == rec_r and len(rec_l) == 2
    assert w_l.keys() == w_r.keys() and len(w_l) > 5
    for k in w_l:
        np.testing.assert_array_equal(w_l[k], w_r[k], err_msg=k)


@pytest.mark.slow  # a killed and a resumed driver process, and a straight run: ~60 s
def test_a_driver_killed_on_ray_resumes_where_it_stopped(ray_cluster, tiny_world, tmp_path):
    from wm import train_controller as tc

    def records(wd):
        with open(os.path.join(wd, tc.METRICS_NAME)) as f:
            return [{k: v for k, v in json.loads(line).items() if k not in ("wall_time", "train_time")} for line in f]

    tiny = dict(popsize=2, trials=1, generations=4, workers=1, max_steps=15, eval_every=0)
    wd = str(tmp_path / "killed")
    address = ray_cluster.get_runtime_context().gcs_address  # the session's cluster, as a second driver
    flags = [f"--vae={tiny_world['vae']}", f"--mdnrnn={tiny_world['mdnrnn']}", f"--workdir={wd}", "--noprogress"]
    cmd = [sys.executable, "-m", "wm.train_controller", *flags, f"--ray_address={address}"]
    cmd += [f"--{k}={v}" for k, v in tiny.items()]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = os.path.join(wd, tc.METRICS_NAME)
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(metrics) and open(metrics).read().count("\n") >= 1:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(records(wd))
    assert 1 <= done < 4, "the kill should land mid-run"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    assert f"resuming after generation {done}" in r.stderr
    straight = str(tmp_path / "straight")  # local worker processes: the same episodes as Ray actors
    world = dict(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"])
    tc.run(tc.TrainControllerConfig(**world, workdir=straight, progress=False, **tiny))
    assert records(wd) == records(straight)
