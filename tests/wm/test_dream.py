"""wm.dream: writes real | dream frames, logs to TensorBoard, rejects bad flags."""

import os

import imageio.v2 as imageio
import numpy as np
import pytest

from tfrecords.runtime.cli import UsageError
from wm import dream
from wm.agents import dream_video
from wm.models.loading import load_mdnrnn, load_vae


def test_dream_gif(tiny_world, tmp_path):
    out = str(tmp_path / "d.gif")
    dream.run(
        dream.DreamConfig(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out=out, steps=12, context=3, scale=1)
    )
    frames = imageio.mimread(out)
    assert len(frames) == 12 and frames[0].shape[:2] == (64, 129)
    assert os.listdir(os.path.join(tiny_world["mdnrnn"], "tensorboard", "dream"))
    # random actions, other temperature: also fine
    dream.run(
        dream.DreamConfig(
            vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out=out, steps=5, actions="random", temperature=0.0
        )
    )
    assert len(imageio.mimread(out)) == 5


def test_context_frames_are_reconstructions_then_dreams(tiny_world):
    v, m = load_vae(tiny_world["vae"]), load_mdnrnn(tiny_world["mdnrnn"])
    ep = dream_video.real_episode(tiny_world["rollouts"], 0)
    a = dream_video.dream(v, m, ep["frames"], ep["actions"], context=4, steps=8, temperature=1.0, seed=0)
    b = dream_video.dream(v, m, ep["frames"], ep["actions"], context=4, steps=8, temperature=1.0, seed=1)
    recon = v.decode(v.encode(ep["frames"][:4])[0]).numpy()
    np.testing.assert_allclose(a[:4], recon, atol=1e-5)
    np.testing.assert_allclose(a[:4], b[:4], atol=1e-6)
    assert not np.allclose(a[4:], b[4:])  # other seed, other dream


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"out": "x.png"}, "must end in .gif or .mp4"),
        ({"temperature": -1.0}, "temperature"),
        ({"actions": "left"}, "must be one of real, random"),
    ],
)
def test_bad_flags(tiny_world, kw, msg):
    cfg = dict(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out="x.gif")
    cfg.update(kw)
    with pytest.raises(UsageError, match=msg):
        dream.run(dream.DreamConfig(**cfg))


# ---------------------------------------------------------------- --agent: a controller's real episode beside its dream

# One generation of 2 candidates x 1 dream episode of at most 20 steps, no evaluation (it needs real episodes).
TINY_AGENT = dict(
    env="dream", popsize=2, trials=1, generations=1, workers=1, max_steps=20, eval_every=0, seed=0, progress=False
)
STEPS = 20


@pytest.fixture(scope="module")
def dream_agent(dream_world, tmp_path_factory) -> str:
    """A CMA-ES controller workdir trained (barely) in dream_world's M."""
    from helpers import world_config

    from wm import train_controller as tc

    wd = tmp_path_factory.mktemp("dream_agent") / "controller"
    tc.run(world_config(tc.TrainControllerConfig, dream_world, wd, TINY_AGENT, series=dream_world["series"]))
    return str(wd)


def test_agent_plays_the_real_track_and_the_dream_side_by_side(dream_agent, dream_world, tmp_path, capsys):
    from data_gen.envpool import EnvPool
    from wm.agents import loading
    from wm.agents.agent import run_episodes
    from wm.agents.dream import DreamEnv

    out = str(tmp_path / "gap.gif")
    summary = dream.run(dream.DreamConfig(agent=dream_agent, out=out, track=1, max_steps=STEPS, scale=1, seed=3))
    assert set(summary) >= {"real_return", "real_steps", "dream_return", "dream_steps", "out"}
    assert summary["out"] == out and 1 <= summary["real_steps"] <= STEPS and 1 <= summary["dream_steps"] <= STEPS
    frames = imageio.mimread(out)
    assert len(frames) == max(summary["real_steps"], summary["dream_steps"]) and frames[0].shape[:2] == (64, 129)
    assert os.listdir(os.path.join(dream_agent, "tensorboard", "dream_vs_real"))
    line = capsys.readouterr().err
    # every 2nd frame at scale 2 (what the pipeline's iterations write): half the frames, played at half the rate
    thin = str(tmp_path / "thin.gif")
    dream.run(dream.DreamConfig(agent=dream_agent, out=thin, track=1, max_steps=STEPS, scale=2, frame_stride=2, seed=3))
    with imageio.get_reader(thin) as r:
        kept = [f for f in r]
        assert r.get_meta_data()["duration"] == pytest.approx(2 * 1000 / 25, abs=1)
    assert len(kept) == (len(frames) + 1) // 2 and kept[0].shape[:2] == (128, 258)
    assert f"real {summary['real_return']:.1f} in {summary['real_steps']} steps" in line
    assert f"dream {summary['dream_return']:.1f} in {summary['dream_steps']} steps" in line

    # the same track as wm.evaluate --seed=3's episode 1, played as wm.evaluate plays it
    agent, params, config = loading.load_policy(dream_agent)
    seed = loading.track_seeds(3, loading.EVAL_STREAM, 2)[1]
    assert summary["track_seed"] == seed
    with EnvPool(config["env_id"], 1, 1, STEPS) as pool:
        first = pool.reset({0: seed})[0].frame
        (real,) = run_episodes(pool, agent, params, [(0, seed)], STEPS)
    assert summary["real_return"] == pytest.approx(real.ret, abs=1e-6) and summary["real_steps"] == real.steps
    # the dream: the same parameters from V's mean of the first frame, M's own dropout (0.2), seed 3
    env = DreamEnv(agent.mdnrnn, agent.controller, STEPS, temperature=1.15, dropout=0.2)
    res = env.rollout(params, agent.encode(first[None]).numpy(), np.zeros(1, np.int32), seed=3)
    assert summary["dream_return"] == pytest.approx(float(res.returns[0]), rel=1e-5, abs=1e-6)
    assert summary["dream_steps"] == int(res.steps[0]) and summary["dream_terminated"] == bool(res.terminated[0])


