"""launch/: every script parses with bash -n and is executable; gpu.sh and its multi_gpu.sh wrapper
run the pipeline with the right --strategy (checked with a stub PYTHON); the Colab notebook is
nbformat 4 JSON."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["gpu.sh", "multi_gpu.sh", "multi_worker.sh", "tpu_vm.sh"]
WRAPPERS = ["multi_gpu.sh"]  # exec another script; the logic lives there


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_is_executable(name):
    path = os.path.join(LAUNCH, name)
    assert os.access(path, os.X_OK), f"{name} is not executable"
    subprocess.run(["bash", "-n", path], check=True)
    text = open(path).read()
    if name not in WRAPPERS:
        assert "set -euo pipefail" in text and "usage:" in text and "wm.pipeline" in text
    out = subprocess.run(["bash", path, "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage:")


def test_multi_gpu_is_a_thin_wrapper_of_gpu_sh():
    lines = open(os.path.join(LAUNCH, "multi_gpu.sh")).read().splitlines()
    assert lines[0].startswith("#!")
    code = [ln for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(code) <= 3, code
    assert any(ln.lstrip().startswith("exec ") and "gpu.sh" in ln for ln in code), code
    assert not any("wm.pipeline" in ln or "pip" in ln for ln in code), code


def _run(tmp_path, script, *args, **env_overrides):
    """Runs launch/SCRIPT with PYTHON set to a stub that logs each call; returns (proc, calls)."""
    log = tmp_path / "calls.jsonl"
    stub = tmp_path / "python_stub"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
    )
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("STRATEGY", "SKIP_INSTALL")}
    env.update(PYTHON=str(stub), SKIP_INSTALL="1")
    env.update(env_overrides)
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run(
        ["bash", os.path.join(LAUNCH, script), *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    calls = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _pipeline(strategy, workdir, *extra):
    return ["-m", "wm.pipeline", "--preset=paper", f"--strategy={strategy}", f"--workdir={workdir}", *extra]


@pytest.mark.parametrize(
    "script, env, strategy",
    [
        ("gpu.sh", {}, "default"),
        ("gpu.sh", {"STRATEGY": "mirrored"}, "mirrored"),
        ("multi_gpu.sh", {}, "mirrored"),
        ("multi_gpu.sh", {"STRATEGY": "default"}, "mirrored"),  # the wrapper always means mirrored
    ],
)
def test_gpu_scripts_run_the_pipeline_with_their_strategy(tmp_path, script, env, strategy):
    proc, calls = _run(tmp_path, script, "runs/x", "--set=train_controller.workers=32", **env)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2, calls  # GPU check, then the pipeline (SKIP_INSTALL=1: no pip)
    assert calls[0]["argv"][0] == "-c" and "list_physical_devices('GPU')" in calls[0]["argv"][1]
    assert calls[1]["argv"] == _pipeline(strategy, "runs/x", "--set=train_controller.workers=32")
    assert calls[1]["cwd"] == ROOT
    assert f"--strategy={strategy}" in proc.stderr  # the echoed command


@pytest.mark.parametrize("script, strategy", [("gpu.sh", "default"), ("multi_gpu.sh", "mirrored")])
def test_gpu_scripts_default_workdir_and_flags_only(tmp_path, script, strategy):
    proc, calls = _run(tmp_path, script)
    assert proc.returncode == 0, proc.stderr
    assert calls[-1]["argv"] == _pipeline(strategy, "runs/paper")
    (tmp_path / "flags").mkdir()
    proc, calls = _run(tmp_path / "flags", script, "--stages=generate")  # a flag first is not a WORKDIR
    assert proc.returncode == 0, proc.stderr
    assert calls[-1]["argv"] == _pipeline(strategy, "runs/paper", "--stages=generate")


def test_gpu_sh_installs_the_gpu_extra_from_the_repo_root(tmp_path):
    proc, calls = _run(tmp_path, "multi_gpu.sh", "runs/x", SKIP_INSTALL=None)
    assert proc.returncode == 0, proc.stderr
    assert [c["argv"][:2] for c in calls] == [["-m", "pip"], ["-c", calls[1]["argv"][1]], ["-m", "wm.pipeline"]]
    assert calls[0]["argv"] == ["-m", "pip", "install", "-e", ".[gpu]"] and calls[0]["cwd"] == ROOT
    assert calls[2]["argv"] == _pipeline("mirrored", "runs/x")


@pytest.mark.parametrize("strategy", ["tpu", "multi_worker", "bogus"])
def test_gpu_sh_rejects_other_strategies_before_doing_anything(tmp_path, strategy):
    proc, calls = _run(tmp_path, "gpu.sh", "runs/x", STRATEGY=strategy, SKIP_INSTALL=None)
    assert proc.returncode == 2 and "STRATEGY must be default or mirrored" in proc.stderr
    assert calls == []


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


def test_tpu_install_paths_install_every_requirement_but_the_preinstalled_tensorflow():
    """tpu_vm.sh and the Colab notebook install the package with --no-deps (the image's TensorFlow stays),
    so they install the other requirements from launch/requirements.py: without isal and google-crc32c the
    reader and writer would silently fall back to the slower TensorFlow ones."""
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(LAUNCH), "setup.cfg"))
    names = [re.split(r"[\[<>=!~ ]", r.strip())[0] for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
    wanted = {n for n in names if n not in ("tensorflow",)}
    script = os.path.join(LAUNCH, "requirements.py")
    out = subprocess.run([sys.executable, script, "--without=tensorflow"], capture_output=True, text=True, check=True)
    installed = {re.split(r"[\[<>=!~ ]", r)[0] for r in out.stdout.split()}
    assert installed == wanted
    with open(os.path.join(LAUNCH, "colab_tpu.ipynb")) as f:
        notebook = "".join("".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code")
    with open(os.path.join(LAUNCH, "tpu_vm.sh")) as f:
        shell = f.read()
    for where, text in (("tpu_vm.sh", shell), ("colab_tpu.ipynb", notebook)):
        assert re.search(
            r"pip install (-q )?\$\((\"\$PYTHON\"|python) launch/requirements.py --without=tensorflow\)", text
        ), where


@pytest.mark.slow
def test_multi_worker_sh_runs_the_smoke_pipeline_with_an_iteration_on_two_local_workers(tmp_path):
    """Both halves of multi_worker.sh for real, on localhost: the chief runs the whole pipeline, worker 1
    joins V, M and the iteration's M (the chief trains that under MultiWorkerMirroredStrategy too, so a
    worker that left after M would hang it). A rerun skips every finished stage on both workers."""
    import socket

    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("localhost", 0))
    hosts = ",".join(f"localhost:{s.getsockname()[1]}" for s in socks)
    for s in socks:
        s.close()
    workdir = str(tmp_path / "w")
    env = dict(os.environ, SKIP_INSTALL="1", PYTHON=sys.executable, PRESET="smoke")
    path = os.path.join(LAUNCH, "multi_worker.sh")

    def both():
        procs = [
            subprocess.Popen(
                ["bash", path, hosts, str(i), workdir, "--iterations=1", "--noprogress"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        out = []
        for p in procs:
            try:
                out.append(p.communicate(timeout=480))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail("a worker hung")
        return [(p.returncode, err) for p, (_, err) in zip(procs, out)]

    first = both()
    assert [code for code, _ in first] == [0, 0], [err[-2000:] for _, err in first]
    chief, worker = first[0][1], first[1][1]
    assert "pipeline: done" in chief
    for stage in ("train_vae", "train_mdnrnn", "train_mdnrnn@1"):
        assert f"multi_worker: {stage}: waiting for the chief's data" in worker
    assert worker.count("mdnrnn: resuming from step") == 1  # M@1 continued the first pass's M on both
    steps = [json.loads(ln)["step"] for ln in open(os.path.join(workdir, "mdnrnn", "metrics.jsonl"))]
    assert steps == sorted(steps)

    again = both()
    assert [code for code, _ in again] == [0, 0], [err[-2000:] for _, err in again]
    assert again[1][1].count("nothing to do") == 3  # V, M and M@1, each without joining a collective


def test_the_dependency_list_lives_in_setup_cfg_only():
    import configparser

    sys.path.insert(0, LAUNCH)
    try:
        import requirements
    finally:
        sys.path.remove(LAUNCH)
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    listed = [x.strip() for x in cfg["options"]["install_requires"].splitlines() if x.strip()]
    assert requirements.requirements({"tensorflow"}) == [x for x in listed if not x.startswith("tensorflow")]
    assert requirements.requirements() == listed and len(listed) > 5
    # the installs that must keep a preinstalled TensorFlow take setup.cfg's list from launch/requirements.py
    nb = json.load(open(os.path.join(LAUNCH, "colab_tpu.ipynb")))
    texts = {
        "BUILD.md": open(os.path.join(ROOT, "BUILD.md")).read(),
        "tpu_vm.sh": open(os.path.join(LAUNCH, "tpu_vm.sh")).read(),
        "colab_tpu.ipynb": "".join("".join(c["source"]) for c in nb["cells"]),
    }
    for name, text in texts.items():
        assert "launch/requirements.py --without=tensorflow" in text, name
        for req in listed[1:]:  # (tensorflow itself is named in prose)
            assert req not in text, f"{name} lists {req} itself"
