"""The pipeline's presets, one module each: ``python -m wm.pipeline --workdir=W --preset=NAME``.

Each module's docstring gives its command, what it costs and what it reached (measured, dated);
its ``PRESET`` maps a stage (``generate``, ..., ``collect``, ``iteration``, ``pipeline``) to that
stage's flag values, and its ``SMOKE`` is the same at toy sizes, for tests. ``--set=STAGE.FLAG=VALUE``
overrides any of them. A preset derived from another (``dream`` from ``quickstart``) names only
what it changes (:func:`wm.presets.common.derived`).
"""

from __future__ import annotations

from wm.presets import dream, dream_only, long, paper, quickstart, smoke
from wm.presets.common import Preset

MODULES = {
    "smoke": smoke,
    "quickstart": quickstart,
    "paper": paper,
    "dream": dream,
    "dream_only": dream_only,
    "long": long,
}
PRESETS: dict[str, Preset] = {name: module.PRESET for name, module in MODULES.items()}
