"""wm.export: the agent as one SavedModel that plays as wm.evaluate plays, with PIL-identical preprocessing.

The SavedModel is loaded in fresh interpreters that import only tensorflow, numpy and gymnasium.
Actions are compared at every step of a real episode with the project's agent as
``wm.evaluate`` loads and plays it (``load_policy`` + ``run_episodes`` on an ``EnvPool``).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import TINY_AGENT, world_config

from data_gen import rollout
from data_gen.preprocess import preprocess_frame
from tfrecords.runtime.cli import UsageError
from wm import export as ex
from wm import train_controller as tc
from wm.agents import export as lib
from wm.agents import loading

# helpers.TINY_AGENT is given random parameters below.
TRACK_SEED, EPISODE_STEPS = 1234, 40
# Actions of the SavedModel and of the project's agent agree to this (measured: bit for bit, 0.0).
ACTION_ATOL = 1e-6
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The README's example, run as it is by test_the_readme_script_drives_carracing (from a directory
# holding runs/dream/agent_savedmodel).
def _readme_script() -> str:
    """The driving script README shows under "The agent as one SavedModel" (its first python block)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("### The agent as one SavedModel") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


README_SCRIPT = _readme_script()

# Plays one episode of stock CarRacing-v3 with the SavedModel and saves what it saw and did.
PLAY_SCRIPT = """\
import sys

import gymnasium as gym
import numpy as np
import tensorflow as tf

path, seed, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
agent = tf.saved_model.load(path)
state = agent.initial_state(1)
assert isinstance(state, tuple) and len(state) == 2 and state[0].dtype == tf.float32
h0, c0 = agent.initial_state(3)
batch, _ = agent.step(np.zeros((3, 96, 96, 3), np.uint8), (h0, c0))  # any batch size
assert batch.shape == (3, 3) and batch.dtype == tf.float32
env = gym.make("CarRacing-v3", max_episode_steps=steps)
obs, _ = env.reset(seed=seed)
raw, actions = [], []
for _ in range(steps):
    a, state = agent.step(obs[None], state)
    raw.append(obs)
    actions.append(a.numpy()[0])
    obs, _, terminated, truncated, _ = env.step(actions[-1])
    if terminated or truncated:
        break
raw = np.stack(raw)
frames = agent.preprocess(raw).numpy()
serve = agent.signatures["serving_default"](
    observations=tf.constant(raw[:1]), h=tf.zeros([1, state[0].shape[1]]), c=tf.zeros([1, state[0].shape[1]])
)
project = sorted(m for m in sys.modules if m.split(".")[0] in ("wm", "data_gen", "tfrecords"))
np.savez(out, raw=raw, actions=np.stack(actions), frames=frames, serve_actions=serve["actions"].numpy(),
         project_modules=np.array(project, dtype=str))
"""


