"""The frames of ``python -m wm.dream``: a real episode beside M's dream of it.

Two videos, both real frames on the left and V's decoding of the dream on the right:

* :func:`dream`: M reads a recorded episode's first ``context`` frames (encoded by V) with its
  actions, then feeds back its own samples at a temperature (an open-loop dream of that episode);
* :func:`real_beside_dream`: a trained controller plays one real track (:func:`play_real`, as
  ``wm.evaluate`` plays it) and one episode in M's dream (:class:`wm.agents.dream.DreamEnv`)
  started from V's mean of the real episode's first frame: the exploitation gap, side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfrecords.runtime.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from wm.agents.agent import EpisodeResult
    from wm.agents.dream import DreamEnv, DreamResult
    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE


def real_episode(data: str, index: int) -> dict:
    """Episode ``index`` (in shard order) of a rollout dataset, as NumPy arrays."""
    import tfrecords
    from tfrecords import schema

    for ep in tfrecords.episodes_dataset(data, kind=schema.KIND_ROLLOUTS).skip(index).take(1):
        return {k: v.numpy() for k, v in ep.items()}
    raise UsageError(f"{data} has no episode {index}")


def random_walk(steps: int, seed: int) -> np.ndarray:
    """``steps`` actions [steps, 3] of a Brownian walk over CarRacing's action box, seeded."""
    import gymnasium as gym
    import numpy as np

    from data_gen.policies import BrownianPolicy

    walk = BrownianPolicy(gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32)))
    walk.reset(np.random.default_rng(seed))
    return np.stack([walk.act(None) for _ in range(steps)])  # type: ignore[arg-type]  # (it ignores the frame)


def dream(
    vae_model: ConvVAE,
    m_model: MDNRNN,
    frames: np.ndarray,
    actions: np.ndarray,
    context: int,
    steps: int,
    temperature: float,
    seed: int,
) -> np.ndarray:
    """Returns dreamed frames [steps, H, W, 3] in [0, 1].

    The first ``context`` outputs are V's reconstructions of the real frames; after that each
    frame decodes M's own sample. ``actions`` [>= steps, 3] drive M throughout.
    """
    import numpy as np
    import tensorflow as tf

    from wm.models import mdnrnn

    mu, _ = vae_model.encode(tf.constant(frames[:context]))
    zs = [z for z in mu.numpy()]
    state = m_model.initial_state(1)
    rng = tf.random.experimental.stateless_split(tf.constant([seed, 0], tf.int64), steps)
    for t in range(steps - 1):
        _, state, mix = m_model.step(zs[t][None], actions[t][None], state)
        if t + 1 >= context:
            zs.append(mdnrnn.sample_z(mix, temperature, seed=rng[t])[0].numpy())
    return np.asarray(vae_model.decode(tf.constant(np.stack(zs[:steps]))), np.float32)


def log_frames(logdir: str, name: str, frames: np.ndarray) -> None:
    """Up to 16 evenly spaced frames of the video as TensorBoard images."""
    import numpy as np
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=0):
        idx = np.linspace(0, len(frames) - 1, min(len(frames), 16)).astype(int)
        tf.summary.image(name, frames[idx], max_outputs=len(idx))
    writer.close()


def pad(frames: np.ndarray, n: int) -> np.ndarray:
    """``frames`` [T, ...] to n frames, repeating the last."""
    import numpy as np

    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)]) if len(frames) < n else frames


def dream_models(agent: Any, config: dict, vae_dir: str, mdnrnn_dir: str) -> tuple[ConvVAE, MDNRNN]:
    """(V, M) of ``wm.dream --agent``: the agent's own (``config`` is its policy config) unless
    ``vae_dir`` / ``mdnrnn_dir`` name other workdirs, loaded then; UsageError if their z sizes differ."""
    from tfrecords.runtime import fileio
    from wm.models.loading import load_mdnrnn, load_vae

    same = lambda given, own: not given or fileio.abspath(given) == fileio.abspath(own)  # noqa: E731
    m = agent.mdnrnn if same(mdnrnn_dir, config["mdnrnn"]) else load_mdnrnn(mdnrnn_dir)
    v = agent.vae if same(vae_dir, config["vae"]) else load_vae(vae_dir)
    if int(v.z_size) != int(m.z_size):
        raise UsageError(f"V's z has {v.z_size} dimensions, M's {m.z_size}: give a matching --vae and --mdnrnn")
    return v, m


def play_real(
    agent: Any, params: np.ndarray, env_id: str, seed: int, max_steps: int
) -> tuple[EpisodeResult, np.ndarray]:
    """One real episode of the agent on track ``seed`` (1 environment, 1 worker), as wm.evaluate plays
    it: (EpisodeResult, the 64x64 frames C acted on [steps, 64, 64, 3])."""
    import numpy as np

    from data_gen.envpool import EnvPool
    from wm.agents.agent import run_episodes

    rec: dict[str, Any] = {"frames": [], "acted": 0}

    def on_step(steps: dict[int, Any], actions: dict[int, np.ndarray], zs: Any, slot_jobs: Any) -> None:
        for s, st in steps.items():
            if s not in actions:  # a (re)start: drop anything from an attempt a lost worker cut short
                rec["frames"], rec["acted"] = [], 0
            else:
                rec["acted"] += 1
            rec["frames"].append(st.frame)

    with EnvPool(env_id, 1, 1, max_steps) as pool:
        (result,) = run_episodes(pool, agent, params, [(0, seed)], max_steps, on_step=on_step, raw_jobs=frozenset({0}))
    return result, np.stack(rec["frames"][: result.steps])


def real_beside_dream(
    agent: Any,
    params: np.ndarray,
    vae_model: ConvVAE,
    env: DreamEnv,
    env_id: str,
    track_seed: int,
    seed: int,
    scale: int,
) -> tuple[EpisodeResult, DreamResult, np.ndarray]:
    """The agent's real episode on track ``track_seed`` and its episode in ``env`` (M's dream, noise and
    masks from ``seed``) started from V's mean of the real first frame: (the real EpisodeResult, the
    dream's one-row DreamResult, the video frames: real | V's decoding of the dream, the shorter
    episode holding its last frame, each ``scale`` times upscaled)."""
    import numpy as np
    import tensorflow as tf

    from wm.core import video

    real, real_frames = play_real(agent, params, env_id, track_seed, env.max_steps)
    start = tf.cast(vae_model.encode(tf.constant(real_frames[:1]))[0], tf.float32).numpy()
    res, zs, _ = env.rollout_recorded(params, start, np.zeros(1, np.int32), seed)
    dreamed = tf.cast(vae_model.decode(tf.constant(zs[: int(res.steps[0]), 0])), tf.float32).numpy()
    n = max(len(real_frames), len(dreamed))
    return real, res, video.side_by_side(pad(real_frames, n), pad(dreamed, n), scale)
