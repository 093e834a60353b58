"""One self-contained HTML page summarizing a pipeline run.

    python -m wm.report --workdir=runs/quickstart

Reads what ``python -m wm.pipeline`` left in ``WORKDIR`` (``rollouts/``, ``vae/``, ``mdnrnn/``,
``dream.gif``, ``controller/``, ``videos/``, ``pipeline.json``) and writes
``WORKDIR/report.html``: the evaluation scores next to the paper's, a histogram of the returns,
the controller's training curve, V's reconstructions next to their inputs, the V and M loss
curves, the dream next to the real episode, the evaluation videos, and each stage's wall time
and exact command. Images are embedded as base64 data URIs, so the file can be mailed or copied
on its own (GIFs larger than ``wm.reporting.files.EMBED_LIMIT`` are linked instead). Whatever is
missing (a partial run, the smoke preset) is named at the top and in its section; the page is
built regardless. The page is built by ``wm.reporting`` (``build.build_report``).
"""

from __future__ import annotations

import dataclasses
import sys

from tfrecords.runtime.cli import check, option, run_binary
from wm.reporting.build import build_report


@dataclasses.dataclass
class ReportConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.report``)."""

    workdir: str = option(help="A wm.pipeline workdir (local or gs://).", required=True)


def run(cfg: ReportConfig) -> str:
    """Builds the report for ``cfg.workdir``; returns the path of report.html."""
    check(cfg)
    path = build_report(cfg.workdir)
    print(f"report: {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    run_binary(ReportConfig, run, "report", lock=False)  # it only reads, and replaces report.html atomically
