"""launch/: every script parses with bash -n and is executable; the Colab notebook is nbformat 4 JSON."""

import json
import os
import subprocess

import pytest

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")
SCRIPTS = ["gpu.sh", "multi_gpu.sh", "multi_worker.sh", "tpu_vm.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_is_executable(name):
    path = os.path.join(LAUNCH, name)
    assert os.access(path, os.X_OK), f"{name} is not executable"
    subprocess.run(["bash", "-n", path], check=True)
    text = open(path).read()
    assert "set -euo pipefail" in text and "usage:" in text and "wm.pipeline" in text
    out = subprocess.run(["bash", path, "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage:")


def test_multi_worker_requires_hosts_and_a_valid_index():
    path = os.path.join(LAUNCH, "multi_worker.sh")
    assert subprocess.run(["bash", path], capture_output=True).returncode == 2
    out = subprocess.run(["bash", path, "h1:1,h2:2", "2"], capture_output=True, text=True)
    assert out.returncode == 2 and "INDEX must be 0..1" in out.stderr


def test_colab_notebook_is_nbformat_4():
    with open(os.path.join(LAUNCH, "colab_tpu.ipynb")) as f:
        nb = json.load(f)
    assert nb["nbformat"] == 4 and nb["cells"]
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "wm.pipeline" in code and "--strategy=tpu" in code and "report.html" in code
