"""tfrecords.export_rlds: rollouts as an RLDS dataset that TFDS reads without this package.

Exports are read back in a fresh Python process that imports only TensorFlow, TensorFlow Datasets
and NumPy, and compared with the shards.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import interrupt_on_call

from tfrecords import export_rlds, schema, writer
from tfrecords.export_rlds import ExportRldsConfig, episode_steps, run
from tfrecords.runtime.errors import RunMismatchError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Reads an export with nothing but TensorFlow, TFDS and NumPy; dumps what it saw to DUMP.npz / DUMP.json.
_READ = r"""
import json, sys
import numpy as np
import tensorflow_datasets as tfds

out, dump = sys.argv[1], sys.argv[2]
builder = tfds.builder_from_directory(out)
info = builder.info
arrays, episodes = {}, []
for i, ep in enumerate(builder.as_dataset(split="train")):
    steps = list(ep["steps"].as_numpy_iterator())
    for k in steps[0]:
        arrays[f"{i}/{k}"] = np.stack([s[k] for s in steps])
    meta = {k: v.numpy() for k, v in ep.items() if k != "steps"}
    episodes.append({k: v.decode() if isinstance(v, bytes) else v.item() for k, v in meta.items()})
np.savez(dump + ".npz", **arrays)
with open(dump + ".json", "w") as f:
    json.dump({
        "episodes": episodes,
        "splits": {k: v.num_examples for k, v in info.splits.items()},
        "citation": info.citation,
        "description": info.description,
        "homepage": info.homepage,
        "metadata": dict(info.metadata or {}),
        "step_features": sorted(info.features["steps"].feature.keys()),
        "observation_shape": list(info.features["steps"].feature["observation"].shape),
        "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tfrecords", "wm", "data_gen")),
    }, f)
