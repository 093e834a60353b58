"""Export a trained agent (V's encoder + M's LSTM + C) as one TensorFlow SavedModel.

    python -m wm.export --agent=runs/quickstart/controller --out=runs/quickstart/agent_savedmodel

``--agent`` is what ``wm.evaluate --agent`` takes (a CMA-ES ``wm.train_controller`` workdir or a
``wm.train_ppo`` one; V and M are the workdirs its config.json names). The SavedModel loads with
``tf.saved_model.load(OUT)`` and nothing from this project:

    agent = tf.saved_model.load(OUT)
    state = agent.initial_state(1)                         # (h, c), float32 [1, H] each
    actions, state = agent.step(observations[None], state)  # raw uint8 [N, 96, 96, 3] -> float32 [N, 3]

``step`` crops and resizes the raw frames itself (the same bytes as the rollouts' preprocessing)
and acts as ``wm.evaluate`` plays the agent. ``--inference_precision`` is V's encoder's (default:
the agent's, resolved on this machine as ``wm.evaluate`` resolves it; ``float32`` computes the same
on every machine). OUT is written under a temporary name and renamed at the end; an existing OUT
is refused unless ``--overwrite``. The library part is :mod:`wm.agents.export`.
"""

from __future__ import annotations

import dataclasses
import sys

from tfrecords.runtime.cli import check, option, run_binary
from wm.agents import export, pretrained
from wm.core import distribute


@dataclasses.dataclass
class ExportConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.export``)."""

    agent: str = option(
        help="A train_controller (or train_ppo) workdir, as wm.evaluate --agent takes it.", required=True
    )
    out: str = option(help="The SavedModel directory to write (must not exist, unless --overwrite).", required=True)
    inference_precision: str = option(
        "", help="V's encoder in the SavedModel (default: the agent's).", choices=distribute.INFERENCE_PRECISIONS
    )
    overwrite: bool = option(
        False, help="Replace an existing --out (the old one is deleted once the new one is in place)."
    )


def run(cfg: ExportConfig) -> dict:
    """Exports the agent; returns what the SavedModel's ``assets.extra/agent.json`` records."""
    check(cfg)
    cfg = dataclasses.replace(cfg, agent=pretrained.resolve(cfg.agent))
    export.check_out(cfg.out, cfg.overwrite)  # before loading anything
    info = export.export_agent(cfg.agent, cfg.out, cfg.inference_precision, cfg.overwrite)
    print(
        f"export: {info['algorithm']} agent {cfg.agent} (V in {info['encoder_compute_dtype']}) -> SavedModel {cfg.out}",
        file=sys.stderr,
    )
    return info


if __name__ == "__main__":
    run_binary(ExportConfig, run, "export")
