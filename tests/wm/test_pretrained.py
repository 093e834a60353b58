"""--agent=pretrained: an agent packaged as the shipped one plays as the agent it was packaged from."""

import json
import os

import numpy as np
import pytest
from helpers import TINY_AGENT, world_config

from tfrecords.runtime.cli import UsageError
from wm.agents import pretrained

STEPS = 12


@pytest.fixture(scope="module")
def shipped(dream_world, tmp_path_factory):
    """(a trained CMA-ES agent workdir, its packaged copy's root)."""
    from wm import train_controller as tc

    root = tmp_path_factory.mktemp("pretrained")
    wd = str(root / "run" / "controller")
    tc.run(world_config(tc.TrainControllerConfig, dream_world, wd, TINY_AGENT, series=dream_world["series"]))
    out = str(root / "wm" / "pretrained")
    sizes = pretrained.package(wd, out, {"command": "python -m wm.train_controller ...", "evaluation": None})
    assert set(sizes) == {"vae", "mdnrnn", "controller"} and all(v > 0 for v in sizes.values())
    return wd, out


def _files(root):
    return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)


def test_the_packaged_agent_evaluates_as_the_original_and_writes_nothing_into_the_package(
    shipped, tmp_path, monkeypatch
):
    from wm import evaluate

    original, out = shipped
    monkeypatch.setattr(pretrained, "ROOT", out)
    before = _files(out)
    monkeypatch.chdir(tmp_path)
    kw = dict(episodes=2, max_steps=STEPS, workers=1, layout="central", progress=False)
    mine = evaluate.run(evaluate.EvaluateConfig(agent=original, out=str(tmp_path / "a.csv"), **kw))
    packaged = evaluate.run(evaluate.EvaluateConfig(agent="pretrained", **kw))
    assert packaged["mean"] == mine["mean"] and packaged["env_steps"] == mine["env_steps"]
    assert packaged["agent"] == os.path.join(out, "controller")
    assert os.path.exists(tmp_path / "evaluation.csv") and os.path.exists(tmp_path / "evaluation.json")
    assert _files(out) == before  # the shipped directory is read-only to the binaries
    config = json.load(open(os.path.join(out, "controller", "config.json")))
    assert (config["vae"], config["mdnrnn"]) == (os.path.join("..", "vae"), os.path.join("..", "mdnrnn"))
    assert json.load(open(os.path.join(out, pretrained.SOURCE_JSON)))["command"].startswith("python -m")


def test_the_packaged_v_and_m_are_the_trained_weights_without_the_optimizer(shipped, dream_world):
    from wm.agents import loading
    from wm.core import workdir

    original, out = shipped
    a, pa, _ = loading.load_policy(original, "float32")
    b, pb, _ = loading.load_policy(os.path.join(out, "controller"), "float32")
    np.testing.assert_array_equal(pa, pb)
    for x, y in ((a.vae, b.vae), (a.mdnrnn, b.mdnrnn)):
        assert len(x.weights) == len(y.weights)
        for wx, wy in zip(x.weights, y.weights, strict=True):
            np.testing.assert_array_equal(wx.numpy(), wy.numpy())
    for kind in ("vae", "mdnrnn"):  # a weights-only checkpoint: smaller than the training one with Adam's slots
        size = lambda d: sum(  # noqa: E731
            os.path.getsize(os.path.join(workdir.checkpoint_dir(d), n))
            for n in os.listdir(workdir.checkpoint_dir(d))
            if os.path.basename(workdir.latest_checkpoint(d)) in n
        )
        assert size(os.path.join(out, kind)) < 0.5 * size(dream_world[kind])


def test_dream_plays_the_packaged_agent(shipped, tmp_path, monkeypatch):
    from wm import dream

    original, out = shipped
    monkeypatch.setattr(pretrained, "ROOT", out)
    before = _files(out)
    kw = dict(track=0, max_steps=STEPS, scale=1, seed=3)
    mine = dream.run(dream.DreamConfig(agent=original, out=str(tmp_path / "a.gif"), **kw))
    packaged = dream.run(dream.DreamConfig(agent="pretrained", out=str(tmp_path / "b.gif"), **kw))
    for key in ("real_return", "real_steps", "dream_return", "dream_steps"):
        assert packaged[key] == mine[key], key
    assert _files(out) == before


def test_what_cannot_be_packaged_or_resolved_is_one_line(shipped, tmp_path, monkeypatch):
    original, out = shipped
    with pytest.raises(UsageError, match="exists; give a new directory"):
        pretrained.package(original, out, {})
    monkeypatch.setattr(pretrained, "ROOT", str(tmp_path / "none"))
    with pytest.raises(UsageError, match="ships no pretrained agent"):
        pretrained.resolve("pretrained")
    assert pretrained.resolve("runs/x/controller") == "runs/x/controller"