def _python(script: str, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the test run's path
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def agent_dir(tiny_world, tmp_path_factory):
    """A CMA-ES agent workdir whose controller has random parameters, so that its actions vary."""
    wd = str(tmp_path_factory.mktemp("export_agent") / "controller")
    tc.run(world_config(tc.TrainControllerConfig, tiny_world, wd, TINY_AGENT))
    ctrl = loading.make_controller("linear", 32, 32)
    params = np.random.default_rng(0).normal(0.0, 0.5, ctrl.num_params).astype(np.float32)
    loading.save_params(os.path.join(wd, loading.PARAMS_NAME), params, ctrl, "test", 0, 0.0)
    return wd


@pytest.fixture(scope="module")
def exported(agent_dir, tmp_path_factory):
    """(root, path): the agent exported (default precision) to ROOT/runs/dream/agent_savedmodel."""
    root = tmp_path_factory.mktemp("export_out")
    out = str(root / "runs" / "dream" / "agent_savedmodel")
    info = ex.run(ex.ExportConfig(agent=agent_dir, out=out))
    assert info["algorithm"] == "cma_es" and info["hidden"] == 32 and lib.read_info(out) == info
    assert [p for p in os.listdir(os.path.dirname(out)) if p != "agent_savedmodel"] == []  # no temporaries left
    return str(root), out


def _evaluate_episode(agent_dir: str, seed: int, steps: int, precision: str = ""):
    """Raw frames and actions of one episode played as wm.evaluate plays it (load_policy, EnvPool, run_episodes)."""
    from data_gen.envpool import EnvPool
    from wm.agents.agent import run_episodes

    policy, params, _ = loading.load_policy(agent_dir, precision)
    raw, actions = [], []

    def on_step(st, acts, zs, jobs):
        for s, step in st.items():
            raw.append(step.raw)
            if s in acts:
                actions.append(acts[s])

    with EnvPool(rollout.DEFAULT_ENV_ID, 1, 1, steps) as pool:
        run_episodes(pool, policy, params, [(0, seed)], steps, on_step=on_step, raw_jobs=frozenset({0}))
    return np.stack(raw[: len(actions)]), np.stack(actions), policy


@pytest.mark.slow  # a Python subprocess that loads TensorFlow and plays stock CarRacing
def test_the_savedmodel_alone_plays_an_episode_as_wm_evaluate_plays_it(exported, agent_dir, tmp_path):
    _, path = exported
    out = tmp_path / "played.npz"
    _python(PLAY_SCRIPT, path, TRACK_SEED, EPISODE_STEPS, out, cwd=str(tmp_path))
    got = np.load(out)
    assert list(got["project_modules"]) == []  # tensorflow, numpy and gymnasium only
    raw, actions, _ = _evaluate_episode(agent_dir, TRACK_SEED, EPISODE_STEPS)
    assert len(actions) == len(got["actions"]) == EPISODE_STEPS
    np.testing.assert_array_equal(got["raw"], raw)  # stock CarRacing-v3 saw the same frames as the project's env
    diff = float(np.abs(got["actions"] - actions).max())
    print(f"max |action difference| over {EPISODE_STEPS} steps: {diff}")
    assert diff <= ACTION_ATOL
    assert np.ptp(actions, axis=0).max() > 0.01  # the actions vary: the comparison means something
    np.testing.assert_allclose(got["serve_actions"][0], got["actions"][0], atol=ACTION_ATOL)
    # the SavedModel's own preprocessing of the real frames is PIL's, byte for byte
    np.testing.assert_array_equal(got["frames"], np.stack([preprocess_frame(o) for o in raw]))


def _act_along(policy, params, raw: np.ndarray) -> np.ndarray:
    """The project's policy acting on the frames of an episode, with its state carried along."""
    state, out = policy.initial_state(1), []
    for obs in raw:
        a, state, _ = policy.act(preprocess_frame(obs)[None], state, params)
        out.append(a[0])
    return np.stack(out)


def _saved_along(path: str, raw: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    agent = tf.saved_model.load(path)
    state, out = agent.initial_state(1), []
    for obs in raw:
        a, state = agent.step(obs[None], state)
        out.append(a.numpy()[0])
    return np.stack(out)


def test_float32_export_equals_the_float32_agent(agent_dir, tmp_path):
    out = str(tmp_path / "f32")
    info = ex.run(ex.ExportConfig(agent=agent_dir, out=out, inference_precision="float32"))
    assert info["encoder_compute_dtype"] == "float32"
    raw, _, _ = _evaluate_episode(agent_dir, TRACK_SEED + 1, 20)
    policy, params, _ = loading.load_policy(agent_dir, "float32")
    np.testing.assert_allclose(_saved_along(out, raw), _act_along(policy, params, raw), rtol=0, atol=ACTION_ATOL)


def test_the_hidden_layer_controller_on_z_alone_exports_too(tiny_world, tmp_path):
    wd = str(tmp_path / "hidden")
    tc.run(world_config(tc.TrainControllerConfig, tiny_world, wd, dict(TINY_AGENT, controller="hidden")))
    ctrl = loading.make_controller("hidden", 32, 32)
    params = np.random.default_rng(1).normal(0.0, 0.5, ctrl.num_params).astype(np.float32)
    loading.save_params(os.path.join(wd, loading.PARAMS_NAME), params, ctrl, "test", 0, 0.0)
    out = str(tmp_path / "hidden_savedmodel")
    assert ex.run(ex.ExportConfig(agent=wd, out=out))["controller"] == "hidden"
    raw, actions, _ = _evaluate_episode(wd, TRACK_SEED, 20)
    np.testing.assert_allclose(_saved_along(out, raw), actions, rtol=0, atol=ACTION_ATOL)
    assert np.ptp(actions, axis=0).max() > 0.01


def test_a_ppo_agent_exports_too(tiny_world, tmp_path):
    from wm import train_ppo as tp

    wd = str(tmp_path / "ppo")
    tiny = dict(envs=1, workers=1, env_steps=16, rollout_len=16, epochs=1, minibatch_size=16, max_steps=20)
    tp.run(world_config(tp.TrainPPOConfig, tiny_world, wd, dict(seed=0, progress=False, **tiny)))
    out = str(tmp_path / "ppo_savedmodel")
    assert ex.run(ex.ExportConfig(agent=wd, out=out))["algorithm"] == "ppo"
    raw, actions, _ = _evaluate_episode(wd, TRACK_SEED, 20)
    np.testing.assert_allclose(_saved_along(out, raw), actions, rtol=0, atol=ACTION_ATOL)


def _real_frames(n: int) -> np.ndarray:
    """n raw observations of the project's CarRacing under a random-action policy (several tracks)."""
    frames, rng = [], np.random.default_rng(0)
    env = rollout.make_env(rollout.DEFAULT_ENV_ID, 1000)
    while len(frames) < n:
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        for _ in range(n // 4):
            frames.append(obs)
            action = np.array([rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0, 0.2)], np.float32)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    return np.stack(frames[:n])


def test_preprocessing_equals_pil_on_random_and_real_frames():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batches = [
        rng.integers(0, 256, (500, 96, 96, 3), dtype=np.uint8),  # uniform noise
        (rng.integers(0, 2, (500, 96, 96, 3)) * 255).astype(np.uint8),  # black and white: the largest sums
        rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (500, 96, 96, 3)),  # rounding edges
        np.clip(rng.normal(128, 60, (500, 96, 96, 3)), 0, 255).astype(np.uint8),
        np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 96, 96, 3)),  # constant frames
        _real_frames(400),
    ]
    fn = tf.function(lib.preprocess, input_signature=[tf.TensorSpec([None, 96, 96, 3], tf.uint8)])
    worst, count = 0, 0
    for obs in batches:
        want = np.stack([preprocess_frame(o) for o in obs])
        got = fn(obs).numpy()
        assert got.dtype == np.uint8 and got.shape == (len(obs), 64, 64, 3)
        worst, count = max(worst, int(np.abs(got.astype(int) - want.astype(int)).max())), count + len(obs)
    print(f"preprocessing: max |TF - PIL| over {count} frames: {worst}")
    assert worst == 0
    # PIL's fixed-point weights of each output pixel sum to one (2**22), over the support PIL uses
    for n_in in (96, 84):
        w = lib.resize_coefficients(n_in, 64)
        assert np.all(np.abs(w.sum(axis=0) - 2**22) <= 2) and np.all(w >= 0)


