"""Shared test setup: two logical CPU devices (for MirroredStrategy) and a tiny rollout dataset."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must run before anything initializes TensorFlow's devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

TINY = dict(episodes=4, max_steps=40, workers=1, episodes_per_shard=2, seed=0, policy="brownian")


@pytest.fixture(scope="session")
def tiny_rollouts(tmp_path_factory) -> str:
    """A 4-episode, 40-step rollout dataset in 2 shards, made once per session; returns its directory."""
    from data_gen.generate import GenerateConfig, run

    out = str(tmp_path_factory.mktemp("tiny") / "rollouts")
    run(GenerateConfig(out_dir=out, progress=False, **TINY))
    return out
