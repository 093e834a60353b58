"""wm.report and wm.reporting: a full fake workdir, a partial one, the iterations read from pipeline.json
(with the stages' recorded config, and without it as written before), and the error for a missing workdir."""

import base64
import json
import os
import re

import numpy as np
import pytest

from tfrecords.runtime.cli import UsageError
from wm import report
from wm.reporting import iterations, plots
from wm.reporting.build import build_report

COMMAND = "python -m wm.train_vae --data=W/rollouts --workdir=W/vae --batch_size=8 --steps=4"


def _write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _gif(path, frames=3):
    import imageio.v2 as imageio

    os.makedirs(os.path.dirname(path), exist_ok=True)
    imageio.mimsave(path, [np.full((16, 32, 3), 40 * i, np.uint8) for i in range(frames)], duration=40, loop=0)


def _full_workdir(root, tiny_world):
    w = root / "run"
    w.mkdir()
    os.symlink(tiny_world["rollouts"], w / "rollouts")
    os.symlink(tiny_world["vae"], w / "vae")
    _write_jsonl(
        str(w / "mdnrnn" / "metrics.jsonl"),
        [
            {"step": s, "split": "train", "loss": 2.0 - 0.1 * s, "z_nll": 2.0 - 0.1 * s, "items_per_sec": 50.0}
            for s in (2, 4)
        ]
        + [{"step": 4, "split": "eval", "loss": 1.9, "z_nll": 1.9}],
    )
    ctl = w / "controller"
    _write_jsonl(
        str(ctl / "metrics.jsonl"),
        [
            {
                "generation": g,
                "mean": 10.0 * g,
                "max": 12.0 * g + 5,
                "min": 5.0 * g - 5,
                "sigma": 0.1,
                "env_steps": 100,
                "wall_time": 1.5,
                **({"eval_mean": 9.0 * g, "best_eval": 9.0 * g} if g % 2 == 0 else {}),
            }
            for g in range(1, 6)
        ],
    )
    (ctl / "evaluation.csv").write_text(
        "episode,seed,return,steps\n0,11,812.5000,1000\n1,12,903.2500,1000\n2,13,877.0000,1000\n"
    )
    (ctl / "evaluation.json").write_text(
        json.dumps(
            {
                "mean": 864.25,
                "std": 37.5,
                "episodes": 3,
                "min": 812.5,
                "max": 903.25,
                "env_steps_per_sec": 123.0,
                "env_id": "CarRacingFast-v3",
            }
        )
    )
    _gif(str(w / "dream.gif"))
    _gif(str(w / "videos" / "episode_000_seed_11.gif"))
    stages = [
        {
            "name": n,
            "command": COMMAND if n == "train_vae" else f"python -m wm.{n} --workdir=W",
            "status": "done",
            "wall_time": 1.25,
        }
        for n in ("generate", "train_vae", "encode", "train_mdnrnn", "dream", "train_controller", "evaluate")
    ]
    stages.append(
        {"name": "report", "command": "python -m wm.report --workdir=W", "status": "running", "wall_time": None}
    )
    (w / "pipeline.json").write_text(
        json.dumps({"preset": "smoke", "started": "2025-01-01T00:00:00", "stages": stages})
    )
    return w


def _strip_tags(text):
    return re.sub(r"<[^>]+>", "", text)


def _images(text, mime):
    return re.findall(rf'src="data:image/{mime};base64,([A-Za-z0-9+/=]+)"', text)


def test_full_workdir(tmp_path, tiny_world):
    w = _full_workdir(tmp_path, tiny_world)
    path = build_report(str(w))
    assert path == str(w / "report.html") and not os.path.exists(path + ".tmp")
    text = open(path).read()
    pngs = _images(text, "png")
    # histogram, controller curve, VAE reconstructions, VAE losses, M losses
    assert len(pngs) == 5
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    gifs = _images(text, "gif")
    assert len(gifs) == 2 and all(base64.b64decode(g)[:3] == b"GIF" for g in gifs)
    assert "864.2 ± 37.5" in text and "906 ± 21" in text
    assert COMMAND in _strip_tags(text)
    assert f"tensorboard --logdir {w}" in text
    assert "Missing or incomplete" not in text, re.findall(r"Missing: [^<]*", text)


