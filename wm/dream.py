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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from wm import fileio  # noqa: E402
from wm.cli import UsageError, run_main  # noqa: E402


@dataclasses.dataclass
class DreamConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.dream``)."""

    vae: str
    mdnrnn: str
    out: str
    data: str = ""  # rollouts; default: the VAE's training data
    episode: int = 0
    context: int = 1
    steps: int = 200
    temperature: float = 1.15
    actions: str = "real"
    seed: int = 0
    scale: int = 3
    fps: int = 25


def validate(cfg: DreamConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    for name in ("vae", "mdnrnn", "out"):
        if not getattr(cfg, name):
            raise UsageError(f"--{name} is required")
    if os.path.splitext(cfg.out)[1].lower() not in (".gif", ".mp4"):
        raise UsageError(f"--out must end in .gif or .mp4, got {cfg.out!r}")
    for name in ("context", "steps", "scale", "fps"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.episode < 0:
        raise UsageError(f"--episode must be >= 0, got {cfg.episode}")
    if cfg.temperature < 0:
        raise UsageError(f"--temperature must be >= 0, got {cfg.temperature}")
    if cfg.actions not in ("real", "random"):
        raise UsageError(f"--actions must be real or random, got {cfg.actions!r}")


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

    from wm import mdnrnn

    mu, _ = vae_model.encode(tf.constant(frames[:context]))
    zs = [z for z in mu.numpy()]
    state = m_model.initial_state(1)
    rng = tf.random.experimental.stateless_split(tf.constant([seed, 0], tf.int64), steps)
    for t in range(steps - 1):
        _, state, mix = m_model.step(zs[t][None], actions[t][None], state)
        if t + 1 >= context:
            zs.append(mdnrnn.sample_z(mix, temperature, seed=rng[t])[0].numpy())
    return np.asarray(vae_model.decode(tf.constant(np.stack(zs[:steps]))), np.float32)


def side_by_side(real, dreamed, scale: int):
    """uint8 frames [T, H*scale, 2*W*scale + scale, 3]: real | gap | dream."""
    import numpy as np

    real = np.asarray(real, np.uint8)
    dreamed = np.clip(np.asarray(dreamed) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    gap = np.full((*real.shape[:2], 1, 3), 255, np.uint8)
    both = np.concatenate([real, gap, dreamed], axis=2)
    return both.repeat(scale, axis=1).repeat(scale, axis=2)


def run(cfg: DreamConfig) -> str:
    """Writes the dream video; returns its path."""
    validate(cfg)
    import imageio.v2 as imageio
    import numpy as np
    import tensorflow as tf

    from data_gen.policies import BrownianPolicy
    from wm import train_lib, train_mdnrnn, train_vae

    vae_model = train_vae.load(cfg.vae)
    m_model = train_mdnrnn.load(cfg.mdnrnn)
    data = cfg.data or ((train_lib.read_config(cfg.vae) or {}).get("flags") or {}).get("data", "")
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
    video = side_by_side(ep["frames"][:steps], dreamed, cfg.scale)
    fileio.makedirs(fileio.dirname(cfg.out))
    with fileio.LocalTemp(cfg.out) as tmp:  # imageio writes local files; then it is copied into place
        if cfg.out.lower().endswith(".gif"):
            imageio.mimsave(tmp.path, list(video), duration=1000 / cfg.fps, loop=0)
        else:
            try:
                imageio.mimsave(tmp.path, list(video), fps=cfg.fps, format="FFMPEG")
            except (ValueError, ImportError, RuntimeError) as e:
                raise UsageError(f"cannot write MP4 ({e}); pip install 'imageio[ffmpeg]' or use a .gif") from None
        tmp.commit()
    writer = tf.summary.create_file_writer(os.path.join(cfg.mdnrnn, "tensorboard", "dream"))
    with writer.as_default(step=0):
        idx = np.linspace(0, steps - 1, min(steps, 16)).astype(int)
        tf.summary.image(f"dream_tau{cfg.temperature:g}_{cfg.actions}_actions", video[idx], max_outputs=len(idx))
    writer.close()
    print(f"dream: wrote {steps} frames (real | dream, tau={cfg.temperature:g}, {cfg.actions} actions) to {cfg.out}", file=sys.stderr)
    return cfg.out


# ---------------------------------------------------------------- flags


def define_flags() -> None:
    """Defines this binary's absl flags (only when run as a binary)."""
    d = DreamConfig(vae="", mdnrnn="", out="")
    flags.DEFINE_string("vae", None, "A train_vae workdir.")
    flags.DEFINE_string("mdnrnn", None, "A train_mdnrnn workdir.")
    flags.DEFINE_string("out", None, "Output video: FILE.gif or FILE.mp4.")
    flags.DEFINE_string("data", "", "Rollouts to take the real episode from (default: the VAE's training data).")
    flags.DEFINE_integer("episode", d.episode, "Which episode of --data (in shard order).")
    flags.DEFINE_integer("context", d.context, "Real frames M reads before dreaming on its own.")
    flags.DEFINE_integer("steps", d.steps, "Frames in the video.")
    flags.DEFINE_float("temperature", d.temperature, "Sampling temperature tau.")
    flags.DEFINE_enum("actions", d.actions, ["real", "random"], "The episode's own actions or a Brownian walk.")
    flags.DEFINE_integer("seed", d.seed, "Seed for M's samples and random actions.")
    flags.DEFINE_integer("scale", d.scale, "Pixel upscaling of the 64x64 frames.")
    flags.DEFINE_integer("fps", d.fps, "Frames per second of the video.")


FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(DreamConfig)}
    for k in ("vae", "mdnrnn", "out"):
        values[k] = values[k] or ""
    run_main(lambda: run(DreamConfig(**values)), "dream")


if __name__ == "__main__":
    define_flags()
    app.run(main)
