"""MultiWorkerMirroredStrategy in two real worker processes on localhost (``TF_CONFIG`` with free ports):
a rerun with more steps resumes on both workers from the chief's checkpoint, and a finished run is a
no-op on both (the rerun used to hang or fail: non-chief workers restored from their own temporary
directory, i.e. started from step 0 while the chief resumed)."""

import json
import os
import socket
import subprocess
import sys

import pytest

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


def _run_two_workers(data, wd, steps):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        args = [sys.executable, "-m", "wm.train_vae", f"--data={data}", f"--workdir={wd}", f"--steps={steps}"]
        args += ["--strategy=multi_worker", "--batch_size=8", "--steps_per_loop=2", "--log_every=2"]
        args += ["--checkpoint_every=2", "--eval_shards=0", "--seed=0", "--noprogress"]
        procs.append(
            subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a worker hung (collectives out of step)")
        out.append((p.returncode, err))
    return out


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