def test_partial_workdir_names_what_is_missing(tmp_path):
    w = tmp_path / "partial"
    _write_jsonl(
        str(w / "vae" / "metrics.jsonl"), [{"step": 2, "split": "train", "loss": 3.0, "reconstruction": 2.5, "kl": 0.5}]
    )
    (w / "pipeline.json").write_text(
        json.dumps(
            {
                "preset": "smoke",
                "started": "now",
                "stages": [
                    {
                        "name": "generate",
                        "command": "python -m data_gen.generate --out_dir=W/rollouts <&>",
                        "status": "failed",
                        "wall_time": 2.0,
                    }
                ],
            }
        )
    )
    text = open(build_report(str(w))).read()
    assert len(_images(text, "png")) == 1  # only the VAE loss curve
    assert "Missing or incomplete" in text
    for what in (
        "evaluation.json",
        "controller/metrics.jsonl",
        "vae/export/encoder.keras",
        "mdnrnn/metrics.jsonl",
        "dream.gif",
        "rollouts/manifest.json",
        "stage generate failed",
    ):
        assert what in text, what
    assert "--out_dir=W/rollouts &lt;&amp;&gt;" in _strip_tags(text)  # commands are escaped


def test_empty_workdir_builds_and_missing_workdir_is_an_error(tmp_path):
    text = open(build_report(str(tmp_path))).read()
    assert "pipeline.json" in text and "<html" in text
    with pytest.raises(UsageError, match="no such workdir"):
        build_report(str(tmp_path / "nope"))


def test_a_dream_trained_controller_shows_its_dream_and_real_returns_on_one_plot(tmp_path):
    rows = [
        {"generation": g, "mean": 50.0 * g, "max": 60.0 * g, "min": 40.0 * g, "sigma": 0.1, "dream_steps": 1000}
        for g in range(1, 5)
    ]
    for r in rows[1::2]:
        r.update(eval_mean=10.0 * r["generation"], dream_eval_mean=55.0 * r["generation"], eval_env_steps=50)
    _write_jsonl(str(tmp_path / "controller" / "metrics.jsonl"), rows)
    text = _strip_tags(open(build_report(str(tmp_path))).read())
    assert "4 generations in the dream" in text and "100 environment steps and 4,000 dream steps" in text
    real_only = [{k: v for k, v in r.items() if k != "dream_eval_mean"} for r in rows]
    assert plots.plot_controller(rows) != plots.plot_controller(real_only)


def test_the_controller_section_shows_the_fidelity_gauge_when_it_was_run(tmp_path):
    rows = [{"generation": 1, "mean": 1.0, "max": 2.0, "min": 0.0}]
    _write_jsonl(str(tmp_path / "controller" / "metrics.jsonl"), rows)
    before = open(build_report(str(tmp_path))).read()
    assert "Dream fidelity" not in before
    controllers = [
        {"name": n, "real_mean": r, "dream_mean": d, "real_std": 1.0, "dream_std": 1.0, "real_rank": 1, "dream_rank": 1}
        for n, r, d in (("agent", 800.0, 50.0), ("zero", -90.0, 300.0), ("noise 1 #1", 200.0, 120.0))
    ]
    gauge = {"spearman_rho": -0.5, "mean_gap": -66.7, "controllers": controllers, "episodes": 8}
    (tmp_path / "controller" / "fidelity.json").write_text(json.dumps(gauge))
    html = open(build_report(str(tmp_path))).read()
    text = _strip_tags(html)
    assert "Spearman rho -0.50 over 3 controllers, mean dream - real gap -66.7, 8 tracks" in text
    assert "dream fidelity scatter" in html
    missing = re.compile(r"Missing or incomplete</b> \((\d+)\)")
    assert missing.search(html).group(1) == missing.search(before).group(1)  # optional: never named missing
    assert plots.plot_fidelity(controllers, -0.5) != plots.plot_fidelity(controllers[:2], -1.0)


def _iteration_workdir(w, stages):
    _write_jsonl(
        str(w / "controller" / "metrics.jsonl"),
        [
            {"generation": g, "mean": 1.0, "max": 2.0, "min": 0.0, "eval_mean": 3.0 * g, "dream_eval_mean": 7.0 * g}
            for g in range(1, 6)
        ],
    )
    os.makedirs(w / "iter_1" / "rollouts")
    (w / "iter_1" / "rollouts" / "manifest.json").write_text(
        json.dumps({"episodes": 2, "mean_return": 12.5, "model_errors": {"reward_mse": 0.25, "mdnrnn": "M"}})
    )
    pipeline = {"preset": "dream", "iterations": 1, "stages": stages}
    (w / "pipeline.json").write_text(json.dumps(pipeline))
    return pipeline


