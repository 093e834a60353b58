"""Imports run only down the layers, and binaries never import binaries (the pipeline excepted).

    tfrecords.runtime < tfrecords < data_gen < wm.core < wm.models < wm.agents < wm.training < wm/*.py (binaries)

Every import counts, including the ones inside functions.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfrecords", "data_gen", "wm")
LAYERS = ["tfrecords.runtime", "tfrecords", "data_gen", "wm.core", "wm.models", "wm.agents", "wm.training", "wm"]
RUNS_THE_STAGES = {"wm.pipeline"}  # the one binary that may import other binaries


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """Project modules imported by a file, resolved to the modules that exist (``from wm import vae`` -> wm.vae)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _is_binary(path: pathlib.Path) -> bool:
    """A module with a top-level ``if __name__ == "__main__":``."""
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and getattr(node.test.left, "id", "") == "__name__"
        ):
            return True
    return False


def _layer(module: str) -> int:
    """Index in LAYERS of the most specific layer holding ``module``."""
    best = -1
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            if best < 0 or len(layer) > len(LAYERS[best]):
                best = i
    assert best >= 0, module
    return best


def test_the_layout_is_what_the_rules_describe():
    assert {
        "tfrecords.runtime.cli",
        "tfrecords.runtime.fileio",
        "data_gen.envpool",
        "wm.core.workdir",
        "wm.training.loop",
        "wm.training.cma_es",
        "wm.agents.loading",
        "wm.models.loading",
        "wm.train_vae",
        "wm.pipeline",
    } <= set(MODULES)
    # every module directly in wm/ is a binary; library code lives in the subpackages
    for name, path in MODULES.items():
        if name.count(".") == 1 and name.startswith("wm.") and path.name != "__init__.py":
            assert _is_binary(path), f"{name} sits with the binaries but is not one"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_only_down(module):
    here = _layer(module)
    up = sorted(m for m in _imports(MODULES[module]) if _layer(m) > here)
    assert not up, f"{module} (layer {LAYERS[here]}) imports from above: {up}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_binaries_are_not_imported_by_other_modules(module):
    if module in RUNS_THE_STAGES:
        return
    binaries = sorted(m for m in _imports(MODULES[module]) if m != module and _is_binary(MODULES[m]))
    assert not binaries, f"{module} imports binaries {binaries}; move the code it needs into a library module"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wm import train_vae\n    from wm.agents import loading\n")
    assert {"wm.train_vae", "wm.agents.loading"} <= _imports(bad)
    assert (
        _layer("wm.train_vae")
        > _layer("wm.agents.loading")
        > _layer("wm.core.workdir")
        > _layer("tfrecords.reader")
        > _layer("tfrecords.runtime.cli")
    )
