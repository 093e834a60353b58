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
DREAM_VS_REAL_GIF = "dream_vs_real.gif"  # inside iter_K/
VIDEOS = "videos"
REPORT = "report.html"
PIPELINE_JSON = "pipeline.json"
MARKERS = ".pipeline"


def iteration_dir(k: int) -> str:
    """``iter_K``: iteration K's directory, relative to the workdir."""
    return f"iter_{k}"


@dataclasses.dataclass(frozen=True)
class IterationLayout:
    """The paths of one iteration, ``WORKDIR/iter_K/``."""

    root: str

    @property
    def rollouts(self) -> str:
        return fileio.join(self.root, ROLLOUTS)

    @property
    def series(self) -> str:
        return fileio.join(self.root, SERIES)

    @property
    def dream_vs_real(self) -> str:
        return fileio.join(self.root, DREAM_VS_REAL_GIF)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Every path a pipeline run writes under ``workdir`` (see the module docstring for the tree)."""

    workdir: str

    def _join(self, *parts: str) -> str:
        return fileio.join(self.workdir, *parts)

    @property
    def rollouts(self) -> str:
        return self._join(ROLLOUTS)

    @property
    def vae(self) -> str:
        return self._join(VAE)

    @property
    def vae_export(self) -> str:
        return self._join(VAE, VAE_EXPORT)

    @property
    def series(self) -> str:
        return self._join(SERIES)

    @property
    def mdnrnn(self) -> str:
        return self._join(MDNRNN)

    @property
    def dream_gif(self) -> str:
        return self._join(DREAM_GIF)

    @property
    def controller(self) -> str:
        return self._join(CONTROLLER)

    @property
    def controller_params(self) -> str:
        return self._join(CONTROLLER, CONTROLLER_PARAMS)

    @property
    def evaluation_csv(self) -> str:
        return self._join(CONTROLLER, EVALUATION_CSV)

    @property
    def evaluation_json(self) -> str:
        return self._join(CONTROLLER, EVALUATION_JSON)

    @property
    def videos(self) -> str:
        return self._join(VIDEOS)

    @property
    def report(self) -> str:
        return self._join(REPORT)

    @property
    def pipeline_json(self) -> str:
        return self._join(PIPELINE_JSON)

    @property
    def markers(self) -> str:
        return self._join(MARKERS)

    def marker(self, stage: str) -> str:
        """``.pipeline/STAGE.json``: the marker of a finished stage (``train_mdnrnn@2`` included)."""
        return self._join(MARKERS, f"{stage}.json")

    def iteration(self, k: int) -> IterationLayout:
        """The paths of iteration ``k`` (1-based), ``iter_K/``."""
        return IterationLayout(self._join(iteration_dir(k)))

    def series_through(self, k: int) -> list[str]:
        """M's training series after iteration ``k``: ``series/`` and every ``iter_I/series`` for I <= k."""
        return [self.series] + [self.iteration(i).series for i in range(1, k + 1)]