@pytest.mark.parametrize("recorded", ["config", "legacy command"])
def test_iterations_read_each_stage_s_config_and_old_pipeline_json_s_commands(tmp_path, recorded):
    settings = {"train_controller": (2, "real"), "train_controller@1": (4, "dream")}
    if recorded == "config":  # the commands say otherwise: the recorded config is what counts
        command = "python -m wm.train_controller --generations=1 --env=real"
        stages = [
            {"name": n, "command": command, "config": {"generations": g, "env": e}} for n, (g, e) in settings.items()
        ]
    else:  # a pipeline.json from before the pipeline recorded configs: the values are parsed out of the commands
        command = "python -m wm.train_controller --generations={} --env={}"
        stages = [{"name": n, "command": command.format(g, e)} for n, (g, e) in settings.items()]
    pipeline = _iteration_workdir(tmp_path, stages)
    rows = iterations.iteration_rows(str(tmp_path), pipeline)
    assert [(r["iteration"], r["generation"], r["real"], r["dream"], r["gap"]) for r in rows] == [
        (0, 2, 6.0, 14.0, 8.0),
        (1, 4, 12.0, 28.0, 16.0),
    ]
    assert rows[1]["collected"] == 2 and rows[1]["m_reward_mse"] == 0.25 and "m_mdnrnn" not in rows[1]
    assert iterations.iteration_env(pipeline) == "dream"
    text = _strip_tags(open(build_report(str(tmp_path))).read())
    assert "Iterations" in text and "CMA-ES in the new M's dream" in text


def test_iterations_without_settings_default_to_the_real_environment_and_no_generation():
    stages = [{"name": "train_controller@1", "command": "python -m wm.train_controller", "config": {"popsize": 4}}]
    assert iterations.iteration_env({"stages": stages, "iterations": 1}) == "real"
    assert iterations.stage_value({"stages": stages}, "train_controller@1", "generations") is None
    assert iterations.stage_value(None, "train_controller", "generations") is None
    assert iterations.iteration_env({"stages": [{"name": "train_controller@1", "command": "x --env=dream"}]}) == "dream"


def test_the_binary_builds_the_report(tmp_path):
    assert report.run(report.ReportConfig(workdir=str(tmp_path))) == str(tmp_path / "report.html")


def test_the_score_curve_counts_every_real_step_and_stage_second_before_each_point(tmp_path):
    from wm.reporting import curve

    w = tmp_path / "run"
    for d, frames in (("rollouts", 1000), ("iter_1/rollouts", 300)):
        (w / d).mkdir(parents=True)
        (w / d / "manifest.json").write_text(json.dumps({"episodes": 1, "frames": frames}))

    def stage(name, wall, **config):
        return {"name": name, "status": "done", "wall_time": wall, "config": config}

    pipeline = {
        "iterations": 1,
        "stages": [
            stage("generate", 10.0, out_dir=str(w / "rollouts")),
            stage("train_vae", 20.0),
            stage("train_controller", 99.0, generations=2, score_episodes=2),
            stage("collect@1", 5.0, out_dir=str(w / "iter_1" / "rollouts")),
            stage("train_mdnrnn@1", 7.0),
            stage("train_controller@1", 99.0, generations=3, score_episodes=2),
            stage("evaluate", 3.0),
        ],
    }
    (w / "pipeline.json").write_text(json.dumps(pipeline))
    records = [
        dict(generation=g, mean=0, max=0, min=0, real_env_steps=100 * g, train_time=g, heldout_score=g + 4)
        for g in (1, 2, 3)
    ]
    _write_jsonl(str(w / "controller" / "metrics.jsonl"), records)
    points = curve.score_curve(str(w), pipeline)
    assert [(p["real_env_steps"], p["seconds"], p["score"]) for p in points] == [
        (1000 + 100, 30.0 + 1, 5.0),
        (1000 + 200, 30.0 + 2, 6.0),
        (1000 + 300 + 300, 30.0 + 12.0 + 3, 7.0),  # after the collection (300 real steps) and M's 7 s
    ]
    text = open(build_report(str(w))).read()
    assert "Score against real environment steps" in text and "after 1,600 real environment steps" in text
    # without pipeline.json: the controller's own steps and time
    assert [p["real_env_steps"] for p in curve.score_curve(str(w), None)] == [100, 200, 300]
