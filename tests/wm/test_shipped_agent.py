"""The agent shipped inside the package (``wm/pretrained``): present, small, described, and playable by
every binary that takes ``--agent=pretrained`` with no training."""

import json
import os
import subprocess
import sys

import pytest

from wm.agents import pretrained

MAX_BYTES = 25 * 2**20  # issue 30: V, M and C in at most 25 MB


def _bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)


def test_the_package_ships_an_agent_measured_over_100_tracks():
    assert os.path.isdir(pretrained.ROOT), "wm/pretrained is missing"
    assert _bytes(pretrained.ROOT) <= MAX_BYTES
    controller = pretrained.resolve("pretrained")
    assert pretrained.is_packaged(controller)
    config = json.load(open(os.path.join(controller, "config.json")))
    assert config["algorithm"] == "cma-es"
    for part in ("vae", "mdnrnn"):  # V and M named relative to C, so the package can live anywhere
        assert not os.path.isabs(config[part]) and os.path.isdir(os.path.join(controller, config[part]))
    source = pretrained.source()
    assert source["command"].startswith("python -m wm.pipeline ")
    evaluation = source["evaluation"]
    assert evaluation["episodes"] == 100 and evaluation["seed"] == 0  # wm.evaluate's held-out tracks
    assert evaluation["min"] <= evaluation["mean"] <= evaluation["max"] and evaluation["std"] > 0


def test_the_shipped_agent_loads_with_its_trained_weights():
    from wm.agents import loading

    agent, params, _ = loading.load_policy(pretrained.resolve("pretrained"), "float32")
    assert params.shape == (1, agent.controller.num_params) and abs(params).sum() > 0
    # the paper's sizes (V about 4.3M parameters, M about 0.4M)
    assert agent.vae.count_params() > 1_000_000 and agent.mdnrnn.count_params() > 100_000


@pytest.mark.slow
def test_every_binary_plays_the_shipped_agent_with_no_training(tmp_path):
    """As a user would right after ``pip install -e .``: from an empty directory, each binary that takes
    ``--agent=pretrained`` runs to the end, writes into the current directory or its --out, and leaves
    the package as it was."""
    before = {p: os.path.getmtime(p) for p in _paths(pretrained.ROOT)}
    runs = {
        "wm.evaluate": ["--episodes=1", "--max_steps=30", "--workers=1", "--progress=false"],
        "wm.dream": ["--max_steps=20", "--out=dream.gif"],
        "wm.export": ["--out=exported"],
        "wm.collect": ["--out_dir=collected", "--episodes=1", "--max_steps=20", "--workers=1", "--progress=false"],
    }
    for module, flags in runs.items():
        proc = subprocess.run(
            [sys.executable, "-m", module, "--agent=pretrained", *flags],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{module}: {proc.stderr[-2000:]}"
    for out in ("evaluation.json", "dream.gif", "exported", os.path.join("collected", "manifest.json")):
        assert os.path.exists(tmp_path / out), out
    assert json.load(open(tmp_path / "evaluation.json"))["episodes"] == 1
    assert {p: os.path.getmtime(p) for p in _paths(pretrained.ROOT)} == before


def _paths(root: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
