"""The workdir of ``python -m wm.pipeline``: every path a run writes, named once.

::

    WORKDIR/
      rollouts/                    generate: the random-policy episodes (shards + manifest.json)
      vae/                         train_vae: V's run directory (config.json, metrics.jsonl, checkpoints/)
        export/                    V's SavedModel
      series/                      encode: V's latent series of rollouts/
      mdnrnn/                      train_mdnrnn: M's run directory
      dream.gif                    dream: M's dream beside the real episode
      controller/                  train_controller: C's run directory (CMA-ES state, metrics.jsonl)
        controller.npz             C's parameters
        evaluation.csv             evaluate: one line per episode
        evaluation.json            evaluate: the summary
        fidelity.json              wm.fidelity: how faithfully the dream ranks controllers
      iter_K/                      iteration K (--iterations)
        rollouts/                  collect@K: episodes played by controller/ with parameter noise
        series/                    encode@K
        dream_vs_real.gif          dream@K: the controller's real episode beside its dream
      videos/                      evaluate: episode GIFs
      report.html                  report
      pipeline.json                each stage's command, resolved config, status and wall time
      .pipeline/STAGE.json         a finished stage's marker (its config and upstream token)

The constants are the names relative to the workdir (for links in the report); :class:`Layout`
joins them to a workdir with ``tfrecords.runtime.fileio.join``, so a workdir can be local or gs://
(``Layout("")`` gives the relative paths).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrecords.runtime import fileio

ROLLOUTS = "rollouts"
VAE = "vae"
VAE_EXPORT = "export"  # inside vae/
SERIES = "series"
MDNRNN = "mdnrnn"
DREAM_GIF = "dream.gif"
CONTROLLER = "controller"
CONTROLLER_PARAMS = "controller.npz"  # inside controller/
EVALUATION_CSV = "evaluation.csv"  # inside controller/
EVALUATION_JSON = "evaluation.json"  # inside controller/
FIDELITY_JSON = "fidelity.json"  # inside controller/
DREAM_VS_REAL_GIF = "dream_vs_real.gif"  # inside iter_K/
VIDEOS = "videos"
REPORT = "report.html"
PIPELINE_JSON = "pipeline.json"
MARKERS = ".pipeline"


def iteration_dir(k: int) -> str:
    """``iter_K``: iteration K's directory, relative to the workdir."""
    return f"iter_{k}"


class _Path:
    """A path below a layout's root, read as an attribute: ``rollouts = _Path(ROLLOUTS)`` gives
    ``layout.rollouts`` == ``fileio.join(layout.root, "rollouts")``."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, layout: Any, owner: type | None = None) -> str:
        return fileio.join(layout.root, *self.parts)


@dataclasses.dataclass(frozen=True)
class IterationLayout:
    """The paths of one iteration, ``WORKDIR/iter_K/``."""

    root: str

    rollouts = _Path(ROLLOUTS)
    series = _Path(SERIES)
    dream_vs_real = _Path(DREAM_VS_REAL_GIF)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Every path a pipeline run writes under ``workdir`` (see the module docstring for the tree)."""

    workdir: str

    @property
    def root(self) -> str:
        """The workdir (the root every path below is joined to)."""
        return self.workdir

    def _join(self, *parts: str) -> str:
        return fileio.join(self.workdir, *parts)

    rollouts = _Path(ROLLOUTS)
    vae = _Path(VAE)
    vae_export = _Path(VAE, VAE_EXPORT)
    series = _Path(SERIES)
    mdnrnn = _Path(MDNRNN)
    dream_gif = _Path(DREAM_GIF)
    controller = _Path(CONTROLLER)
    controller_params = _Path(CONTROLLER, CONTROLLER_PARAMS)
    evaluation_csv = _Path(CONTROLLER, EVALUATION_CSV)
    evaluation_json = _Path(CONTROLLER, EVALUATION_JSON)
    fidelity_json = _Path(CONTROLLER, FIDELITY_JSON)
    videos = _Path(VIDEOS)
    report = _Path(REPORT)
    pipeline_json = _Path(PIPELINE_JSON)
    markers = _Path(MARKERS)

    def marker(self, stage: str) -> str:
        """``.pipeline/STAGE.json``: the marker of a finished stage (``train_mdnrnn@2`` included)."""
        return self._join(MARKERS, f"{stage}.json")

    def iteration(self, k: int) -> IterationLayout:
        """The paths of iteration ``k`` (1-based), ``iter_K/``."""
        return IterationLayout(self._join(iteration_dir(k)))

    def series_through(self, k: int) -> list[str]:
        """M's training series after iteration ``k``: ``series/`` and every ``iter_I/series`` for I <= k."""
        return [self.series] + [self.iteration(i).series for i in range(1, k + 1)]
