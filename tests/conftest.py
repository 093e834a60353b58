"""Shared test setup: the two tiers, two logical CPU devices (for MirroredStrategy) and a tiny rollout dataset.

The tiers (README "Developing"): ``python -m pytest -q`` runs the quick tier; ``python -m pytest -q -m slow``
runs the rest, which CI runs after it. A test is in the slow tier when it is marked ``slow`` or uses a
fixture in ``COSTLY_FIXTURES``; a quick-tier test that runs one of the project's binaries as a subprocess
(``python -m wm.…``) fails, saying so. Any ``-m`` expression, or naming tests by node id (``file.py::test``),
replaces the default selection.
"""

import os  # noqa: I001  (tfrecords sets TensorFlow's environment, so it loads before TensorFlow)
import subprocess
import sys

import pytest

import tfrecords  # noqa: F401
import tensorflow as tf

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

# Must run before anything initializes TensorFlow's devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# Fixtures whose cost puts every test that uses them in the slow tier, and why.
COSTLY_FIXTURES = {"ray_session": "starts a local Ray cluster"}


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection, which then sees these marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the tests that use a costly fixture ``slow``; without ``-m`` or node ids, runs the quick tier."""
    for item in items:
        if COSTLY_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    chosen = config.option.markexpr or "-m" in config.invocation_params.args
    if chosen or (config.args and all("::" in a for a in config.args)):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _quick_tier_runs_no_binary(request):
    """Fails a quick-tier test that starts ``python -m`` one of the project's modules: each such run starts
    TensorFlow again (seconds), so it belongs in the slow tier."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    real_init = subprocess.Popen.__init__

    def init(self, args, *rest, **kwargs):
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
        if len(argv) > 2 and argv[0] == sys.executable and argv[1] == "-m":
            if argv[2].split(".")[0] in ("wm", "data_gen", "tfrecords"):
                pytest.fail(f"runs `python -m {argv[2]}` as a subprocess: mark the test @pytest.mark.slow", False)
        real_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = init  # not monkeypatch: a test's monkeypatch.undo() would lift it
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real_init


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
