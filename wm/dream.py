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
        [--temperature=1.15] [--dream_dropout=-1] [--dream_done=threshold] [--mdnrnn=OTHER_M]

With ``--agent`` (a CMA-ES ``wm.train_controller`` workdir; PPO agents are refused) the same
controller plays twice, so one sees the exploitation gap: (1) one real episode on track
``--track``, the same track as ``wm.evaluate --seed=SEED``'s episode ``--track`` (environment seed
``track_seeds(--seed, EVAL_STREAM, 1, offset=--track)[0]``), played by the agent's own V, M and C
as ``wm.evaluate`` plays it; (2) one episode in M's dream (:class:`wm.agents.dream.DreamEnv`),
started from V's mean of the real episode's first frame, with M's sampling noise and dropout
masks from ``--seed`` (``--dream_dropout`` -1: M's own training dropout; the masks are fixed for
the episode), ended by M's terminal head (``--dream_done``: where its probability is above 1/2, or
with that probability at each step) or ``--max_steps``. The video shows the real 64x64 frames
C acted on (left) beside V's decoding of the dream (right); the shorter episode holds its last
frame. ``--vae`` and ``--mdnrnn`` default to the agent's own; another ``--mdnrnn`` dreams in that
M (it needs a reward head, and C's input size), another ``--vae`` encodes the dream's start and
decodes the dream. One line on stderr compares the returns and lengths; a few frames go to
TensorBoard under ``AGENT/tensorboard/dream_vs_real``. ``--data``, ``--episode``, ``--context``,
``--steps`` and ``--actions`` apply without ``--agent`` only; ``--track``, ``--max_steps``,
``--dream_dropout`` and ``--dream_done`` with it only.
"""

from __future__ import annotations

import dataclasses
import sys

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.agents import loading, pretrained
from wm.agents.dream import DONE_MODES, check_dreamer
from wm.agents.loading import WorldFlags
from wm.core import video, workdir


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
    dream_done: str = option(
        "threshold",
        help="With --agent: how M's terminal head ends the dream: threshold (p > 1/2) or sample (a draw per step).",
        choices=DONE_MODES,
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
    config = loading.with_model_paths(cfg.agent, config)
    check_dreamer(cfg.mdnrnn or config["mdnrnn"])
    if cfg.vae:
        workdir.require(cfg.vae, "vae")
    return config


def run_agent(cfg: DreamConfig, config: dict) -> dict:
    """``--agent``: the controller's real episode beside its dream; returns the summary."""
    from data_gen import rollout
    from wm.agents.dream import DreamEnv
    from wm.agents.dream_video import dream_models, log_frames, real_beside_dream
    from wm.core import distribute

    distribute.set_inference_threads(1)  # before TensorFlow's first op, as wm.evaluate
    agent, params, config = loading.load_policy(cfg.agent)
    v, m = dream_models(agent, config, cfg.vae, cfg.mdnrnn)
    dropout = m.dropout if cfg.dream_dropout < 0 else cfg.dream_dropout
    env = DreamEnv(  # checks C's size
        m, agent.controller, cfg.max_steps, temperature=cfg.temperature, dropout=dropout, done=cfg.dream_done
    )

    env_id = config.get("env_id", rollout.DEFAULT_ENV_ID)
    track_seed = loading.track_seeds(cfg.seed, loading.EVAL_STREAM, 1, offset=cfg.track)[0]
    real, res, frames = real_beside_dream(agent, params, v, env, env_id, track_seed, cfg.seed, cfg.scale)
    dream_steps, dream_return, terminated = int(res.steps[0]), float(res.returns[0]), bool(res.terminated[0])
    video.write(cfg.out, frames[:: cfg.frame_stride], cfg.fps / cfg.frame_stride)
    tag = f"real_vs_dream_track{cfg.track}_tau{cfg.temperature:g}_dropout{dropout:g}"
    if not pretrained.is_packaged(cfg.agent):  # the shipped agent's directory is read-only
        log_frames(fileio.join(cfg.agent, "tensorboard", "dream_vs_real"), tag, frames)
    ending = "ended by M's terminal head" if terminated else f"reached --max_steps={cfg.max_steps}"
    print(
        f"dream: real {real.ret:.1f} in {real.steps} steps (track {cfg.track}) vs dream {dream_return:.1f} in "
        f"{dream_steps} steps ({ending}; tau={cfg.temperature:g}, dropout={dropout:g}, done={cfg.dream_done}); "
        f"wrote {len(frames)} frames "
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
    cfg = dataclasses.replace(cfg, agent=pretrained.resolve(cfg.agent))
    config = validate(cfg)
    if config is not None:
        return run_agent(cfg, config)
    from wm.agents.dream_video import dream, log_frames, random_walk, real_episode
    from wm.models.loading import load_mdnrnn, load_vae

    vae_model = load_vae(cfg.vae)
    m_model = load_mdnrnn(cfg.mdnrnn)
    data = cfg.data or ((workdir.read_config(cfg.vae) or {}).get("flags") or {}).get("data", "")
    if not data:
        raise UsageError("--data is required (the VAE's config names no rollout data)")
    ep = real_episode(data, cfg.episode)
    actions = ep["actions"] if cfg.actions == "real" else random_walk(cfg.steps, cfg.seed)
    steps = min(cfg.steps, len(actions), len(ep["frames"]))
    context = min(cfg.context, steps)
    dreamed = dream(vae_model, m_model, ep["frames"], actions, context, steps, cfg.temperature, cfg.seed)
    frames = video.side_by_side(ep["frames"][:steps], dreamed, cfg.scale)
    video.write(cfg.out, frames[:: cfg.frame_stride], cfg.fps / cfg.frame_stride)
    log_frames(
        fileio.join(cfg.mdnrnn, "tensorboard", "dream"), f"dream_tau{cfg.temperature:g}_{cfg.actions}_actions", frames
    )
    print(
        f"dream: wrote {steps} frames (real | dream, tau={cfg.temperature:g}, {cfg.actions} actions) to {cfg.out}",
        file=sys.stderr,
    )
    return cfg.out


if __name__ == "__main__":
    run_binary(DreamConfig, run, "dream")
