"""Smoke tests of python -m wm.train_vae and python -m wm.encode through their run(config) functions."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import TRAIN_LOOP, make_config

import tfrecords
from tfrecords.runtime.cli import UsageError
from wm import encode, train_vae
from wm.core import workdir as wdir
from wm.models.loading import load_vae

# A VAE trained 20 steps at batch 8.
TINY_V = dict(batch_size=8, learning_rate=1e-3, steps=20, **TRAIN_LOOP)


def _cfg(data, workdir, **kw):
    return make_config(train_vae.TrainVaeConfig, TINY_V, data=data, workdir=str(workdir), **kw)


def _train_losses(workdir):
    return [m["loss"] for m in wdir.read_metrics(str(workdir)) if m["split"] == "train"]


@pytest.fixture(scope="module")
def trained(tiny_rollouts, tmp_path_factory):
    """A VAE trained 40 steps with the default strategy (shared by the encode tests)."""
    workdir = tmp_path_factory.mktemp("vae")
    train_vae.run(_cfg(tiny_rollouts, workdir, steps=40, checkpoint_every=20))
    return str(workdir)


def test_default_run_learns_and_writes_its_workdir(trained):
    losses = _train_losses(trained)
    # each logged loss is a 5-step mean at batch 8: compare the last two logs, 40 steps in, to the first
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.8 * losses[0]
    evals = [m for m in wdir.read_metrics(trained) if m["split"] == "eval"]
    assert [m["step"] for m in evals] == [10, 20, 30, 40]  # one epoch = 80 training frames / 8
    config = json.load(open(os.path.join(trained, "config.json")))
    assert config["model"] == "vae" and config["arch"]["z_size"] == 32 and len(config["eval_shards"]) == 1
    assert wdir.latest_checkpoint(trained).endswith("ckpt-40")
    assert os.listdir(os.path.join(trained, "tensorboard", "train"))
    enc = keras.models.load_model(os.path.join(trained, "export", "encoder.keras"))
    dec = keras.models.load_model(os.path.join(trained, "export", "decoder.keras"))
    assert dec(enc(np.zeros((1, 64, 64, 3), np.uint8))[0]).shape == (1, 64, 64, 3)


def test_mirrored_run_learns(tiny_rollouts, tmp_path):
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, strategy="mirrored", steps=40, checkpoint_every=20))
    assert json.load(open(tmp_path / "config.json"))["setup"]["replicas"] == 2
    losses = _train_losses(tmp_path)
    assert result["step"] == 40 and np.mean(losses[-2:]) < 0.8 * losses[0]
    assert [m["step"] for m in wdir.read_metrics(str(tmp_path)) if m["split"] == "eval"] == [10, 20, 30, 40]


def test_rerun_with_more_steps_continues(tiny_rollouts, tmp_path, capsys):
    train_vae.run(_cfg(tiny_rollouts, tmp_path, steps=5, checkpoint_every=100, eval_shards=0))
    assert wdir.latest_checkpoint(str(tmp_path)).endswith("ckpt-5")
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, steps=10, checkpoint_every=100, eval_shards=0))
    assert "resuming from step 5" in capsys.readouterr().err
    assert result["step"] == 10
    assert [m["step"] for m in wdir.read_metrics(str(tmp_path))] == [5, 10]
    train_vae.run(_cfg(tiny_rollouts, tmp_path, steps=10, eval_shards=0))  # already done: no-op
    assert "already at step 10" in capsys.readouterr().err


def test_crash_in_the_middle_resumes_from_last_checkpoint(tiny_rollouts, tmp_path, monkeypatch, capsys):
    write = wdir.MetricsLog.write

    def crashing_write(self, entry):
        if entry["step"] == 15:
            raise RuntimeError("simulated crash")
        write(self, entry)

    monkeypatch.setattr(wdir.MetricsLog, "write", crashing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_vae.run(_cfg(tiny_rollouts, tmp_path, eval_shards=0, checkpoint_every=5, log_every=5))
    monkeypatch.setattr(wdir.MetricsLog, "write", write)
    assert wdir.latest_checkpoint(str(tmp_path)).endswith("ckpt-10")
    # A kill between the step-10 checkpoint and a later one: the run goes on from step 10.
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, eval_shards=0, checkpoint_every=5, log_every=5))
    assert "resuming from step 10" in capsys.readouterr().err
    assert result["step"] == 20
    assert [m["step"] for m in wdir.read_metrics(str(tmp_path))] == [5, 10, 15, 20]


def test_ctrl_c_saves_the_steps_since_the_last_checkpoint(tiny_rollouts, tmp_path, monkeypatch, capsys):
    write = wdir.MetricsLog.write

    def interrupted_write(self, entry):
        if entry["step"] == 15:
            raise KeyboardInterrupt
        write(self, entry)

    monkeypatch.setattr(wdir.MetricsLog, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        train_vae.run(_cfg(tiny_rollouts, tmp_path, eval_shards=0, checkpoint_every=10, log_every=5))
    monkeypatch.setattr(wdir.MetricsLog, "write", write)
    assert "interrupted; saved a checkpoint at step 15" in capsys.readouterr().err
    assert wdir.latest_checkpoint(str(tmp_path)).endswith("ckpt-15")
    saved = load_vae(str(tmp_path)).get_weights()
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, eval_shards=0, checkpoint_every=10, log_every=5, steps=15))
    assert result["step"] == 15 and "already at step 15" in capsys.readouterr().err  # nothing left to redo
    for a, b in zip(saved, load_vae(str(tmp_path)).get_weights()):
        np.testing.assert_array_equal(a, b)
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, eval_shards=0, checkpoint_every=10, log_every=5))
    assert "resuming from step 15" in capsys.readouterr().err and result["step"] == 20


def test_foreign_or_incompatible_workdir_is_refused(tiny_rollouts, trained, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "mdnrnn", "arch": {}}))
    with pytest.raises(UsageError, match="'mdnrnn' run, not 'vae'"):
        train_vae.run(_cfg(tiny_rollouts, tmp_path))
    with pytest.raises(UsageError, match="another architecture.*z_size"):
        train_vae.run(_cfg(tiny_rollouts, trained, z_size=16, steps=40))


@pytest.mark.slow
def test_missing_data_is_a_one_line_error(tmp_path):
    with pytest.raises(tfrecords.ShardError, match="no shards match"):
        train_vae.run(_cfg(str(tmp_path / "nothing"), tmp_path / "w"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "wm.train_vae", f"--data={tmp_path}/nothing", f"--workdir={tmp_path}/w", "--steps=1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train_vae:")]
    assert lines and "error: no shards match" in lines[-1]


def test_encode_round_trip(tiny_rollouts, trained, tmp_path):
    out = str(tmp_path / "series")
    manifest = encode.run(
        encode.EncodeConfig(vae=trained, data=tiny_rollouts, out_dir=out, batch_size=16, progress=False)
    )
    source = tfrecords.dataset_manifest(tiny_rollouts)
    assert (
        manifest["kind"] == "latents"
        and manifest["episodes"] == source["episodes"]
        and manifest["frames"] == source["frames"]
    )
    assert [s["episodes"] for s in manifest["shards"]] == [s["episodes"] for s in source["shards"]]
    assert (
        encode.run(encode.EncodeConfig(vae=trained, data=tiny_rollouts, out_dir=out, progress=False)) == manifest
    )  # complete: no-op

    enc = keras.models.load_model(os.path.join(trained, "export", "encoder.keras"))
    episodes = {int(ep["seed"]): ep for ep in tfrecords.episodes_dataset(tiny_rollouts)}
    seen = set()
    for window in tfrecords.sequence_dataset(out, 1, 40, shuffle=False, repeat=False):
        ep = episodes[int(window["seed"][0])]
        n = int(window["mask"][0].numpy().sum())
        mu, logvar = enc(ep["frames"][:n].numpy())
        np.testing.assert_allclose(window["mu"][0, :n], mu, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(window["logvar"][0, :n], logvar, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(window["actions"][0, :n], ep["actions"][:n])
        seen.add(int(window["seed"][0]))
    assert seen == set(episodes)


def test_encode_needs_a_vae_workdir(tiny_rollouts, tmp_path):
    with pytest.raises(UsageError, match="not a train_vae workdir"):
        encode.run(encode.EncodeConfig(vae=str(tmp_path), data=tiny_rollouts, out_dir=str(tmp_path / "o")))


def test_bfloat16_inference_model_encodes_exactly_as_mixed_bfloat16(trained):
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    pure, mixed = load_vae(trained, "bfloat16"), load_vae(trained, "mixed_bfloat16")
    full = load_vae(trained)
    assert {w.dtype for w in pure.encoder.get_layer("conv1").weights} == {"bfloat16"}
    for a, b in zip(pure.encode(frames), mixed.encode(frames)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the same rounding, done once at load
    np.testing.assert_allclose(pure.encode(frames)[0].numpy(), full.encode(frames)[0].numpy(), atol=0.05)


def test_tensorflow_reader_trains_too(tiny_rollouts, tmp_path):
    result = train_vae.run(_cfg(tiny_rollouts, tmp_path, steps=5, checkpoint_every=5, eval_shards=0, reader="tf"))
    assert result["step"] == 5 and json.load(open(tmp_path / "config.json"))["flags"]["reader"] == "tf"
    with pytest.raises(UsageError, match="--reader must be one of"):
        train_vae.run(_cfg(tiny_rollouts, tmp_path / "w", reader="fastest"))


@pytest.mark.slow
def test_damaged_shard_is_a_one_line_error(tiny_rollouts, tmp_path):
    data = tmp_path / "damaged"
    shutil.copytree(tiny_rollouts, data)
    shard = sorted(data.glob("*.tfrecord.gz"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wm.train_vae",
            f"--data={data}",
            f"--workdir={tmp_path}/w",
            "--steps=30",
            "--batch_size=8",
            "--eval_shards=0",
            "--noprogress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train_vae:")]
    assert lines and f"error: corrupted or truncated shard {shard}" in lines[-1]


def test_profile_steps_leave_a_trace_that_tensorboard_s_profile_plugin_finds(tiny_rollouts, tmp_path):
    import argparse
    import importlib.metadata

    from tensorboard.plugins import base_plugin
    from xprof.profile_plugin import ProfilePlugin  # the `profile` extra (the `test` extra has it too)

    # what makes TensorBoard show a Profile tab: the plugin registered under its entry point
    assert "profile" in {e.name for e in importlib.metadata.entry_points(group="tensorboard_plugins")}
    train_vae.run(_cfg(tiny_rollouts, tmp_path / "v", steps=6, steps_per_loop=1, profile_steps="3,4"))
    logdir = str(tmp_path / "v")  # as `tensorboard --logdir WORKDIR` opens it
    context = base_plugin.TBContext(logdir=logdir, flags=argparse.Namespace(master_tpu_unsecure_channel=""))
    plugin = ProfilePlugin(context)
    runs = list(plugin.generate_runs())
    assert plugin.is_active() and len(runs) == 1 and runs[0].startswith("tensorboard/train/")
    assert "trace_viewer" in str(plugin.run_tools_imp(runs[0]))
