"""launch/ray_cluster.yaml, checked without a cloud: it parses, has what Ray's cluster launcher needs,
validates against the schema the installed Ray ships (and Ray's own config preparation, as ``ray up``
does it before contacting the cloud), copies this checkout to every node and installs it with the
``ray`` extra. The Ray section of launch/README.md names only flags its binaries accept (the parser
and helpers of tests/test_cli_contract.py, run on that section).
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re

import pytest
import test_cli_contract as cli  # tests/ is on sys.path: it holds the rootdir conftest.py
import yaml

from wm import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "launch", "ray_cluster.yaml")
LAUNCH_README = os.path.join(ROOT, "launch", "README.md")
SECTION = "## Ray cluster (CPU work past one machine)"
RAY_STAGES = ("generate", "train_controller", "evaluate")  # what the paper preset runs on Ray
RAY_BINARIES = ("data_gen.generate", "wm.train_controller", "wm.evaluate", "wm.collect")
# `pip install -e PATH[EXTRAS]`, PATH quoted or not
_PIP_EDITABLE = re.compile(r"""pip install (?:-\S+ )*-e (["']?)([^\s"'\[]+)\[([\w,-]+)\]\1""")


@pytest.fixture(scope="module")
def config() -> dict:
    with open(CONFIG, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _extras() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    return dict(cfg["options.extras_require"])


def _installs(commands: list[str]) -> list[tuple[str, set[str]]]:
    """(path, extras) of every ``pip install -e PATH[EXTRAS]`` in ``commands``."""
    found = []
    for cmd in commands:
        for m in _PIP_EDITABLE.finditer(cmd):
            quote, path, extras = m.groups()
            assert not (quote and path.startswith("~")), f"~ does not expand inside quotes: {cmd!r}"
            found.append((re.sub(r"^(\$HOME|\$\{HOME\})/", "~/", path), set(extras.split(","))))
    return found


def test_the_header_says_it_is_untested_on_a_cloud():
    with open(CONFIG, encoding="utf-8") as f:
        header = "".join(ln for ln in f if ln.startswith("#"))
    assert "UNTESTED ON A REAL CLOUD" in header and "test_ray_cluster_config.py" in header


def test_node_types(config):
    for key in ("cluster_name", "provider", "auth", "max_workers", "available_node_types", "head_node_type"):
        assert key in config, key
    provider = config["provider"]
    assert provider["type"] == "gcp" and {"region", "availability_zone", "project_id"} <= set(provider)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for name, t in types.items():
        assert {"resources", "node_config"} <= set(t) and "machineType" in t["node_config"], name
    head = types[config["head_node_type"]]
    # the accelerator host is the head (the pipeline trains V and M in its own process); no actor lands on it
    assert head["resources"].get("GPU", 0) >= 1 and head["resources"].get("CPU") == 0
    cpu = [t for n, t in types.items() if n != config["head_node_type"] and t["resources"].get("CPU", 0) > 0]
    assert cpu, "no CPU worker node type"
    for t in cpu:
        # actor stages use the CPUs that are up when they start: the CPU nodes are held up
        assert 0 < t["min_workers"] == t["max_workers"] <= config["max_workers"]
        assert not t["resources"].get("GPU")


def test_setup_copies_the_checkout_and_installs_it_with_the_ray_extra(config):
    mounts = config["file_mounts"]
    checkout = [remote for remote, local in mounts.items() if os.path.abspath(os.path.join(ROOT, local)) == ROOT]
    assert len(checkout) == 1, f"file_mounts must copy the checkout (`ray up` runs from its root): {mounts}"
    remote = checkout[0]
    extras = _extras()
    everywhere = _installs(config["setup_commands"])
    assert any(path == remote and "ray" in ex for path, ex in everywhere), config["setup_commands"]
    head = _installs(config.get("head_setup_commands", []))
    assert any(path == remote and {"ray", "gpu"} <= ex for path, ex in head), config.get("head_setup_commands")
    for _, ex in everywhere + head:
        assert ex <= set(extras), f"extras {sorted(ex - set(extras))} are not in setup.cfg"
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert cfg["metadata"]["name"] == "world-models"
    # rsync_exclude must leave the packages and the build files in the copy
    keep = [*sorted(cli.PACKAGES), "setup.cfg", "pyproject.toml", "README.md"]
    for pattern in config.get("rsync_exclude", []):
        hit = [k for k in keep if fnmatch.fnmatch(k, pattern) or fnmatch.fnmatch(k, pattern.lstrip("*/"))]
        assert not hit, f"rsync_exclude {pattern!r} drops {hit}"


def test_validates_against_rays_schema(config):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config  # what `ray up` runs first

    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.validate(config, schema)  # unknown keys are errors: the schema forbids additional properties
    # Ray's defaults filled in, then validated, as `ray up` does before it contacts the cloud (a
    # private API: if a Ray release moves it, this test fails and needs the new place)
    validate_config(prepare_config(config))


def _section() -> str:
    with open(LAUNCH_README, encoding="utf-8") as f:
        text = f.read()
    assert SECTION in text, f"launch/README.md has no section {SECTION!r}"
    body = text[text.index(SECTION) :]
    nxt = re.search(r"^## ", body[len(SECTION) :], re.M)
    return body[: len(SECTION) + nxt.start()] if nxt else body


def test_the_head_s_dashboard_and_jobs_api_listen_on_loopback_only(config):
    from ray.autoscaler._private.util import prepare_config

    head = " ".join(prepare_config(config)["head_start_ray_commands"])  # what `ray up` would run
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "--head" in head and "--port=6379" in head and "--autoscaling-config=" in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in workers and "0.0.0.0" not in workers
    with open(LAUNCH_README, encoding="utf-8") as f:
        section = f.read().split(SECTION, 1)[1].split("\n## ", 1)[0]
    assert "ray dashboard launch/ray_cluster.yaml" in section and "CVE-2023-48022" in section


def test_the_section_runs_the_paper_preset_with_ray_stages():
    contract = cli.parse_readme(_section())
    assert {"preset", "workdir", "set"} <= contract.flags["wm.pipeline"]
    overrides = {(s, f) for s, f, _ in contract.overrides}
    assert {(s, "ray_address") for s in RAY_STAGES} <= overrides
    assert {(s, "workers") for s in RAY_STAGES} <= overrides
    assert "ray up launch/ray_cluster.yaml" in _section() and "ray down launch/ray_cluster.yaml" in _section()


@pytest.fixture(scope="module")
def accepted() -> dict[str, set[str]]:
    """module -> the flags its ``--helpfull`` lists, for every binary the section or its overrides name."""
    contract = cli.parse_readme(_section())
    stage_modules = {name: st.module for name, st in pipeline._stages().items()}
    modules = set(contract.flags) | {stage_modules[s] for s, _, _ in contract.overrides if s in stage_modules}
    modules |= set(RAY_BINARIES)
    out = {}
    for module in sorted(modules):
        _, proc = cli._help(module)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, (module, proc.stderr[-1500:])
        out[module] = set(cli._HELP_FLAG.findall(proc.stdout))
    return out


@pytest.mark.slow
def test_every_flag_in_the_section_is_accepted(accepted):
    contract = cli.parse_readme(_section())
    stage_modules = {name: st.module for name, st in pipeline._stages().items()}
    problems = [
        f"python -m {m}: the section documents --{f}, which --helpfull does not list"
        for m, names in sorted(contract.flags.items())
        for f in sorted(names)
        if not cli._accepts(accepted[m], f)
    ]
    for flag, candidates, where in contract.one_of:
        if not any(cli._accepts(accepted[m], flag) for m in candidates):
            problems.append(f"--{flag} is a flag of none of {', '.join(candidates)} (in: {where!r})")
    for stage, flag, where in contract.overrides:
        if stage not in stage_modules:
            problems.append(f"--set={stage}.{flag}: the pipeline has no stage {stage!r} (in: {where!r})")
        elif not cli._accepts(accepted[stage_modules[stage]], flag):
            problems.append(f"--set={stage}.{flag}: {stage_modules[stage]} has no --{flag} (in: {where!r})")
    for module in RAY_BINARIES:  # the section says these take --ray_address
        if not cli._accepts(accepted[module], "ray_address"):
            problems.append(f"python -m {module} has no --ray_address")
    assert not problems, "\n".join(problems)
