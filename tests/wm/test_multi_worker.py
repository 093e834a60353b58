"""MultiWorkerMirroredStrategy in two real worker processes on localhost (``TF_CONFIG`` with free ports).

A rerun with more steps resumes on both workers from the chief's checkpoint, and a finished run is a
no-op on both (the rerun used to hang or fail: non-chief workers restored from their own temporary
directory, i.e. started from step 0 while the chief resumed). A SIGTERM to any one worker makes every
worker save at the same step (TensorFlow's PreemptionCheckpointHandler) and stop with exit 143; a
``kill -9`` of one worker is one line from the other, never a hang; in both cases the rerun resumes on
every worker at the same step. The same for M.

With ``--deterministic`` (and ``--seed``), a run stopped by a SIGTERM to one worker and resumed ends
with exactly the weights of an uninterrupted two-worker run, and a two-worker run ends, within float
tolerance, with the weights of a single-process, single-device run of the same global batch: every
worker reads the single-process pipeline of global batches and keeps its replica's rows, and the
sampling noise is drawn for the global batch and sliced the same way. Without it, a resumed run
restarts the shuffled input and V's sampling noise and sees other batches from that step on.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.wm.test_train_mdnrnn import _series
from wm.core import workdir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(binary, flags, steps, workers=(0, 1), n=2):
    ports = _free_ports(n)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in workers:
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        args = [sys.executable, "-m", binary, *flags, f"--steps={steps}", "--strategy=multi_worker", "--seed=0"]
        args += ["--noprogress"]
        procs.append(
            subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs


def _wait(procs, timeout=240):
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a worker hung (collectives out of step)")
        out.append((p.returncode, err))
    return out


def _vae_flags(data, wd, **kw):
    flags = {"batch_size": 8, "steps_per_loop": 2, "log_every": 2, "checkpoint_every": 2, "eval_shards": 0, **kw}
    return [f"--data={data}", f"--workdir={wd}"] + [f"--{k}={v}" for k, v in flags.items()]


def _run_two_workers(data, wd, steps, **kw):
    return _wait(_start("wm.train_vae", _vae_flags(data, wd, **kw), steps))


def _train_steps(wd):
    return [e["step"] for e in workdir.read_metrics(wd) if e.get("split") == "train"]


def _stop_one_mid_run(procs, wd, victim, sig, after_entries=3):
    """Sends ``sig`` to worker ``victim`` once the chief has logged ``after_entries`` train entries."""
    deadline = time.time() + 180
    while time.time() < deadline and len(_train_steps(wd) if os.path.exists(wd) else []) < after_entries:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.1)
    assert all(p.poll() is None for p in procs), "the run ended before the signal"
    procs[victim].send_signal(sig)
    return _wait(procs)


@pytest.mark.slow
def test_rerun_resumes_on_every_worker_and_a_finished_run_is_a_no_op(tiny_rollouts, tmp_path):
    wd = str(tmp_path / "vae")
    first = _run_two_workers(tiny_rollouts, wd, 4)
    assert all(code == 0 for code, _ in first), [err[-1500:] for _, err in first]
    assert workdir.latest_checkpoint(wd).endswith("-4")

    again = _run_two_workers(tiny_rollouts, wd, 8)
    assert all(code == 0 for code, _ in again), [err[-1500:] for _, err in again]
    assert all("resuming from step 4" in err for _, err in again), [err[-1500:] for _, err in again]
    assert workdir.latest_checkpoint(wd).endswith("-8")
    steps = [e["step"] for e in workdir.read_metrics(wd) if e.get("split") == "train"]
    assert steps == [2, 4, 6, 8]

    done = _run_two_workers(tiny_rollouts, wd, 8)
    assert all(code == 0 and "nothing to do" in err for code, err in done), [err[-1500:] for _, err in done]
    assert not os.path.exists(os.path.join(wd, "tmp", "worker_1", "checkpoint"))


@pytest.mark.slow
def test_sigterm_to_one_worker_saves_on_every_worker_at_one_step_and_the_rerun_resumes(tiny_rollouts, tmp_path):
    wd = str(tmp_path / "vae")
    flags = _vae_flags(tiny_rollouts, wd, steps_per_loop=1, checkpoint_every=1000)
    stopped = _stop_one_mid_run(_start("wm.train_vae", flags, 60), wd, victim=1, sig=signal.SIGTERM)
    assert [code for code, _ in stopped] == [143, 143], [err[-1500:] for _, err in stopped]
    saved = int(workdir.latest_checkpoint(wd).rsplit("-", 1)[1])
    assert 6 <= saved < 60  # saved at the preemption: no regular checkpoint is due before step 1000
    assert f"every worker saved a checkpoint at step {saved}" in stopped[0][1]
    assert not os.path.exists(os.path.join(wd, "tmp", "worker_1"))

    again = _wait(_start("wm.train_vae", flags, 60))
    assert all(code == 0 for code, _ in again), [err[-1500:] for _, err in again]
    assert all(f"resuming from step {saved}" in err for _, err in again), [err[-1500:] for _, err in again]
    assert _train_steps(wd) == list(range(2, 61, 2))  # no step lost or logged twice
    assert workdir.latest_checkpoint(wd).endswith("-60")


@pytest.mark.slow
def test_kill_9_of_one_worker_is_one_line_on_the_other_and_the_rerun_resumes(tiny_rollouts, tmp_path):
    wd = str(tmp_path / "vae")
    flags = _vae_flags(tiny_rollouts, wd, steps_per_loop=1, checkpoint_every=4)
    killed = _stop_one_mid_run(_start("wm.train_vae", flags, 60), wd, victim=0, sig=signal.SIGKILL, after_entries=4)
    (chief, _), (other, err) = killed
    assert chief == -signal.SIGKILL
    assert other == 2, err[-1500:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("train_vae: error: a worker of the multi-worker run stopped during steps"), last
    saved = int(workdir.latest_checkpoint(wd).rsplit("-", 1)[1])
    assert saved >= 4 and saved % 4 == 0 and f"resume from ckpt-{saved}" in last

    again = _wait(_start("wm.train_vae", flags, saved + 4))
    assert all(code == 0 for code, _ in again), [err[-1500:] for _, err in again]
    assert all(f"resuming from step {saved}" in err for _, err in again), [err[-1500:] for _, err in again]
    assert workdir.latest_checkpoint(wd).endswith(f"-{saved + 4}")


@pytest.mark.slow
def test_m_resumes_on_every_worker_and_a_finished_stage_is_skipped_by_a_worker_alone(tmp_path):
    series = _series(str(tmp_path / "series"))
    wd = str(tmp_path / "mdnrnn")
    flags = [f"--series={series}", f"--workdir={wd}", "--seq_len=10", "--batch_size=2", "--hidden=16"]
    flags += ["--steps_per_loop=2", "--log_every=2", "--checkpoint_every=2", "--eval_shards=0"]
    first = _wait(_start("wm.train_mdnrnn", flags, 4))
    assert all(code == 0 for code, _ in first), [err[-1500:] for _, err in first]
    again = _wait(_start("wm.train_mdnrnn", flags, 8))
    assert all(code == 0 for code, _ in again), [err[-1500:] for _, err in again]
    assert all("resuming from step 4" in err for _, err in again), [err[-1500:] for _, err in again]
    assert _train_steps(wd) == [2, 4, 6, 8]
    # a finished stage: worker 1 alone (its chief skipped the stage, as the pipeline does) returns at once
    ((code, err),) = _wait(_start("wm.train_mdnrnn", flags, 8, workers=(1,)), timeout=60)
    assert code == 0 and "nothing to do" in err, err[-1500:]


def _weights(wd):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(workdir.latest_checkpoint(wd))
    names = [k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/", "step/"))]
    return {k: reader.get_tensor(k) for k in names if "VARIABLE_VALUE" in k}


@pytest.mark.slow
def test_a_deterministic_run_stopped_on_one_worker_and_resumed_ends_with_the_uninterrupted_weights(
    tiny_rollouts, tmp_path
):
    import numpy as np

    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    flags = dict(steps_per_loop=1, checkpoint_every=1000, deterministic="true", shuffle_buffer=64)
    done = _wait(_start("wm.train_vae", _vae_flags(tiny_rollouts, straight, **flags), 30))
    assert all(code == 0 for code, _ in done), [err[-1500:] for _, err in done]

    procs = _start("wm.train_vae", _vae_flags(tiny_rollouts, stopped, **flags), 30)
    first = _stop_one_mid_run(procs, stopped, victim=1, sig=signal.SIGTERM)
    assert [code for code, _ in first] == [143, 143], [err[-1500:] for _, err in first]
    saved = int(workdir.latest_checkpoint(stopped).rsplit("-", 1)[1])
    assert 0 < saved < 30
    again = _wait(_start("wm.train_vae", _vae_flags(tiny_rollouts, stopped, **flags), 30))
    assert all(code == 0 and f"resuming from step {saved}" in err for code, err in again), [e[-1500:] for _, e in again]

    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_deterministic_replica_shares_concatenated_are_the_single_pipeline_global_batches(tiny_rollouts):
    """In process, MirroredStrategy on the two logical CPUs: the two replicas' rows of each step are the
    one-pipeline global batch, and their noise keys [seed, n, first row] give the global batch's epsilon."""
    import numpy as np
    import tensorflow as tf

    import tfrecords
    from wm.training import deterministic

    def global_batches():
        kw = dict(shuffle_buffer=64, seed=5, reader="tf", deterministic=True)
        return tfrecords.frames_dataset(tiny_rollouts, 8, **kw)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    shares = strategy.distribute_datasets_from_function(
        lambda ctx: deterministic.replica_shares(global_batches(), 5, ctx).skip(2 * 2)  # resume at step 2
    )
    # one iterator: a second pass over the same dataset would reshuffle (fresh datasets repeat)
    steps = iter(shares)
    want = list(global_batches().skip(2).take(3).as_numpy_iterator())
    for n, expected in enumerate(want):
        step = next(steps)
        frames = [x.numpy() for x in strategy.experimental_local_results(step[0])]
        keys = [x.numpy().tolist() for x in strategy.experimental_local_results(step[1])]
        assert [f.shape[0] for f in frames] == [4, 4]
        np.testing.assert_array_equal(np.concatenate(frames), expected)
        assert keys == [[5, n + 2, 0], [5, n + 2, 4]]
    noise = strategy.run(tf.function(lambda b: deterministic.replica_normal([4, 3], b[1], 8)), args=(step,))
    eps = np.concatenate([x.numpy() for x in strategy.experimental_local_results(noise)])
    np.testing.assert_array_equal(eps, tf.random.stateless_normal([8, 3], [5, 4]).numpy())


