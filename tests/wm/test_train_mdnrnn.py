"""train_mdnrnn: a tiny run learns, MirroredStrategy matches, resume, errors, device choices."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import TRAIN_LOOP, make_config

from tfrecords import schema, writer
from tfrecords.runtime.cli import UsageError
from wm.core import distribute
from wm.core import workdir as wdir
from wm.models import mdnrnn
from wm.models.loading import load_mdnrnn as load
from wm.train_mdnrnn import TrainMdnrnnConfig, run
from wm.training.mdnrnn_task import make_loss_fn, resolve_device_choices, split_series, windows_in


def _series(out_dir, episodes=6, steps=30, per_shard=2, seed=0):
    """A learnable latent series: z_{t+1} = 0.9 z_t + 0.5 a_t[0] + small noise; episode 0 ends early."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(episodes):
        t = steps - 7 if i == 0 else steps
        a = rng.uniform(-1, 1, size=(t, 3)).astype(np.float32)
        z = np.zeros((t, 32), np.float32)
        z[0] = rng.normal(size=32)
        for k in range(1, t):
            z[k] = 0.9 * z[k - 1] + 0.5 * a[k - 1, 0] + 0.05 * rng.normal(size=32)
        term = np.zeros(t, np.int64)
        term[-1] = int(i == 0)
        eps.append(
            schema.Episode(
                actions=a,
                rewards=rng.normal(size=t).astype(np.float32),
                terminals=term,
                seed=i,
                mu=z,
                logvar=np.full((t, 32), -6.0, np.float32),
            )
        )
    plans = writer.plan_shards(episodes, per_shard, "series")
    run_ = writer.ShardedRun(out_dir, schema.KIND_LATENTS, {"synthetic": seed}, plans)
    run_.prepare()
    for p in plans:
        writer.write_shard(out_dir, p, (eps[i] for i in p.items))
    run_.finalize({"latent_dim": 32})
    return out_dir


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return _series(str(tmp_path_factory.mktemp("series") / "series"))


# A small M (32 units) trained 30 steps at batch 4 on 12-step windows.
TINY_M = dict(seq_len=12, batch_size=4, steps=30, learning_rate=3e-3, hidden=32, **TRAIN_LOOP)


def _cfg(series, workdir, **kw):
    return make_config(TrainMdnrnnConfig, TINY_M, series=series, workdir=str(workdir), **kw)


def test_tiny_run_learns_and_writes_metrics(series, tmp_path):
    res = run(_cfg(series, tmp_path / "m", steps=60, hidden=64))
    logs = [m for m in wdir.read_metrics(str(tmp_path / "m")) if m["split"] == "train"]
    assert [m["step"] for m in logs] == list(range(5, 65, 5))
    first, last = np.mean([m["loss"] for m in logs[:2]]), np.mean([m["loss"] for m in logs[-2:]])
    assert last < first - 0.3, (first, last)
    assert "z_nll" in logs[0] and np.isfinite(res["eval"]["loss"])
    evals = [m for m in wdir.read_metrics(str(tmp_path / "m")) if m["split"] == "eval"]
    assert evals and evals[0]["step"] == 3  # one epoch: 4 training episodes x 3 windows / batch 4
    model = load(str(tmp_path / "m"))
    assert model.hidden == 64 and os.path.isdir(tmp_path / "m" / "tensorboard" / "train")


