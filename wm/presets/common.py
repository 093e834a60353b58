"""What the preset modules share: the type of a preset, deriving one preset from another, smoke sizes."""

from __future__ import annotations

from typing import Any

# stage ("generate", "train_vae", ..., "collect", "iteration", "pipeline") -> that stage's flag values
Preset = dict[str, dict[str, Any]]


def derived(base: Preset, changes: Preset) -> Preset:
    """Preset ``base`` with some stages' settings changed (or added); ``base`` is left as it is."""
    return {stage: {**base.get(stage, {}), **changes.get(stage, {})} for stage in {**base, **changes}}


def cpu_bf16() -> bool:
    """Whether this machine's CPU has bfloat16 units (then V trains ~1.7x faster in bfloat16)."""
    from wm.core import distribute

    return distribute.cpu_has_bfloat16()