"""


def _read_back(out: str, tmp_path) -> tuple[list[dict], dict]:
    """The export at ``out`` as a fresh process without this package reads it: (per-episode step
    arrays, everything else)."""
    script, dump = tmp_path / "read_rlds.py", str(tmp_path / "dump")
    script.write_text(_READ)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, str(script), out, dump],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(dump + ".json") as f:
        info = json.load(f)
    arrays = np.load(dump + ".npz")
    steps = [{} for _ in info["episodes"]]
    for key in arrays.files:
        i, name = key.split("/")
        steps[int(i)][name] = arrays[key]
    assert info["project_modules"] == [], "the reader must not need this package"
    return steps, info


def _stored(directory: str) -> list[schema.Episode]:
    """Every episode of a dataset, in episode order, decoded straight from its shards."""
    manifest = json.load(open(os.path.join(directory, schema.MANIFEST_NAME)))
    shape = tuple(manifest.get("frame_shape") or schema.FRAME_SHAPE)
    out = []
    for s in sorted(manifest["shards"], key=lambda s: s["first_item"]):
        path = os.path.join(directory, s["name"])
        for r in tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION):
            out.append(schema.decode_episode(r.numpy(), shape))
    return out


def _write_rollouts(out: str, episodes: list[tuple[int, bool]], shape=schema.FRAME_SHAPE, seed: int = 0) -> list:
    """A rollout dataset in the public format, episodes of the given (length, terminated), two per shard."""
    rng = np.random.default_rng(seed)
    eps = []
    for i, (t, terminated) in enumerate(episodes):
        terminals = np.zeros(t, np.int64)
        terminals[-1] = int(terminated)
        eps.append(
            schema.Episode(
                actions=rng.uniform(-1, 1, (t, 3)).astype(np.float32),
                rewards=rng.normal(size=t).astype(np.float32),
                terminals=terminals,
                seed=100 * seed + i,
                frames=rng.integers(0, 256, (t, *shape), dtype=np.uint8),
            )
        )
    plans = writer.plan_shards(len(eps), 2, "rollouts")
    spec = {"episodes": len(eps), "policy": "random", "seed": seed, "lengths": [t for t, _ in episodes]}
    run_ = writer.ShardedRun(out, schema.KIND_ROLLOUTS, spec, plans)
    run_.prepare()
    for p in plans:
        writer.write_shard(out, p, [eps[i] for i in p.items])
    run_.finalize({"frame_shape": list(shape), "env_id": "CarRacing-v3"})
    return eps


def _write_series(out: str, rollouts_dir: str, zdim: int = 4, bad_seed_at: int | None = None) -> list:
    """A latent series of ``rollouts_dir`` laid out as wm.encode writes one (a shard per rollout shard,
    the manifest's spec naming its source); ``bad_seed_at`` gives that episode another seed."""
    manifest = json.load(open(os.path.join(rollouts_dir, schema.MANIFEST_NAME)))
    rng = np.random.default_rng(1)
    eps = []
    for i, ep in enumerate(_stored(rollouts_dir)):
        eps.append(
            schema.Episode(
                actions=ep.actions,
                rewards=ep.rewards,
                terminals=ep.terminals,
                seed=ep.seed + (1 if i == bad_seed_at else 0),
                mu=rng.normal(size=(len(ep), zdim)).astype(np.float32),
                logvar=rng.normal(size=(len(ep), zdim)).astype(np.float32),
            )
        )
    shards = sorted(manifest["shards"], key=lambda s: s["first_item"])
    plans = [
        writer.ShardPlan(i, len(shards), tuple(range(s["first_item"], s["first_item"] + s["episodes"])), "latents")
        for i, s in enumerate(shards)
    ]
    spec = {"source": {k: manifest[k] for k in ("spec", "episodes", "frames")}, "vae": {"checkpoint": "ckpt-2"}}
    run_ = writer.ShardedRun(out, schema.KIND_LATENTS, spec, plans)
    run_.prepare()
    for p in plans:
        writer.write_shard(out, p, [eps[i] for i in p.items])
    run_.finalize({"latent_dim": zdim, "vae_step": 2})
    return eps


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    """Rollouts with terminated and truncated episodes (96 x 96 frames) and their RLDS export."""
    root = tmp_path_factory.mktemp("rlds_mixed")
    data, out = str(root / "rollouts"), str(root / "rlds")
    eps = _write_rollouts(data, [(5, True), (3, False), (1, False), (1, True)], shape=schema.FULL_FRAME_SHAPE)
    record = run(ExportRldsConfig(data=data, out_dir=out, progress=False))
    return {"data": data, "out": out, "episodes": eps, "record": record}


# ---------------------------------------------------------------- the step mapping, in memory


def test_a_truncated_episode_keeps_its_steps_and_ends_not_terminal():
    (ep,) = [_ep(4, terminated=False)]
    s = episode_steps(ep)
    assert len(s["is_first"]) == 4
    np.testing.assert_array_equal(s["observation"], ep.frames)
    np.testing.assert_array_equal(s["action"], ep.actions)
    np.testing.assert_array_equal(s["reward"], ep.rewards)
    assert s["is_first"].tolist() == [True, False, False, False]
    assert s["is_last"].tolist() == [False, False, False, True]
    assert not s["is_terminal"].any()
    assert s["discount"].tolist() == [1, 1, 1, 1]


def test_a_terminated_episode_gets_a_terminal_last_step():
    ep = _ep(3, terminated=True)
    s = episode_steps(ep)
    assert len(s["is_first"]) == 4  # 3 transitions, then the terminal state
    np.testing.assert_array_equal(s["observation"][:3], ep.frames)
    assert not s["observation"][3].any()
    np.testing.assert_array_equal(s["action"][:3], ep.actions)
    np.testing.assert_array_equal(s["reward"][:3], ep.rewards)
    assert s["reward"][3] == 0 and not s["action"][3].any()
    assert s["discount"].tolist() == [1, 1, 0, 0]
    assert s["is_last"].tolist() == [False, False, False, True]
    assert s["is_terminal"].tolist() == [False, False, False, True]
    assert np.isclose(s["reward"].sum(), ep.total_reward)


def test_a_terminal_before_the_last_step_is_refused():
    ep = _ep(4, terminated=False)
    ep.terminals[1] = 1
    with pytest.raises(UsageError, match="terminal at step 1 of 4"):
        episode_steps(ep)


def test_the_policy_is_the_manifests():
    assert export_rlds.policy_name({"spec": {"policy": "brownian"}}) == "brownian"
    agent = {"kind": "agent", "algorithm": "cma-es", "param_noise": 0.05}  # wm.collect records a dict
    assert json.loads(export_rlds.policy_name({"policy": agent, "spec": {"policy": agent}})) == agent


def _ep(t: int, terminated: bool) -> schema.Episode:
    rng = np.random.default_rng(t)
    terminals = np.zeros(t, np.int64)
    terminals[-1] = int(terminated)
    return schema.Episode(
        actions=rng.normal(size=(t, 3)).astype(np.float32),
        rewards=rng.normal(size=t).astype(np.float32),
        terminals=terminals,
        seed=t,
        frames=rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8),
    )


