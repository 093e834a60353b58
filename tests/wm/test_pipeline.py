"""wm.pipeline: the smoke preset end to end, a rerun skips every stage, a killed stage resumes; the presets."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import SMOKE_OUTPUTS, interrupt_on_call

from tfrecords.runtime.cli import UsageError
from wm import pipeline, presets
from wm.core.layout import Layout


def _status(workdir):
    with open(Layout(workdir).pipeline_json) as f:
        return {s["name"]: s for s in json.load(f)["stages"]}


def _json(stage_cfg) -> dict:
    """A stage's config as pipeline.json records it."""
    return json.loads(json.dumps(dataclasses.asdict(stage_cfg), default=str))


@pytest.mark.slow
def test_smoke_end_to_end_then_every_stage_is_skipped(tmp_path):
    wd = str(tmp_path / "run")
    cfg = pipeline.PipelineConfig(workdir=wd, preset="smoke", progress=False)
    pipeline.run(cfg)
    st = _status(wd)
    assert [st[n]["status"] for n in pipeline.STAGES] == ["done"] * len(pipeline.STAGES)
    for name in SMOKE_OUTPUTS:
        assert os.path.exists(os.path.join(wd, name)), name
    assert st["train_vae"]["command"].startswith("python -m wm.train_vae --data=")
    assert all(st[n]["wall_time"] > 0 for n in pipeline.STAGES)
    assert all(st[n]["config"] == _json(c) for n, c in pipeline.build_configs(cfg).items())
    before = os.path.getmtime(Layout(wd).controller_params)
    pipeline.run(cfg)
    st = _status(wd)
    assert [st[n]["status"] for n in pipeline.STAGES] == ["skipped"] * len(pipeline.STAGES)
    assert os.path.getmtime(Layout(wd).controller_params) == before
    # more generations: only the controller and what follows it run again
    pipeline.run(
        pipeline.PipelineConfig(
            workdir=wd, preset="smoke", progress=False, overrides=["train_controller.generations=3"]
        )
    )
    st = _status(wd)
    assert [st[n]["status"] for n in pipeline.STAGES[:5]] == ["skipped"] * 5
    assert st["train_controller"]["status"] == "done" and "--generations=3" in st["train_controller"]["command"]
    assert st["evaluate"]["status"] == "done" and st["report"]["status"] == "done"  # downstream of a rerun stage


