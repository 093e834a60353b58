"""Dream: roll M forward on its own from a real episode's first frames, and decode with V; or play a
trained controller in M's dream beside a real episode of the same controller (``--agent``).

    python -m wm.dream --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn --out=dream.gif \\
        --temperature=1.15 --steps=200

M reads the real episode's first ``--context`` frames (encoded by V) with their actions; from
then on it feeds back its own samples z_{t+1} ~ p(z | z_t, a_t, h_t) at ``--temperature``
(mixture logits / tau, standard deviations * sqrt(tau)). The actions are the episode's own
(``--actions=real``) or a Brownian walk (``--actions=random``). Each output frame shows the real
frame on the left and the dream on the right; ``.gif`` or ``.mp4`` (the latter needs
``pip install imageio[ffmpeg]``). The frames are also logged to TensorBoard under
``MDNRNN_WORKDIR/tensorboard/dream``.

    python -m wm.dream --agent=runs/demo/controller --out=gap.gif [--track=0] [--max_steps=1000] \\
        [--temperature=1.15] [--dream_dropout=-1] [--mdnrnn=OTHER_M]

With ``--agent`` (a CMA-ES ``wm.train_controller`` workdir; PPO agents are refused) the same
controller plays twice, so one sees the exploitation gap: (1) one real episode on track
``--track``, the same track as ``wm.evaluate --seed=SEED``'s episode ``--track`` (environment seed
``track_seeds(--seed, EVAL_STREAM, 1, offset=--track)[0]``), played by the agent's own V, M and C
as ``wm.evaluate`` plays it; (2) one episode in M's dream (:class:`wm.agents.dream.DreamEnv`),
started from V's mean of the real episode's first frame, with M's sampling noise and dropout
masks from ``--seed`` (``--dream_dropout`` -1: M's own training dropout; the masks are fixed for
the episode), ended by M's terminal head or ``--max_steps``. The video shows the real 64x64 frames
C acted on (left) beside V's decoding of the dream (right); the shorter episode holds its last
frame. ``--vae`` and ``--mdnrnn`` default to the agent's own; another ``--mdnrnn`` dreams in that
M (it needs a reward head, and C's input size), another ``--vae`` encodes the dream's start and
decodes the dream. One line on stderr compares the returns and lengths; a few frames go to
TensorBoard under ``AGENT/tensorboard/dream_vs_real``. ``--data``, ``--episode``, ``--context``,
``--steps`` and ``--actions`` apply without ``--agent`` only; ``--track``, ``--max_steps`` and
``--dream_dropout`` with it only.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.agents import loading
from wm.agents.dream import check_dreamer
from wm.agents.loading import WorldFlags
from wm.core import video, workdir

if TYPE_CHECKING:
    import numpy as np

    from wm.agents.agent import EpisodeResult
    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE


@dataclasses.dataclass
class DreamConfig(WorldFlags):
    """Everything ``run`` needs (the flags of ``python -m wm.dream``)."""

    # required without --agent (checked in validate); with it, the agent's own by default
    vae: str = option("", help="A train_vae workdir (required without --agent; default with it: the agent's V).")
    mdnrnn: str = option(
        "", help="A train_mdnrnn workdir (required without --agent; default with it: the agent's M, the one dreaming)."
    )
    out: str = option(help="Output video: FILE.gif or FILE.mp4.", required=True)
    data: str = option("", help="Rollouts to take the real episode from (default: the VAE's training data).")
    episode: int = option(0, help="Which episode of --data (in shard order).", min=0)
    context: int = option(1, help="Real frames M reads before dreaming on its own.", min=1)
    steps: int = option(200, help="Frames in the video.", min=1)
    temperature: float = option(1.15, help="Sampling temperature tau.", min=0)
    actions: str = option("real", help="The episode's own actions or a Brownian walk.", choices=("real", "random"))
    seed: int = option(0, help="Seed for M's samples and random actions (with --agent: also of the track).")
    scale: int = option(3, help="Pixel upscaling of the 64x64 frames.", min=1)
    fps: int = option(25, help="Frames per second of the video.", min=1)
    frame_stride: int = option(
        1, help="Keep every Nth frame in the video, played at fps/N so it keeps real time (smaller files).", min=1
    )
    # --agent: a controller's real episode beside its dream
    agent: str = option("", help="A CMA-ES train_controller workdir: play it for real and in M's dream, side by side.")
    track: int = option(0, help="With --agent: the real track, wm.evaluate --seed=SEED's episode TRACK.", min=0)
    max_steps: int = option(1000, help="With --agent: maximum steps of the real and the dream episode.", min=1)
    dream_dropout: float = option(
        -1.0,
        help="With --agent: the dream's dropout rate, masks fixed per episode (-1: M's training --dropout).",
        min=-1,
        max=0.95,
    )


def validate(cfg: DreamConfig) -> dict | None:
    """Raises UsageError with a one-line message for bad settings; returns the agent's config with --agent."""
    check(cfg)
    video.check_path(cfg.out)
    if not cfg.agent:
        for name in ("vae", "mdnrnn"):
            if not getattr(cfg, name):
                raise UsageError(f"--{name} is required (or give --agent=DIR, a controller workdir)")
        return None
    config = workdir.read_config(cfg.agent)
    if not config or config.get("model") != "controller":
        found = f"a {config.get('model')!r} run" if config else f"no {workdir.CONFIG_NAME}"
        raise UsageError(f"--agent={cfg.agent} is not a CMA-ES controller workdir ({found})")
    if config.get("algorithm") == "ppo":
        raise UsageError(f"--agent={cfg.agent} is a PPO agent; wm.dream plays CMA-ES controllers (wm.train_controller)")
    if not fileio.exists(fileio.join(cfg.agent, loading.PARAMS_NAME)):
        raise UsageError(f"{cfg.agent} has no {loading.PARAMS_NAME} yet: train at least one generation")
    check_dreamer(cfg.mdnrnn or config["mdnrnn"])
    if cfg.vae:
        workdir.require(cfg.vae, "vae")
    return config


