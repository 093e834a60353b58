"""wm.pipeline with a non-local workdir: the smoke preset end to end on TensorFlow's in-memory
``ram://`` filesystem (which, like ``gs://``, is reachable only through ``tf.io.gfile``), then a
rerun skips every stage. Nothing may be written to local disk under a mangled ``ram:/`` path."""

import json
import os

import pytest
import tensorflow as tf
from helpers import SMOKE_OUTPUTS

from wm import pipeline
from wm.core.layout import Layout

pytestmark = pytest.mark.slow  # the whole pipeline, end to end


def test_smoke_pipeline_on_ram_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray local write of "ram://..." would land here as ./ram:/...
    wd = "ram://wmtest/run"
    w = Layout(wd)
    cfg = pipeline.PipelineConfig(workdir=wd, preset="smoke", progress=False)
    pipeline.run(cfg)
    gfile = tf.io.gfile
    controller_state = ("config.json", "cma_state.pkl", "metrics.jsonl", "evaluation.json")
    for path in (
        w.pipeline_json,
        *(f"{wd}/{n}" for n in SMOKE_OUTPUTS),
        *(f"{w.controller}/{n}" for n in controller_state),
    ):
        assert gfile.exists(path), path
    assert gfile.listdir(w.videos), "evaluate's video"
    with gfile.GFile(w.pipeline_json) as f:
        stages = {s["name"]: s["status"] for s in json.load(f)["stages"]}
    assert [stages[n] for n in pipeline.STAGES] == ["done"] * len(pipeline.STAGES)
    with gfile.GFile(f"{wd}/controller/config.json") as f:
        config = json.load(f)
    assert config["vae"] == f"{wd}/vae" and config["mdnrnn"] == f"{wd}/mdnrnn"  # URLs kept as they are
    with gfile.GFile(f"{wd}/controller/metrics.jsonl") as f:
        assert [json.loads(line)["generation"] for line in f.read().splitlines()] == [1, 2]
    assert not [n for n in gfile.listdir(f"{wd}/controller") if ".tmp" in n]
    assert os.listdir(tmp_path) == []

    pipeline.run(cfg)
    with gfile.GFile(w.pipeline_json) as f:
        stages = {s["name"]: s["status"] for s in json.load(f)["stages"]}
    assert [stages[n] for n in pipeline.STAGES] == ["skipped"] * len(pipeline.STAGES)