# ---------------------------------------------------------------- read back through TFDS alone


def test_export_of_generated_rollouts_equals_the_shards(tiny_rollouts, tmp_path):
    out = str(tmp_path / "rlds")
    record = run(ExportRldsConfig(data=tiny_rollouts, out_dir=out, progress=False))
    steps, info = _read_back(out, tmp_path)
    stored = _stored(tiny_rollouts)
    assert len(steps) == len(stored) == 4 and record["episodes"] == 4
    manifest = json.load(open(os.path.join(tiny_rollouts, schema.MANIFEST_NAME)))
    for i, (s, ep, meta) in enumerate(zip(steps, stored, info["episodes"])):
        assert not ep.terminals.any(), "tiny rollouts end on their time limit"
        assert len(s["observation"]) == len(ep)  # truncated: one step per stored transition
        np.testing.assert_array_equal(s["observation"], ep.frames)
        np.testing.assert_array_equal(s["action"], ep.actions)
        np.testing.assert_array_equal(s["reward"], ep.rewards)
        assert s["is_first"].tolist() == [True] + [False] * (len(ep) - 1)
        assert s["is_last"].tolist() == [False] * (len(ep) - 1) + [True]
        assert not s["is_terminal"].any()
        assert meta["episode_id"] == i and meta["seed"] == ep.seed and meta["policy"] == "brownian"
        assert meta["terminated"] is False
        assert np.isclose(meta["episode_return"], ep.total_reward, atol=1e-4)
    assert info["splits"] == {"train": 4}
    assert "arXiv:1803.10122" in info["citation"] and "Schmidhuber" in info["citation"]
    assert info["citation"].startswith("@article{")
    assert "RLDS" in info["description"] and "is_terminal" in info["description"]
    assert info["metadata"]["rollouts"]["policy"] == "brownian"
    assert info["metadata"]["rollouts"]["spec"] == manifest["spec"]
    assert info["observation_shape"] == [64, 64, 3]
    want = ["action", "discount", "is_first", "is_last", "is_terminal", "observation", "reward"]
    assert info["step_features"] == want


def test_terminated_and_truncated_episodes_as_an_rlds_consumer_sees_them(mixed, tmp_path):
    steps, info = _read_back(mixed["out"], tmp_path)
    assert info["splits"] == {"train": 4}
    assert info["observation_shape"] == list(schema.FULL_FRAME_SHAPE)  # the manifest's frame shape
    assert [len(s["is_first"]) for s in steps] == [6, 3, 1, 2]
    for s, ep, meta in zip(steps, mixed["episodes"], info["episodes"]):
        t, n, terminated = len(ep), len(s["is_first"]), bool(ep.terminals[-1])
        assert meta["terminated"] is terminated
        assert s["is_first"].tolist() == [True] + [False] * (n - 1)
        assert s["is_last"].tolist() == [False] * (n - 1) + [True]
        assert s["is_terminal"].tolist() == [False] * (n - 1) + [terminated]
        np.testing.assert_array_equal(s["observation"][:t], ep.frames)
        np.testing.assert_array_equal(s["action"][:t], ep.actions)
        np.testing.assert_array_equal(s["reward"][:t], ep.rewards)
        assert np.isclose(s["reward"].sum(), ep.total_reward, atol=1e-5)
        if terminated:  # the terminal state: not stored, all zeros; the transition into it has discount 0
            assert n == t + 1 and not s["observation"][t].any() and not s["action"][t].any()
            assert s["discount"].tolist() == [1.0] * (t - 1) + [0.0, 0.0]
        else:  # truncated: the last step carries the last stored frame, bootstrapping from it is right
            assert n == t and s["discount"].tolist() == [1.0] * t
    assert mixed["record"]["terminated"] == 2 and mixed["record"]["steps"] == 12