def _max_model_difference(a, b):
    """The largest difference of a model weight (the checkpoint may name one under the optimizer)."""
    import numpy as np

    assert a.keys() == b.keys()
    names = [k for k in a if k.startswith(("model/", "optimizer/_trainable_variables/"))]
    assert len(names) >= 5 and a["step/.ATTRIBUTES/VARIABLE_VALUE"] == b["step/.ATTRIBUTES/VARIABLE_VALUE"]
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in names)


# Two replicas all-reduce (sum) two half-batch gradient sums where one device sums the whole batch:
# float32 rounding differs (~1e-7 relative a step), and Adam divides by sqrt(v), so a weight can drift
# by a few ulps of its update a step. Other batches or other noise move weights by ~the learning rate.
_ATOL = 1e-6


def _two_workers_vs_one_device(tmp_path, binary, config, data_flag, data, flags):
    """Max weight differences of a deterministic two-worker run from single-device runs, deterministic
    and not, all ``flags`` the same and 6 steps."""
    module = __import__(binary, fromlist=["run"])
    two = str(tmp_path / "two")
    args = [f"--{data_flag}={data}", f"--workdir={two}", "--deterministic"] + [f"--{k}={v}" for k, v in flags.items()]
    done = _wait(_start(binary, args, 6))
    assert all(code == 0 for code, _ in done), [err[-1500:] for _, err in done]

    def single(name, **kw):
        wd = str(tmp_path / name)
        module.run(config(**{data_flag: data}, workdir=wd, steps=6, seed=0, progress=False, **flags, **kw))
        return _weights(wd)

    ref = _weights(two)
    return _max_model_difference(ref, single("one", deterministic=True)), _max_model_difference(
        ref, single("loose", deterministic=False)
    )


