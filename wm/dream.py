"""Dream: roll M forward on its own from a real episode's first frames, and decode with V.

    python -m wm.dream --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn --out=dream.gif \\
        --temperature=1.15 --steps=200

M reads the real episode's first ``--context`` frames (encoded by V) with their actions; from
then on it feeds back its own samples z_{t+1} ~ p(z | z_t, a_t, h_t) at ``--temperature``
(mixture logits / tau, standard deviations * sqrt(tau)). The actions are the episode's own
(``--actions=real``) or a Brownian walk (``--actions=random``). Each output frame shows the real
frame on the left and the dream on the right; ``.gif`` or ``.mp4`` (the latter needs
``pip install imageio[ffmpeg]``). The frames are also logged to TensorBoard under
``MDNRNN_WORKDIR/tensorboard/dream``.
"""

from __future__ import annotations

import dataclasses
import sys

from tfrecords import fileio
from tfrecords.cli import UsageError, check, option, run_binary
from wm.agents.loading import WorldFlags
from wm.core import video, workdir


@dataclasses.dataclass
class DreamConfig(WorldFlags):
    """Everything ``run`` needs (the flags of ``python -m wm.dream``)."""

    out: str = option(help="Output video: FILE.gif or FILE.mp4.", required=True)
    data: str = option("", help="Rollouts to take the real episode from (default: the VAE's training data).")
    episode: int = option(0, help="Which episode of --data (in shard order).", min=0)
    context: int = option(1, help="Real frames M reads before dreaming on its own.", min=1)
    steps: int = option(200, help="Frames in the video.", min=1)
    temperature: float = option(1.15, help="Sampling temperature tau.", min=0)
    actions: str = option("real", help="The episode's own actions or a Brownian walk.", choices=("real", "random"))
    seed: int = option(0, help="Seed for M's samples and random actions.")
    scale: int = option(3, help="Pixel upscaling of the 64x64 frames.", min=1)
    fps: int = option(25, help="Frames per second of the video.", min=1)


def validate(cfg: DreamConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    video.check_path(cfg.out)


def real_episode(data: str, index: int) -> dict:
    """Episode ``index`` (in shard order) of a rollout dataset, as NumPy arrays."""
    import tfrecords
    from tfrecords import schema

    for ep in tfrecords.episodes_dataset(data, kind=schema.KIND_ROLLOUTS).skip(index).take(1):
        return {k: v.numpy() for k, v in ep.items()}
    raise UsageError(f"{data} has no episode {index}")


def dream(vae_model, m_model, frames, actions, context: int, steps: int, temperature: float, seed: int):
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


def run(cfg: DreamConfig) -> str:
    """Writes the dream video; returns its path."""
    validate(cfg)
    import numpy as np
    import tensorflow as tf

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
        actions = np.stack([walk.act(None) for _ in range(steps)])
    steps = min(steps, len(ep["frames"]))
    context = min(cfg.context, steps)
    dreamed = dream(vae_model, m_model, ep["frames"], actions, context, steps, cfg.temperature, cfg.seed)
    frames = video.side_by_side(ep["frames"][:steps], dreamed, cfg.scale)
    video.write(cfg.out, frames, cfg.fps)
    writer = tf.summary.create_file_writer(fileio.join(cfg.mdnrnn, "tensorboard", "dream"))
    with writer.as_default(step=0):
        idx = np.linspace(0, steps - 1, min(steps, 16)).astype(int)
        tf.summary.image(f"dream_tau{cfg.temperature:g}_{cfg.actions}_actions", frames[idx], max_outputs=len(idx))
    writer.close()
    print(
        f"dream: wrote {steps} frames (real | dream, tau={cfg.temperature:g}, {cfg.actions} actions) to {cfg.out}",
        file=sys.stderr,
    )
    return cfg.out


if __name__ == "__main__":
    run_binary(DreamConfig, run, "dream")