def test_series_adds_latents_to_every_step(tmp_path):
    data, series, out = str(tmp_path / "rollouts"), str(tmp_path / "series"), str(tmp_path / "rlds")
    eps = _write_rollouts(data, [(4, False), (2, True), (3, False)])
    latents = _write_series(series, data, zdim=4)
    run(ExportRldsConfig(data=data, out_dir=out, series=series, progress=False))
    steps, info = _read_back(out, tmp_path)
    assert "latent_mu" in info["step_features"] and "latent_logvar" in info["step_features"]
    assert info["metadata"]["series"] == {"latent_dim": 4, "vae_step": 2}
    for s, ep, z in zip(steps, eps, latents):
        t = len(ep)
        np.testing.assert_array_equal(s["latent_mu"][:t], z.mu)
        np.testing.assert_array_equal(s["latent_logvar"][:t], z.logvar)
        np.testing.assert_array_equal(s["observation"][:t], ep.frames)
        assert s["latent_mu"].shape == (len(s["is_first"]), 4)
        if ep.terminals[-1]:
            assert not s["latent_mu"][t].any()


@pytest.mark.slow
def test_series_written_by_wm_encode(tiny_world, tmp_path):
    """The real latent series of the session's tiny V: every step's latent equals the series'."""
    out = str(tmp_path / "rlds")
    record = run(
        ExportRldsConfig(data=tiny_world["rollouts"], out_dir=out, series=tiny_world["series"], progress=False)
    )
    assert record["episodes"] == 4
    steps, info = _read_back(out, tmp_path)
    latents = {}
    for f in sorted(glob.glob(os.path.join(tiny_world["series"], "*" + schema.SHARD_SUFFIX))):
        for r in tf.data.TFRecordDataset(f, compression_type=schema.COMPRESSION):
            ep = schema.decode_episode(r.numpy())
            latents[ep.seed] = ep
    for s, meta in zip(steps, info["episodes"]):
        z = latents[meta["seed"]]
        np.testing.assert_array_equal(s["latent_mu"], z.mu)
        np.testing.assert_array_equal(s["latent_logvar"], z.logvar)
        assert s["latent_mu"].shape[1] == schema.LATENT_DIM


# ---------------------------------------------------------------- output safety


def _listing(path: str) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(d, f), path): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, files in os.walk(path)
        for f in files
    }


def test_rerun_over_a_finished_export_is_a_no_op(mixed, capsys):
    before = _listing(mixed["out"])
    record = run(ExportRldsConfig(data=mixed["data"], out_dir=mixed["out"], progress=False))
    assert "is already complete" in capsys.readouterr().err
    assert record == mixed["record"]
    assert _listing(mixed["out"]) == before


def test_out_holding_something_else_is_refused_and_untouched(mixed, tmp_path):
    other = str(tmp_path / "other")
    _write_rollouts(other, [(2, False)], seed=7)
    before = _listing(mixed["out"])
    with pytest.raises(RunMismatchError, match="already holds an RLDS export of other data"):
        run(ExportRldsConfig(data=other, out_dir=mixed["out"], progress=False))
    assert _listing(mixed["out"]) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunMismatchError, match="not a finished RLDS export"):
        run(ExportRldsConfig(data=other, out_dir=str(foreign), progress=False))
    assert os.listdir(foreign) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty directory is taken
    assert run(ExportRldsConfig(data=other, out_dir=str(empty), progress=False))["episodes"] == 1


def test_a_damaged_export_is_not_taken_for_a_finished_one(mixed, tmp_path):
    import shutil

    out = str(tmp_path / "damaged")
    shutil.copytree(mixed["out"], out)
    shard = glob.glob(os.path.join(out, "*.tfrecord-*"))[0]
    os.remove(shard)
    with pytest.raises(UsageError, match="damaged export"):
        run(ExportRldsConfig(data=mixed["data"], out_dir=out, progress=False))


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt], ids=["crash", "ctrl-c"])
def test_a_failed_run_leaves_no_output_and_a_rerun_completes(tmp_path, monkeypatch, failure):
    data, out = str(tmp_path / "rollouts"), str(tmp_path / "rlds")
    _write_rollouts(data, [(3, False), (2, True), (2, False)])
    if failure is KeyboardInterrupt:
        interrupt_on_call(monkeypatch, export_rlds, "episode_steps", 3)
    else:
        real = export_rlds.episode_steps
        calls = []

        def dying(ep):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated crash")
            return real(ep)

        monkeypatch.setattr(export_rlds, "episode_steps", dying)
    with pytest.raises(failure):
        run(ExportRldsConfig(data=data, out_dir=out, progress=False))
    assert not os.path.exists(out) and not os.path.exists(out + export_rlds.TEMP_SUFFIX)
    monkeypatch.undo()
    assert run(ExportRldsConfig(data=data, out_dir=out, progress=False))["episodes"] == 3