def real_episode(data: str, index: int) -> dict:
    """Episode ``index`` (in shard order) of a rollout dataset, as NumPy arrays."""
    import tfrecords
    from tfrecords import schema

    for ep in tfrecords.episodes_dataset(data, kind=schema.KIND_ROLLOUTS).skip(index).take(1):
        return {k: v.numpy() for k, v in ep.items()}
    raise UsageError(f"{data} has no episode {index}")


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


def _log_frames(logdir: str, name: str, frames: np.ndarray) -> None:
    """Up to 16 evenly spaced frames of the video as TensorBoard images."""
    import numpy as np
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=0):
        idx = np.linspace(0, len(frames) - 1, min(len(frames), 16)).astype(int)
        tf.summary.image(name, frames[idx], max_outputs=len(idx))
    writer.close()


def _pad(frames: np.ndarray, n: int) -> np.ndarray:
    """``frames`` [T, ...] to n frames, repeating the last."""
    import numpy as np

    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)]) if len(frames) < n else frames


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


def run_agent(cfg: DreamConfig, config: dict) -> dict:
    """``--agent``: the controller's real episode beside its dream; returns the summary."""
    import numpy as np
    import tensorflow as tf

    from data_gen import rollout
    from wm.agents.dream import DreamEnv
    from wm.core import distribute
    from wm.models.loading import load_mdnrnn, load_vae

    distribute.set_inference_threads(1)  # before TensorFlow's first op, as wm.evaluate
    agent, params, config = loading.load_policy(cfg.agent)
    same = lambda given, own: not given or fileio.abspath(given) == fileio.abspath(own)  # noqa: E731
    m = agent.mdnrnn if same(cfg.mdnrnn, config["mdnrnn"]) else load_mdnrnn(cfg.mdnrnn)
    v = agent.vae if same(cfg.vae, config["vae"]) else load_vae(cfg.vae)
    if int(v.z_size) != int(m.z_size):
        raise UsageError(f"V's z has {v.z_size} dimensions, M's {m.z_size}: give a matching --vae and --mdnrnn")
    dropout = m.dropout if cfg.dream_dropout < 0 else cfg.dream_dropout
    env = DreamEnv(m, agent.controller, cfg.max_steps, temperature=cfg.temperature, dropout=dropout)  # checks C's size

    env_id = config.get("env_id", rollout.DEFAULT_ENV_ID)
    track_seed = loading.track_seeds(cfg.seed, loading.EVAL_STREAM, 1, offset=cfg.track)[0]
    real, real_frames = play_real(agent, params, env_id, track_seed, cfg.max_steps)

    start = tf.cast(v.encode(tf.constant(real_frames[:1]))[0], tf.float32).numpy()
    res, zs, _ = env.rollout_recorded(params, start, np.zeros(1, np.int32), cfg.seed)
    dream_steps, dream_return, terminated = int(res.steps[0]), float(res.returns[0]), bool(res.terminated[0])
    dreamed = tf.cast(v.decode(tf.constant(zs[:dream_steps, 0])), tf.float32).numpy()

    n = max(len(real_frames), len(dreamed))
    frames = video.side_by_side(_pad(real_frames, n), _pad(dreamed, n), cfg.scale)
    video.write(cfg.out, frames[:: cfg.frame_stride], cfg.fps / cfg.frame_stride)
    tag = f"real_vs_dream_track{cfg.track}_tau{cfg.temperature:g}_dropout{dropout:g}"
    _log_frames(fileio.join(cfg.agent, "tensorboard", "dream_vs_real"), tag, frames)
    ending = "ended by M's terminal head" if terminated else f"reached --max_steps={cfg.max_steps}"
    print(
        f"dream: real {real.ret:.1f} in {real.steps} steps (track {cfg.track}) vs dream {dream_return:.1f} in "
        f"{dream_steps} steps ({ending}; tau={cfg.temperature:g}, dropout={dropout:g}); wrote {n} frames "
        f"(real | dream) to {cfg.out}",
        file=sys.stderr,
    )
    return {
        "real_return": float(real.ret),
        "real_steps": int(real.steps),
        "dream_return": dream_return,
        "dream_steps": dream_steps,
        "dream_terminated": terminated,
        "track_seed": track_seed,
        "out": cfg.out,
    }