def test_existing_out_is_refused_and_overwrite_replaces_it(agent_dir, exported, tmp_path):
    _, path = exported
    before = sorted(os.listdir(path))
    with pytest.raises(UsageError, match="exists; remove it or pass --overwrite"):
        ex.run(ex.ExportConfig(agent=agent_dir, out=path))
    assert sorted(os.listdir(path)) == before
    out = tmp_path / "again"
    out.mkdir()
    (out / "old.txt").write_text("x")
    ex.run(ex.ExportConfig(agent=agent_dir, out=str(out), overwrite=True, inference_precision="float32"))
    assert not (out / "old.txt").exists() and (out / "saved_model.pb").exists()
    assert sorted(os.listdir(tmp_path)) == ["again"]  # neither the temporary nor the old one is left
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        ex.run(ex.ExportConfig(agent=agent_dir, out=str(tmp_path / "file"), overwrite=True))


def test_missing_and_unfinished_agents_are_one_line_errors(agent_dir, tiny_world, tmp_path):
    with pytest.raises(UsageError, match="not an agent workdir"):
        ex.run(ex.ExportConfig(agent=str(tmp_path / "nowhere"), out=str(tmp_path / "o")))
    with pytest.raises(UsageError, match="not a trained agent"):
        ex.run(ex.ExportConfig(agent=tiny_world["vae"], out=str(tmp_path / "o")))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with open(os.path.join(agent_dir, "config.json")) as f:
        (unfinished / "config.json").write_text(json.dumps(json.load(f)))
    with pytest.raises(UsageError, match="no controller.npz yet"):
        ex.run(ex.ExportConfig(agent=str(unfinished), out=str(tmp_path / "o")))
    with pytest.raises(UsageError, match="--out is required"):
        ex.run(ex.ExportConfig(agent=agent_dir))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "wm.export", f"--agent={tmp_path / 'missing'}", f"--out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("export: error: ") and "not an agent workdir" in lines[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_readme_script_drives_carracing(exported):
    root, _ = exported
    proc = _python(README_SCRIPT, cwd=root, timeout=500)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("return ") and np.isfinite(float(last.split()[1]))


def test_the_readme_script_uses_nothing_but_tensorflow_and_gymnasium():
    imports = {ln.split()[1] for ln in README_SCRIPT.splitlines() if ln.startswith(("import ", "from "))}
    assert imports == {"gymnasium", "tensorflow"}
    assert "tf.saved_model.load(" in README_SCRIPT and "agent.step(" in README_SCRIPT