def test_an_error_found_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    data, series, out = str(tmp_path / "rollouts"), str(tmp_path / "series"), str(tmp_path / "rlds")
    _write_rollouts(data, [(3, False), (2, True), (2, False)])
    _write_series(series, data, bad_seed_at=2)  # found only when episode 2 is read
    with pytest.raises(UsageError, match="episode 2 of .* is not episode 2 of"):
        run(ExportRldsConfig(data=data, out_dir=out, series=series, progress=False))
    assert not os.path.exists(out) and not os.path.exists(out + export_rlds.TEMP_SUFFIX)


_KILLED = r"""
import os, signal, sys
from tfrecords import export_rlds

real, calls = export_rlds.episode_steps, []

def killed(ep):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 would, in the middle of TFDS's writing
    return real(ep)

export_rlds.episode_steps = killed
export_rlds.run(export_rlds.ExportRldsConfig(data=sys.argv[1], out_dir=sys.argv[2], progress=False))
"""


@pytest.mark.slow
def test_a_killed_run_leaves_no_finished_looking_output(tmp_path, capsys):
    data, out = str(tmp_path / "rollouts"), str(tmp_path / "rlds")
    _write_rollouts(data, [(3, False), (2, True), (2, False), (4, False)])
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), data, out], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not os.path.exists(out), "a killed run must not leave OUT"
    assert os.path.isdir(out + export_rlds.TEMP_SUFFIX)  # its unfinished work, in the temporary sibling
    record = run(ExportRldsConfig(data=data, out_dir=out, progress=False))
    assert "removing the unfinished export" in capsys.readouterr().err
    assert record["episodes"] == 4 and not os.path.exists(out + export_rlds.TEMP_SUFFIX)


# ---------------------------------------------------------------- bad input from the command line


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, mixed) -> dict:
    root = tmp_path_factory.mktemp("rlds_bad")
    unfinished = root / "unfinished"
    (unfinished / ".incomplete").mkdir(parents=True)
    empty = root / "empty"
    empty.mkdir()
    series = str(root / "series")
    other = str(root / "other")
    _write_rollouts(other, [(2, False), (2, False)], seed=3)
    _write_series(series, other)  # the series of other rollouts
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    return {
        "root": str(root),
        "data": mixed["data"],
        "unfinished": str(unfinished),
        "empty": str(empty),
        "series": series,
        "foreign": str(foreign),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["--data={root}/missing", "--out_dir={root}/o1"], "--data: {root}/missing does not exist"),
        (["--data={empty}", "--out_dir={root}/o2"], "has no manifest.json"),
        (["--data={unfinished}", "--out_dir={root}/o3"], "is unfinished"),
        (["--data={series}", "--out_dir={root}/o4"], "holds latents, not rollouts"),
        (["--data={data}", "--series={series}", "--out_dir={root}/o5"], "was encoded from other rollouts"),
        (["--data={data}", "--out_dir={foreign}"], "is not a finished RLDS export"),
        (["--out_dir={root}/o6"], "--data is required"),
    ],
    ids=["missing", "no-manifest", "unfinished", "not-rollouts", "series-mismatch", "foreign-out", "no-data"],
)
def test_bad_input_is_one_line_and_exit_2(bad_inputs, args, message):
    argv = [a.format(**bad_inputs) for a in args]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "tfrecords.export_rlds", "--noprogress", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("export_rlds")]  # not TF's start-up lines
    assert len(ours) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ours[0].startswith("export_rlds: error: ") and message.format(**bad_inputs) in ours[0]
    assert proc.stderr.strip().splitlines()[-1] == ours[0]
    assert not any(os.path.exists(os.path.join(bad_inputs["root"], f"o{i}")) for i in range(1, 7))
