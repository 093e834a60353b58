"""Writes a trained CMA-ES agent as the package's shipped agent (``wm/pretrained``, ``--agent=pretrained``).

    python launch/package_pretrained.py --agent=runs/long/controller --out=wm/pretrained \
        --command="python -m wm.pipeline --workdir=runs/long --preset=long" --evaluation=runs/long/eval100.json

V and M go in as weights-only checkpoints (no optimizer slots), C's config names them relative to itself, and
``source.json`` keeps the command that trained the agent and ``--evaluation``'s summary (``wm.evaluate``'s JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os

# a script, not ``python -m``: TensorFlow's C++ start-up lines filtered (tfrecords.runtime.native_logs)
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

from tfrecords.runtime import fileio  # noqa: E402
from tfrecords.runtime.cli import UsageError, check, option, run_binary  # noqa: E402
from wm.agents import pretrained  # noqa: E402


@dataclasses.dataclass
class PackageConfig:
    """The flags of ``launch/package_pretrained.py``."""

    agent: str = option(help="A train_controller (CMA-ES) workdir.", required=True)
    out: str = option(pretrained.ROOT, help="Where the shipped copy goes (must not exist yet).")
    command: str = option("", help="The command that trained the agent (kept in source.json).")
    evaluation: str = option("", help="wm.evaluate's JSON summary of the agent (kept in source.json).")


def run(cfg: PackageConfig) -> dict:
    """Packages the agent; returns the bytes written per part."""
    check(cfg)
    evaluation = fileio.read_json(cfg.evaluation) if cfg.evaluation else None
    if cfg.evaluation and evaluation is None:
        raise UsageError(f"--evaluation={cfg.evaluation} does not exist")
    sizes = pretrained.package(cfg.agent, cfg.out, {"command": cfg.command, "evaluation": evaluation})
    print(f"package_pretrained: {cfg.out}: {json.dumps(sizes)} bytes ({sum(sizes.values()) / 2**20:.1f} MB)")
    return sizes


if __name__ == "__main__":
    run_binary(PackageConfig, run, "package_pretrained")
