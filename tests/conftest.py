"""Shared test setup: two logical CPU devices (for MirroredStrategy) and a tiny rollout dataset."""

import os  # noqa: I001  (tfrecords sets TensorFlow's environment, so it loads before TensorFlow)

import pytest

import tfrecords  # noqa: F401
import tensorflow as tf

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

# Must run before anything initializes TensorFlow's devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

TINY = dict(episodes=4, max_steps=40, workers=1, episodes_per_shard=2, seed=0, policy="brownian")
# V's and M's training loop in tiny_world: two steps, a checkpoint at the end, no held-out shards.
TINY_LOOP = dict(steps=2, steps_per_loop=1, log_every=1, checkpoint_every=2, eval_shards=0, seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_rollouts(tmp_path_factory) -> str:
    """A 4-episode, 40-step rollout dataset in 2 shards, made once per session; returns its directory."""
    from data_gen.generate import GenerateConfig, run

    out = str(tmp_path_factory.mktemp("tiny") / "rollouts")
    run(GenerateConfig(out_dir=out, progress=False, **TINY))
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_rollouts) -> dict:
    """Barely trained V and M workdirs (and the latent series between them), made once per session."""
    from wm.encode import EncodeConfig
    from wm.encode import run as encode
    from wm.train_mdnrnn import TrainMdnrnnConfig
    from wm.train_mdnrnn import run as train_m
    from wm.train_vae import TrainVaeConfig
    from wm.train_vae import run as train_v

    root = tmp_path_factory.mktemp("world")
    vae, series, m = str(root / "vae"), str(root / "series"), str(root / "mdnrnn")
    train_v(TrainVaeConfig(data=tiny_rollouts, workdir=vae, batch_size=8, **TINY_LOOP))
    encode(EncodeConfig(vae=vae, data=tiny_rollouts, out_dir=series, progress=False))
    train_m(TrainMdnrnnConfig(series=series, workdir=m, seq_len=10, batch_size=2, hidden=32, **TINY_LOOP))
    return {"rollouts": tiny_rollouts, "vae": vae, "series": series, "mdnrnn": m}


@pytest.fixture(scope="session")
def dream_world(tmp_path_factory, tiny_world) -> dict:
    """tiny_world with an M that can dream: reward and terminal heads, trained with dropout."""
    from wm.train_mdnrnn import TrainMdnrnnConfig
    from wm.train_mdnrnn import run as train_m

    m = str(tmp_path_factory.mktemp("dream") / "mdnrnn")
    train_m(
        TrainMdnrnnConfig(
            series=tiny_world["series"],
            workdir=m,
            seq_len=10,
            batch_size=2,
            hidden=32,
            reward_head=True,
            terminal_head=True,
            dropout=0.2,
            **TINY_LOOP,
        )
    )
    return {**tiny_world, "mdnrnn": m}


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster (2 CPUs) shared by every test that needs Ray; a few seconds to start."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()
