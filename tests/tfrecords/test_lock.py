"""tfrecords.runtime.lock: one run per directory; a lock left by a killed run is taken over; nothing left behind."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tfrecords.runtime import fileio, lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Another process that takes the lock of sys.argv[1], says so, and holds it until killed.
HOLDER = (
    "import sys, time\n"
    "from tfrecords.runtime import lock\n"
    "with lock.hold([sys.argv[1]], 'holder'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _holder(directory) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_s_lock_is_taken_over(tmp_path):
    d = tmp_path / "work"
    p = _holder(d)
    try:
        with pytest.raises(lock.DirectoryInUse) as e:
            with lock.hold([str(d)], "second"):
                pytest.fail("the second run must not start")
        msg = str(e.value)
        assert "\n" not in msg and f"{d} is in use by holder (host {socket.gethostname()}, pid {p.pid}, since" in msg
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert os.path.exists(d / lock.LOCK_NAME)  # left behind by kill -9 ...
    with lock.hold([str(d)], "rerun"):  # ... and taken over
        assert json.loads((d / lock.LOCK_NAME).read_text())["prog"] == "rerun"
    assert os.listdir(d) == []  # the rerun's lock goes with it


def test_a_refused_or_finished_run_leaves_no_lock_and_no_directory_it_made(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data").write_text("x")
    with lock.hold([str(keep), str(tmp_path / "new")], "run"):
        assert (keep / lock.LOCK_NAME).exists() and (tmp_path / "new" / lock.LOCK_NAME).exists()
        (tmp_path / "new" / "out").write_text("y")
    assert sorted(os.listdir(keep)) == ["data"] and sorted(os.listdir(tmp_path / "new")) == ["out"]
    with pytest.raises(RuntimeError):
        with lock.hold([str(tmp_path / "failed")], "run"):
            raise RuntimeError("the run failed before writing")
    assert not os.path.exists(tmp_path / "failed")


def test_a_process_holding_a_directory_passes_through_and_only_the_chief_of_a_multi_worker_run_locks(
    tmp_path, monkeypatch
):
    d = str(tmp_path / "pipeline")
    with lock.hold([d], "pipeline"):
        with lock.hold([d, os.path.join(d, "vae")], "report"):  # a stage inside the pipeline's own workdir
            assert os.path.exists(os.path.join(d, "vae", lock.LOCK_NAME))
        assert os.path.exists(os.path.join(d, lock.LOCK_NAME))

    class Cfg:
        workdir, out_dir, strategy = d, "", "multi_worker"

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}, "task": {"type": "worker", "index": 1}}))
    assert lock.locked_dirs(Cfg()) == []
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}))
    assert lock.locked_dirs(Cfg()) == [d]
    Cfg.strategy = "default"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}, "task": {"type": "worker", "index": 1}}))
    assert lock.locked_dirs(Cfg()) == [d]


def test_on_a_filesystem_without_locks_a_fresh_holder_file_refuses_and_a_stale_one_is_taken_over():
    d = "ram://lock_test/work"
    path = fileio.join(d, lock.LOCK_NAME)
    other = {"prog": "train_vae", "host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00+00:00"}
    fileio.write_json_atomic(path, {**other, "heartbeat": time.time()})
    with pytest.raises(lock.DirectoryInUse, match="in use by train_vae \\(host elsewhere, pid 1"):
        with lock.hold([d], "second"):
            pass
    fileio.write_json_atomic(path, {**other, "heartbeat": time.time() - lock.STALE_S - 1})  # its run is lost
    with lock.hold([d], "rerun"):
        assert fileio.read_json(path)["prog"] == "rerun"
    dead = {**other, "host": socket.gethostname(), "pid": 2**22 + 12345}  # this host, no such process
    fileio.write_json_atomic(path, {**dead, "heartbeat": time.time()})
    with lock.hold([d], "rerun"):
        assert fileio.read_json(path)["prog"] == "rerun"
    assert not fileio.exists(path)


def test_a_directory_that_cannot_be_made_is_one_line():
    with pytest.raises(lock.UsageError, match="^cannot write to /proc/forbidden/x: "):
        with lock.hold(["/proc/forbidden/x"], "run"):
            pytest.fail("nothing runs without the lock")