def test_mirrored_first_step_gradients_match_single_device(series):
    batch = next(iter(__import__("tfrecords").sequence_dataset(series, 4, 13, shuffle=False, repeat=False)))
    cfg = _cfg(series, "unused")
    loss_fn = make_loss_fn(cfg.batch_size, cfg.reward_weight, cfg.terminal_weight)

    def grads(strategy):
        with strategy.scope():
            tf.random.set_seed(1)
            model = mdnrnn.MDNRNN(hidden=16)
            model.set_weights([np.full(w.shape, 0.01, np.float32) * (i + 1) for i, w in enumerate(model.get_weights())])

        def replica(b):
            with tf.GradientTape() as tape:
                # the same z draw everywhere: fixed noise via the stored mean (logvar -6 is tiny)
                loss = tf.reduce_sum(loss_fn(model, dict(b, logvar=b["logvar"] * 0 - 60.0), True)["loss"]) / 4
            return tape.gradient(loss, model.trainable_variables)

        if isinstance(strategy, tf.distribute.MirroredStrategy):
            ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).unbatch().batch(4))
            per = strategy.run(replica, args=(next(iter(ds)),))
            return [strategy.reduce("SUM", g, axis=None).numpy() for g in per]
        return [g.numpy() for g in replica(batch)]

    single = grads(tf.distribute.get_strategy())
    mirrored = grads(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mirrored_run_trains(series, tmp_path):
    res = run(_cfg(series, tmp_path / "mir", strategy="mirrored", steps=10))
    assert res["step"] == 10 and np.isfinite(res["train"]["loss"])
    assert wdir.read_config(str(tmp_path / "mir"))["setup"]["replicas"] == 2


def test_resume_continues_to_the_new_total(series, tmp_path):
    wd = tmp_path / "r"
    run(_cfg(series, wd, steps=10))
    res = run(_cfg(series, wd, steps=20))
    assert res["step"] == 20
    steps = [m["step"] for m in wdir.read_metrics(str(wd)) if m["split"] == "train"]
    assert steps == [5, 10, 15, 20]
    assert sorted(os.listdir(wd / "checkpoints")).count("checkpoint") == 1
    assert tf.train.latest_checkpoint(str(wd / "checkpoints")).endswith("-20")


def test_wrong_data_bad_seq_len_and_another_architecture_are_refused(series, tmp_path, tiny_rollouts):
    with pytest.raises(UsageError, match="not latent series"):
        run(_cfg(tiny_rollouts, tmp_path / "x"))
    with pytest.raises(Exception, match="no shards match"):
        run(_cfg(str(tmp_path / "missing"), tmp_path / "x"))
    with pytest.raises(UsageError, match="--seq_len must be positive"):
        run(_cfg(series, tmp_path / "x", seq_len=0))
    run(_cfg(series, tmp_path / "h", steps=5))
    with pytest.raises(UsageError, match="another architecture"):
        run(_cfg(series, tmp_path / "h", steps=10, hidden=48))


def test_device_choices_never_combine_cudnn_and_xla():
    cpu = distribute.Setup(tf.distribute.get_strategy(), "CPU", "float32", False)
    gpu = dataclasses.replace(cpu, device_type="GPU", dtype_policy="mixed_float16", jit_compile=True)
    assert resolve_device_choices(gpu, "auto") == (dataclasses.replace(gpu, jit_compile=False), "auto")
    assert resolve_device_choices(gpu, "on") == (gpu, False)
    tpu = dataclasses.replace(cpu, device_type="TPU", jit_compile=True)
    assert resolve_device_choices(tpu, "auto") == (tpu, "auto")
    assert resolve_device_choices(cpu, "auto") == (cpu, "auto")


def test_eval_split_smaller_than_a_batch_still_evaluates(series, tmp_path):
    # 1 held-out shard of 2 episodes x 3 windows = 6 windows < batch 8
    res = run(_cfg(series, tmp_path / "small_eval", batch_size=8, steps=5))
    assert np.isfinite(res["eval"]["loss"])


def test_several_series_directories_are_sized_from_their_own_manifests(series, tmp_path):
    """The iterations train M on `series,iter_1/series,...`: directories whose shards share names.
    Every shard is sized from its own directory's manifest (it used to be the first directory's,
    by name), so the epoch covers all of them and the held-out shard is counted."""
    more = _series(str(tmp_path / "more"), episodes=4, steps=60, seed=1)  # shard-0000x names again
    cfg = _cfg(f"{series},{more}", tmp_path / "m", epochs=1, steps=0, batch_size=2)
    train, held, _, infos = split_series(cfg.series, cfg.eval_shards)
    assert len(train) + len(held) == 5 and set(infos) == set(train) | set(held)
    window = cfg.seq_len + 1
    # series: 6 episodes (23 or 30 steps) -> 3 windows each; more: 4 episodes (53 or 60 steps) -> 5 each
    assert windows_in(train + held, infos, window) == 6 * 3 + 4 * 5
    assert held == [max(train + held)]
    assert windows_in(held, infos, window) == 2 * (5 if "/more/" in held[0] else 3)
    res = run(cfg)
    assert res["step"] == windows_in(train, infos, window) // 2
    assert np.isfinite(res["eval"]["loss"])


def test_series_directories_that_disagree_are_one_line(series, tmp_path, tiny_rollouts):
    from tfrecords import ShardError

    with pytest.raises(ShardError, match="hold different data"):
        run(_cfg(f"{series},{tiny_rollouts}", tmp_path / "m"))


def test_deterministic_resume_ends_with_the_weights_of_an_uninterrupted_run(series, tmp_path):
    import tensorflow as tf

    from wm.core import workdir

    def weights(wd):
        reader = tf.train.load_checkpoint(workdir.latest_checkpoint(wd))
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in k}

    kw = dict(deterministic=True, seed=3, steps_per_loop=2, log_every=2, checkpoint_every=2, eval_shards=0)
    run(_cfg(series, tmp_path / "straight", **{**kw, "steps": 8}))
    run(_cfg(series, tmp_path / "resumed", **{**kw, "steps": 4}))
    run(_cfg(series, tmp_path / "resumed", **{**kw, "steps": 8}))
    loose = dict(kw, deterministic=False)
    run(_cfg(series, tmp_path / "loose", **{**loose, "steps": 4}))
    run(_cfg(series, tmp_path / "loose", **{**loose, "steps": 8}))
    a, b, c = weights(tmp_path / "straight"), weights(tmp_path / "resumed"), weights(tmp_path / "loose")
    assert a.keys() == b.keys() and len(a) > 5
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # without --deterministic the resumed run sees other batches: the check above can fail
    assert any(not np.array_equal(a[k], c[k]) for k in a if "model" in k)


def test_deterministic_needs_a_seed_and_no_dropout(series, tmp_path):
    from tfrecords.runtime.errors import UsageError

    with pytest.raises(UsageError, match="--deterministic needs --seed"):
        run(_cfg(series, tmp_path / "a", deterministic=True, seed=None))
    with pytest.raises(UsageError, match="dropout"):
        run(_cfg(series, tmp_path / "b", deterministic=True, seed=0, dropout=0.1))