def run(cfg: DreamConfig) -> str | dict:
    """Writes the dream video; returns its path (with ``--agent``: the summary of both episodes)."""
    config = validate(cfg)
    if config is not None:
        return run_agent(cfg, config)
    import numpy as np

    from data_gen.policies import BrownianPolicy
    from wm.models.loading import load_mdnrnn, load_vae

    vae_model = load_vae(cfg.vae)
    m_model = load_mdnrnn(cfg.mdnrnn)
    data = cfg.data or ((workdir.read_config(cfg.vae) or {}).get("flags") or {}).get("data", "")
    if not data:
        raise UsageError("--data is required (the VAE's config names no rollout data)")
    ep = real_episode(data, cfg.episode)
    steps = cfg.steps
    if cfg.actions == "real":
        steps = min(steps, len(ep["actions"]))
        actions = ep["actions"]
    else:
        import gymnasium as gym

        walk = BrownianPolicy(gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32)))
        walk.reset(np.random.default_rng(cfg.seed))
        actions = np.stack([walk.act(None) for _ in range(steps)])  # type: ignore[arg-type]  # (it ignores the frame)
    steps = min(steps, len(ep["frames"]))
    context = min(cfg.context, steps)
    dreamed = dream(vae_model, m_model, ep["frames"], actions, context, steps, cfg.temperature, cfg.seed)
    frames = video.side_by_side(ep["frames"][:steps], dreamed, cfg.scale)
    video.write(cfg.out, frames[:: cfg.frame_stride], cfg.fps / cfg.frame_stride)
    _log_frames(
        fileio.join(cfg.mdnrnn, "tensorboard", "dream"), f"dream_tau{cfg.temperature:g}_{cfg.actions}_actions", frames
    )
    print(
        f"dream: wrote {steps} frames (real | dream, tau={cfg.temperature:g}, {cfg.actions} actions) to {cfg.out}",
        file=sys.stderr,
    )
    return cfg.out


if __name__ == "__main__":
    run_binary(DreamConfig, run, "dream")