@pytest.mark.slow
def test_a_deterministic_two_worker_v_ends_within_tolerance_of_a_single_device_run(tiny_rollouts, tmp_path):
    from wm.train_vae import TrainVaeConfig

    flags = dict(batch_size=8, steps_per_loop=2, log_every=2, checkpoint_every=2, eval_shards=0, shuffle_buffer=64)
    near, far = _two_workers_vs_one_device(tmp_path, "wm.train_vae", TrainVaeConfig, "data", tiny_rollouts, flags)
    print(f"V: two workers vs one device: max |dw| {near:.3g} (deterministic), {far:.3g} (not)")
    assert near <= _ATOL < far


@pytest.mark.slow
def test_a_deterministic_two_worker_m_ends_within_tolerance_of_a_single_device_run(tmp_path):
    from wm.train_mdnrnn import TrainMdnrnnConfig

    series = _series(str(tmp_path / "series"))
    flags = dict(seq_len=10, batch_size=4, hidden=16, steps_per_loop=2, log_every=2, checkpoint_every=2)
    flags.update(eval_shards=0, shuffle_buffer=16)
    near, far = _two_workers_vs_one_device(tmp_path, "wm.train_mdnrnn", TrainMdnrnnConfig, "series", series, flags)
    print(f"M: two workers vs one device: max |dw| {near:.3g} (deterministic), {far:.3g} (not)")
    assert near <= _ATOL < far
