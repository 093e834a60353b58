"""wm.evaluate: determinism with a fixed seed, CSV and summary, videos, errors."""

import csv
import json
import os

import pytest
from helpers import TINY_AGENT, make_config, world_config

from tfrecords.runtime.cli import UsageError
from wm import evaluate as ev
from wm import train_controller as tc

# The evaluation the tests repeat (of helpers.TINY_AGENT).
EVAL = dict(episodes=3, seed=5, max_steps=12, progress=False)


@pytest.fixture(scope="module")
def agent_dir(tiny_world, tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("agent") / "controller")
    tc.run(world_config(tc.TrainControllerConfig, tiny_world, wd, TINY_AGENT))
    return wd


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluation_is_deterministic_and_writes_csv_and_videos(agent_dir, tmp_path):
    recording = dict(video_dir=str(tmp_path / "videos"), video_episodes="1")
    a = ev.run(make_config(ev.EvaluateConfig, EVAL, agent=agent_dir, workers=2, **recording))
    rows = _rows(os.path.join(agent_dir, "evaluation.csv"))
    assert [int(r["steps"]) for r in rows] == [12, 12, 12] and len({r["seed"] for r in rows}) == 3
    b = ev.run(make_config(ev.EvaluateConfig, EVAL, agent=agent_dir, workers=1, envs=1, out=str(tmp_path / "b.csv")))
    assert _rows(tmp_path / "b.csv") == rows  # same tracks, same returns, whatever the parallelism
    assert a["mean"] == b["mean"] and a["std"] == b["std"]
    with open(tmp_path / "b.json") as f:
        assert json.load(f)["episodes"] == 3
    videos = os.listdir(tmp_path / "videos")
    assert len(videos) == 1 and videos[0].startswith("episode_001_seed_")
    import imageio.v2 as imageio

    frames = imageio.mimread(str(tmp_path / "videos" / videos[0]))
    assert len(frames) == 12 and frames[0].shape[:2] == (192, 192 + 192 + 96)
    c = ev.run(
        make_config(
            ev.EvaluateConfig, EVAL, agent=agent_dir, seed=6, workers=1, layout="central", out=str(tmp_path / "c.csv")
        )
    )
    assert [r["seed"] for r in _rows(tmp_path / "c.csv")] != [r["seed"] for r in rows]
    assert c["episodes"] == 3


def test_non_agent_workdirs_and_out_of_range_video_episodes_are_refused(agent_dir, tiny_world, tmp_path):
    with pytest.raises(UsageError, match="not an agent workdir"):
        ev.run(ev.EvaluateConfig(agent=str(tmp_path)))
    with pytest.raises(UsageError, match="not a trained agent"):
        ev.run(ev.EvaluateConfig(agent=tiny_world["vae"]))
    with pytest.raises(UsageError, match="out of range"):
        ev.run(ev.EvaluateConfig(agent=agent_dir, episodes=2, video_dir=str(tmp_path), video_episodes="5"))


def test_out_that_is_a_directory_is_refused_before_evaluating(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        ev.validate(ev.EvaluateConfig(agent=str(tmp_path), out=str(tmp_path)))
    from tfrecords.runtime import fileio

    with pytest.raises(UsageError, match="is a directory"):
        fileio.write_text_atomic(str(tmp_path), "x")
    assert tmp_path.is_dir()