@pytest.mark.slow
def test_killed_stage_resumes(tmp_path):
    wd = str(tmp_path / "killed")
    args = [
        sys.executable,
        "-m",
        "wm.pipeline",
        f"--workdir={wd}",
        "--preset=smoke",
        "--noprogress",
        "--stages=generate,train_vae",
        "--set=train_vae.steps=400",
        "--set=train_vae.checkpoint_every=4",
        "--set=train_vae.steps_per_loop=2",
    ]
    p = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    )
    ckpt = os.path.join(Layout(wd).vae, "checkpoints", "checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(ckpt) and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert os.path.exists(ckpt), "the kill should land during train_vae"
    assert _status(wd)["train_vae"]["status"] == "running"
    # the killed run's locks are left behind (the pipeline's and its stage's), and do not block the rerun
    assert os.path.exists(os.path.join(wd, ".lock")) and os.path.exists(os.path.join(Layout(wd).vae, ".lock"))
    r = subprocess.run(
        args[:-3]
        + ["--set=train_vae.steps=40", "--set=train_vae.checkpoint_every=4", "--set=train_vae.steps_per_loop=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "generate: already done, skipped" in r.stderr
    assert "vae: resuming from step" in r.stderr
    st = _status(wd)
    assert st["generate"]["status"] == "skipped" and st["train_vae"]["status"] == "done"
    assert not os.path.exists(os.path.join(wd, ".lock")) and not os.path.exists(os.path.join(Layout(wd).vae, ".lock"))


@pytest.mark.slow
def test_a_second_pipeline_on_a_workdir_in_use_is_one_line_and_exit_2_and_the_first_ends_as_a_solo_run(tmp_path):
    from helpers import shard_digests

    def command(wd):
        return [sys.executable, "-m", "wm.pipeline", f"--workdir={wd}", "--preset=smoke", "--noprogress"]

    wd = tmp_path / "shared"
    first = subprocess.Popen(command(wd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (wd / ".lock").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(command(wd), capture_output=True, text=True, timeout=120)
    err = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(err) == 1, second.stderr[-2000:]
    assert err[0].startswith(f"pipeline: error: {wd} is in use by pipeline (host ") and f"pid {first.pid}" in err[0]
    first_err = first.communicate(timeout=600)[1]
    assert first.returncode == 0, first_err[-2000:]
    # and its whole output, its worker processes' included, holds no line of TensorFlow's C++ logging
    from tfrecords.runtime.native_logs import is_native_log_line

    assert "pipeline: done in" in first_err
    assert [x for x in first_err.splitlines() if is_native_log_line(x.encode())] == []
    solo = tmp_path / "solo"
    assert subprocess.run(command(solo), capture_output=True, timeout=600).returncode == 0
    # the first run's files are a solo run's: the same rollouts (V, and so the series, train with nondeterministic
    # input order), and each stage's log written once, step by step
    assert shard_digests(Layout(str(wd)).rollouts) == shard_digests(Layout(str(solo)).rollouts) != {}

    def logged(w, d):  # the steps (V, M) or generations (C) in a stage's metrics.jsonl, in order
        key = "generation" if d == "controller" else "step"
        return [json.loads(x).get(key) for x in open(w / d / "metrics.jsonl")]

    for d in ("vae", "mdnrnn", "controller"):
        assert logged(wd, d) == logged(solo, d)
    assert not (wd / ".lock").exists()


@pytest.mark.parametrize(
    "item,msg",
    [
        ("train_vae.nope=1", "has no flag 'nope'"),
        ("nostage.x=1", "unknown stage"),
        ("train_vae.steps=abc", "not a valid int"),
        ("train_vae", "STAGE.FLAG=VALUE"),
    ],
)
def test_bad_overrides(tmp_path, item, msg):
    with pytest.raises(UsageError, match=msg):
        pipeline.build_configs(pipeline.PipelineConfig(workdir=str(tmp_path), preset="smoke", overrides=[item]))


def test_presets_build_valid_configs(tmp_path):
    for preset in pipeline.PRESETS:
        cfgs = pipeline.build_configs(
            pipeline.PipelineConfig(workdir=str(tmp_path), preset=preset, strategy="mirrored")
        )
        assert cfgs["train_vae"].strategy == "mirrored" and cfgs["train_controller"].workdir.endswith("controller")
    paper = pipeline.build_configs(pipeline.PipelineConfig(workdir=str(tmp_path), preset="paper"))
    assert (
        paper["generate"].episodes == 10_000
        and paper["train_controller"].popsize == 64
        and paper["train_controller"].trials == 16
    )
    assert paper["evaluate"].episodes == 100 and paper["train_mdnrnn"].seq_len == 999


def test_the_paper_preset_batches_split_over_8_replicas(tmp_path):
    paper = pipeline.build_configs(pipeline.PipelineConfig(workdir=str(tmp_path), preset="paper"))
    for stage in ("train_vae", "train_mdnrnn"):
        assert paper[stage].batch_size % 8 == 0, (stage, paper[stage].batch_size)


def test_a_dreaming_controller_gives_m_its_reward_and_terminal_heads(tmp_path):
    build = lambda *o, preset="quickstart": pipeline.build_configs(  # noqa: E731
        pipeline.PipelineConfig(workdir=str(tmp_path), preset=preset, overrides=list(o))
    )
    real = build()
    assert not real["train_mdnrnn"].reward_head and real["train_controller"].env == "real"
    assert list(real) == list(pipeline.STAGES)  # no iterations: today's pipeline
    # smoke iterates in the dream, and the dream preset asks for the heads: M has them from the first pass on
    for preset in ("smoke", "dream"):
        assert build(preset=preset)["train_mdnrnn"].reward_head
    two = build(preset="dream")  # iterations in the real environment, M's heads for the gap it logs
    assert two["train_controller"].env == "real" and two["train_controller@2"].env == "real"
    assert two["train_controller@2"].trials == 2 and two["train_controller@2"].generations == 25 + 2 * 12
    assert two["train_controller@2"].series.count(",") == 2  # the first pass's series and both iterations'
    old = build("iteration.env=dream", "iteration.trials=16", "iteration.generations=40", preset="dream")
    assert old["train_controller@2"].env == "dream" and old["train_controller@2"].generations == 25 + 2 * 40
    dream = build("train_controller.env=dream")
    assert dream["train_mdnrnn"].reward_head and dream["train_mdnrnn"].terminal_head
    assert dream["train_controller"].series == Layout(str(tmp_path)).series
    # an explicit setting still wins (and train_controller then refuses it with one line)
    assert not build("train_controller.env=dream", "train_mdnrnn.reward_head=false")["train_mdnrnn"].reward_head


def test_seed_seeds_every_training_stage_and_the_collection_but_not_the_held_out_tracks(tmp_path):
    build = lambda *o, seed=None: pipeline.build_configs(  # noqa: E731
        pipeline.PipelineConfig(workdir=str(tmp_path), preset="dream", seed=seed, overrides=list(o))
    )
    none, zero, two, three = build(), build(seed=0), build(seed=2), build(seed=3)
    assert none["train_vae"].seed is None and none["train_mdnrnn"].seed is None  # as before --seed existed
    assert (none["generate"].seed, none["collect@1"].seed, none["collect@2"].seed) == (0, 1, 2)
    # --seed=0 plays the unseeded run's tracks; only V and M are seeded in addition
    assert [zero[s].seed for s in ("generate", "collect@1", "collect@2", "train_controller")] == [0, 1, 2, 0]
    assert (zero["train_vae"].seed, zero["train_mdnrnn"].seed) == (0, 0)
    assert [two[s].seed for s in ("generate", "collect@1", "collect@2")] == [2000, 2001, 2002]
    assert {two[s].seed for s in ("train_vae", "train_mdnrnn", "train_controller", "train_controller@2")} == {2}
    # no two runs or iterations share a data seed, and every run is scored on the same held-out tracks
    data = [r[s].seed for r in (zero, two, three) for s in ("generate", "collect@1", "collect@2")]
    assert len(set(data)) == len(data)
    assert none["evaluate"].seed == zero["evaluate"].seed == two["evaluate"].seed == three["evaluate"].seed
    assert "--seed=2000" in pipeline.command_line(pipeline._stages()["generate"], two["generate"])
    assert build("generate.seed=7", seed=2)["generate"].seed == 7  # --set still wins


@pytest.mark.slow
def test_smoke_with_one_dream_iteration_end_to_end_then_a_killed_second_one_resumes(tmp_path, monkeypatch):
    wd = str(tmp_path / "iter")
    dream = ["train_controller.env=dream", "train_controller.eval_every=1", "train_controller.eval_episodes=1"]
    cfg = pipeline.PipelineConfig(workdir=wd, preset="smoke", progress=False, iterations=1, overrides=dream)
    pipeline.run(cfg)
    st = _status(wd)
    names = list(pipeline.build_configs(cfg))
    assert names[6:11] == ["collect@1", "encode@1", "train_mdnrnn@1", "train_controller@1", "dream@1"]
    assert [st[n]["status"] for n in names] == ["done"] * len(names)
    w = Layout(wd)
    manifest = json.load(open(os.path.join(w.iteration(1).rollouts, "manifest.json")))
    assert manifest["policy"]["agent"] == w.controller and manifest["episodes"] == 2
    assert "iter_1/series" in st["train_mdnrnn@1"]["command"] and "--steps=6" in st["train_mdnrnn@1"]["command"]
    with open(os.path.join(w.controller, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert [r["generation"] for r in recs] == [1, 2, 3] and all("dream_eval_mean" in r for r in recs)
    assert os.path.getsize(w.iteration(1).dream_vs_real) > 0
    assert "Iterations" in open(w.report).read()
    from wm.reporting import iterations

    rows = iterations.iteration_rows(wd, json.load(open(w.pipeline_json)))
    assert [(r["iteration"], r["generation"]) for r in rows] == [(0, 2), (1, 3)]
    assert all(r["gap"] == r["dream"] - r["real"] for r in rows)
    assert rows[1]["collected"] == 2 and {"m_reward_mse", "m_return_error", "m_z_nll"} <= set(rows[1])
    # two iterations, killed in collect@2 after its first shard: the rerun keeps that shard and goes on
    from tfrecords import writer

    interrupt_on_call(monkeypatch, writer, "write_shard", 2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(dataclasses.replace(cfg, iterations=2))
    monkeypatch.undo()
    assert _status(wd)["collect@2"]["status"] == "interrupted"
    kept = os.listdir(w.iteration(2).rollouts)
    assert sum(n.endswith(".tfrecord.gz") for n in kept) == 1
    # the first pass and iteration 1 are skipped, iteration 2 resumes and what follows runs
    pipeline.run(dataclasses.replace(cfg, iterations=2))
    st = _status(wd)
    assert all(st[n]["status"] == "skipped" for n in names[:11])
    later = list(pipeline.build_configs(dataclasses.replace(cfg, iterations=2)))[11:]
    assert later[:5] == ["collect@2", "encode@2", "train_mdnrnn@2", "train_controller@2", "dream@2"]
    assert all(st[n]["status"] == "done" for n in later)


@pytest.mark.slow
def test_dream_only_smoke_end_to_end_never_trains_or_selects_c_in_the_real_environment(tmp_path, monkeypatch):
    monkeypatch.setitem(pipeline.PRESETS, "dream_only", presets.dream_only.SMOKE)
    wd = str(tmp_path / "dream_only")
    cfg = pipeline.PipelineConfig(workdir=wd, preset="dream_only", progress=False, iterations=1)
    pipeline.run(cfg)
    st = _status(wd)
    assert [s["status"] for s in st.values()] == ["done"] * len(st) and "train_controller@1" in st
    assert {st[n]["config"]["env"] for n in ("train_controller", "train_controller@1")} == {"dream"}
    assert st["train_controller"]["config"]["dream_done"] == "sample"
    w = Layout(wd)
    with open(os.path.join(w.controller, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 3 and all(r["dream_steps"] > 0 for r in recs)
    # the real environment only collected data and scored the kept controller: no fitness, no selection
    assert not any("env_steps" in r or "eval_env_steps" in r for r in recs)
    assert all("heldout_score" in r for r in recs if "heldout_key" in r) and any("heldout_score" in r for r in recs)
    manifest = json.load(open(os.path.join(w.iteration(1).rollouts, "manifest.json")))
    assert manifest["policy"]["agent"] == w.controller
    assert os.path.exists(os.path.join(w.controller, "evaluation.csv"))


def _readme_preset_rows() -> dict[str, list[str]]:
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
    rows = {}
    for line in open(readme, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6 and cells[0].strip("`") in pipeline.PRESETS:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_readme_s_preset_table_says_what_each_preset_sets():
    import re

    rows = _readme_preset_rows()
    assert set(rows) == set(pipeline.PRESETS), "README's preset table and PRESETS name other presets"
    for name, (rollouts, v, m, c, evaluation) in rows.items():
        p = pipeline.PRESETS[name]
        where = f"README's row for {name!r}"
        n, steps = re.match(r"([\d,]+) × ([\d,]+) steps", rollouts).groups()
        assert (_number(n), _number(steps)) == (p["generate"]["episodes"], p["generate"]["max_steps"]), where
        for cell, stage in ((v, "train_vae"), (m, "train_mdnrnn")):
            count, unit, batch = re.match(r"([\d,]+) (steps|epochs)(?: of (\d+))?", cell).groups()
            assert _number(count) == p[stage][unit], where
            assert batch is None or int(batch) == p[stage]["batch_size"], where
        cm = re.search(r"(\d+) × (\d+)(?: trials)?, ([\d,]+) generations", c).groups()
        tc = p["train_controller"]
        assert (int(cm[0]), int(cm[1]), _number(cm[2])) == (tc["popsize"], tc["trials"], tc["generations"]), where
        assert _number(re.match(r"([\d,]+) tracks", evaluation).group(1)) == p["evaluate"]["episodes"], where
        iterations = p.get("pipeline", {}).get("iterations", 0)
        assert bool(re.search(rf"\b{iterations} iterations?\b", c)) == (iterations > 0), where


def test_the_report_s_iteration_note_names_where_the_iterations_trained(tmp_path):
    from wm.reporting import iterations

    for overrides, env in (([], "real"), (["iteration.env=dream"], "dream")):
        cfg = pipeline.PipelineConfig(workdir=str(tmp_path), preset="dream", overrides=overrides)
        configs = pipeline.build_configs(cfg)
        stages = [
            {"name": n, "command": pipeline.command_line(pipeline._stages()[n.split("@")[0]], c), "config": _json(c)}
            for n, c in configs.items()
        ]
        assert configs["train_controller@1"].env == env
        assert iterations.iteration_env({"stages": stages, "iterations": 2}) == env


def test_pipeline_json_holds_each_stage_s_config_as_run(tmp_path, monkeypatch):
    ran = []
    stages = {n: dataclasses.replace(st, run=ran.append) for n, st in pipeline._stages().items()}
    monkeypatch.setattr(pipeline, "_stages", lambda: stages)
    wd = str(tmp_path / "run")
    cfg = pipeline.PipelineConfig(workdir=wd, preset="dream", progress=False, overrides=["iteration.env=dream"])
    configs = pipeline.build_configs(cfg)
    pipeline.run(cfg)
    st = _status(wd)
    assert ran == list(configs.values()) and list(st) == list(configs)
    assert all(st[n]["config"] == _json(c) and st[n]["status"] == "done" for n, c in configs.items())
    assert (
        st["train_controller"]["config"]["generations"] == 25 and st["train_controller@1"]["config"]["env"] == "dream"
    )
    assert st["train_controller"]["config"]["workdir"] == Layout(wd).controller
    # the markers keep it without --progress, so that a rerun with or without progress bars skips every stage
    marker = json.load(open(Layout(wd).marker("train_vae")))
    assert marker["config"] == {k: v for k, v in st["train_vae"]["config"].items() if k != "progress"}
    pipeline.run(dataclasses.replace(cfg, progress=True))
    st = _status(wd)
    assert {s["status"] for s in st.values()} == {"skipped"} and st["train_vae"]["config"]["progress"] is True


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_each_preset_module_gives_its_command_and_cost_and_a_smoke_variant(tmp_path, monkeypatch, name):
    module = presets.MODULES[name]
    assert "python -m wm.pipeline --workdir=" in module.__doc__ and f"--preset={name}" in module.__doc__
    assert "Cost" in module.__doc__ and ("not measured" in module.__doc__ or "2026-" in module.__doc__)
    monkeypatch.setitem(pipeline.PRESETS, name, module.SMOKE)
    tiny = pipeline.build_configs(pipeline.PipelineConfig(workdir=str(tmp_path), preset=name))
    full = pipeline.build_configs(pipeline.PipelineConfig(workdir=str(tmp_path), preset="smoke"))
    for stage in ("generate", "train_vae", "train_mdnrnn", "train_controller", "evaluate"):
        for field in presets.smoke.SIZES[stage]:  # the smoke sizes
            assert getattr(tiny[stage], field) == getattr(full[stage], field), (stage, field)
    for stage, values in module.PRESET.items():  # and the preset's own settings besides
        for field, value in values.items():
            if stage in tiny and field not in presets.smoke.SIZES.get(stage, {}):
                assert getattr(tiny[stage], field) == value, (stage, field)
