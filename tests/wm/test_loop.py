"""wm.training.loop and wm.core.workdir: triggers, metrics.jsonl, stop handling, the workdir guard."""

import json

import pytest

from tfrecords.runtime.cli import Terminated
from tfrecords.runtime.errors import UsageError
from wm.core import workdir
from wm.training.loop import RunLog, due, stopping


def test_due():
    assert [s for s in range(1, 11) if due(s, 4)] == [4, 8]
    assert due(7, 0, last=True) and not due(7, 0) and not due(3, -1)


def test_runlog_writes_metrics_and_drops_entries_past_the_resume_point(tmp_path):
    with RunLog("t", str(tmp_path), total=3, unit="gen", progress=False) as log:
        for g in (1, 2, 3):
            log.record({"generation": g, "mean": g * 1.5}, step=g)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"generation": 4, "me')  # a line cut short by a kill
    assert [e["generation"] for e in workdir.read_metrics(str(tmp_path))] == [1, 2, 3]
    log = RunLog("t", str(tmp_path), total=3, unit="gen", progress=False)
    kept = log.keep_only(lambda e: e["generation"] <= 2)
    log.close()
    assert [e["generation"] for e in kept] == [1, 2]
    assert [json.loads(ln)["generation"] for ln in open(tmp_path / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "tensorboard").is_dir()


def test_stopping_saves_then_reraises():
    saved = []
    with pytest.raises(KeyboardInterrupt), stopping(lambda: saved.append("ctrl-c")):
        raise KeyboardInterrupt
    with pytest.raises(Terminated), stopping(lambda: saved.append("sigterm")):
        raise Terminated
    with pytest.raises(ValueError), stopping(lambda: saved.append("never")):
        raise ValueError("a crash saves nothing")
    assert saved == ["ctrl-c", "sigterm"]


def test_guard(tmp_path):
    d = str(tmp_path)
    assert workdir.guard(d, {"model": "vae"}, {"arch": {"z": 32}}, "vae", has_state=False, per_key="arch") is None
    with pytest.raises(UsageError, match="checkpoints or state but no config.json"):
        workdir.guard(d, {"model": "vae"}, {}, "vae", has_state=True)
    workdir.write_config(d, {"model": "vae", "arch": {"z": 32}, "spec": [1, 2]})
    workdir.guard(d, {"model": "vae"}, {"arch": {"z": 32}, "spec": (1, 2)}, "vae", has_state=True, per_key="arch")
    with pytest.raises(UsageError, match="another architecture \\(z: 32 there, 16 now\\)"):
        workdir.guard(d, {"model": "vae"}, {"arch": {"z": 16}}, "vae", has_state=True, per_key="arch")
    with pytest.raises(UsageError, match="other settings \\(spec:"):
        workdir.guard(d, {"model": "vae"}, {"spec": [3]}, "vae", has_state=True)
    with pytest.raises(UsageError, match="holds a 'vae' run, not a controller"):
        workdir.guard(d, {"model": "controller"}, {}, "controller", has_state=True)
    with pytest.raises(UsageError, match="is not a train_mdnrnn workdir"):
        workdir.require(d, "mdnrnn")