def test_agent_dream_with_sampled_endings_is_the_dream_env_s(dream_agent, tmp_path, capsys):
    from data_gen.envpool import EnvPool
    from wm.agents import loading
    from wm.agents.dream import DreamEnv

    kw = dict(agent=dream_agent, track=1, max_steps=STEPS, scale=1, seed=3)
    summary = dream.run(dream.DreamConfig(out=str(tmp_path / "s.gif"), dream_done="sample", **kw))
    assert "done=sample" in capsys.readouterr().err
    agent, params, config = loading.load_policy(dream_agent)
    with EnvPool(config["env_id"], 1, 1, STEPS) as pool:
        first = pool.reset({0: loading.track_seeds(3, loading.EVAL_STREAM, 2)[1]})[0].frame
    env = DreamEnv(agent.mdnrnn, agent.controller, STEPS, temperature=1.15, dropout=0.2, done="sample")
    res = env.rollout(params, agent.encode(first[None]).numpy(), np.zeros(1, np.int32), seed=3)
    assert summary["dream_return"] == pytest.approx(float(res.returns[0]), rel=1e-5, abs=1e-6)
    assert summary["dream_steps"] == int(res.steps[0]) and summary["dream_terminated"] == bool(res.terminated[0])


def test_c_trains_in_an_ensemble_s_short_dreams_branched_from_real_states(dream_world, tiny_world, tmp_path):
    import json

    from helpers import world_config

    from wm import train_controller as tc

    wd = tmp_path / "ensemble"
    kw = dict(
        series=dream_world["series"],
        dream_start="branch",
        dream_horizon=5,
        dream_ensemble=dream_world["mdnrnn"],
        ensemble_reward="min",
        dream_disagreement=1.0,
        generations=2,
    )
    tc.run(world_config(tc.TrainControllerConfig, dream_world, wd, TINY_AGENT, **kw))
    dream_cfg = json.load(open(wd / "config.json"))["dream"]
    assert dream_cfg["members"] == 2 and dream_cfg["horizon"] == 5
    recs = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    assert [r["generation"] for r in recs] == [1, 2]
    assert all(0 < r["dream_steps"] <= 2 * 1 * 5 for r in recs)  # popsize 2 x 1 world x 5 steps at most
    with pytest.raises(UsageError, match="no reward head"):
        tc.run(world_config(tc.TrainControllerConfig, dream_world, tmp_path / "x", TINY_AGENT,
                            **{**kw, "dream_ensemble": tiny_world["mdnrnn"]}))  # fmt: skip


def _fake_workdir(path, config: dict) -> str:
    import json

    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return str(path)


def test_agent_settings_that_cannot_work_are_one_line_and_write_nothing(dream_agent, tiny_world, tmp_path):
    out = tmp_path / "none.gif"
    ppo = _fake_workdir(tmp_path / "ppo", {"model": "controller", "algorithm": "ppo"})
    unfinished = _fake_workdir(tmp_path / "unfinished", {"model": "controller", "algorithm": "cma-es"})
    cases = [
        ({"agent": ppo}, "is a PPO agent; wm.dream plays CMA-ES controllers"),
        ({"agent": tiny_world["vae"]}, r"is not a CMA-ES controller workdir \(a 'vae' run\)"),
        ({"agent": str(tmp_path)}, r"is not a CMA-ES controller workdir \(no config.json\)"),
        ({"agent": unfinished}, "has no controller.npz yet"),
        ({"agent": dream_agent, "mdnrnn": tiny_world["mdnrnn"]}, "M has no reward head"),
        ({"agent": dream_agent, "dream_dropout": 0.99}, "--dream_dropout must be in"),
        ({"agent": dream_agent, "out": str(tmp_path / "x.png")}, "must end in .gif or .mp4"),
        ({"mdnrnn": tiny_world["mdnrnn"]}, "--vae is required"),  # without --agent, V and M stay required
        ({"vae": tiny_world["vae"]}, "--mdnrnn is required"),
    ]
    for kw, msg in cases:
        with pytest.raises(UsageError, match=msg):
            dream.run(dream.DreamConfig(**{"out": str(out), "max_steps": STEPS, **kw}))
    assert not out.exists() and not (tmp_path / "x.png").exists()


@pytest.mark.slow  # the binary in a subprocess
def test_the_binary_says_what_is_missing_in_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "wm.dream", f"--out={tmp_path / 'd.gif'}"],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("dream: error: --vae is required")
