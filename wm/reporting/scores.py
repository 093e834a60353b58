"""The report's "Score" (evaluation against the paper) and "Controller training (CMA-ES)" sections."""

from __future__ import annotations

import csv
import io

from wm.core import layout
from wm.core.workdir import METRICS_NAME
from wm.reporting.files import exists, join, read_bytes, read_json, read_jsonl
from wm.reporting.html import Page, duration, esc, fmt, img
from wm.reporting.plots import PAPER_SCORE, SOLVED, plot_controller, plot_fidelity, plot_returns_histogram
from wm.training.cma_state import REAL_STEP_KEYS


def add_score(page: Page, workdir: str) -> None:
    """The evaluation's mean ± std next to the paper's, and a histogram of the returns."""
    paths = layout.Layout(workdir)
    summary_path, csv_path = paths.evaluation_json, paths.evaluation_csv
    body = []
    summary = read_json(summary_path) if exists(summary_path) else None
    returns: list[float] = []
    if exists(csv_path):
        rows = list(csv.DictReader(io.StringIO(read_bytes(csv_path).decode("utf-8"))))
        returns = [float(r["return"]) for r in rows if r.get("return") not in (None, "")]
    if summary is None and returns:  # a CSV without its summary: compute the same numbers
        import numpy as np

        a = np.asarray(returns)
        summary = {
            "mean": float(a.mean()),
            "std": float(a.std()),
            "episodes": len(a),
            "min": float(a.min()),
            "max": float(a.max()),
        }
    if summary is None:
        body.append(
            page.miss(
                "evaluation results (controller/evaluation.json, controller/evaluation.csv): the "
                "evaluate stage has not run"
            )
        )
    else:
        paper_m, paper_s = PAPER_SCORE
        body.append(
            f'<p><span class="big">{fmt(summary.get("mean"))} ± {fmt(summary.get("std"))}</span> '
            f"over {esc(summary.get('episodes', len(returns)))} tracks "
            f"(paper: {paper_m:.0f} ± {paper_s:.0f} over 100; solved means ≥ {SOLVED:.0f}).</p>"
        )
        body.append("<table><tr><th></th><th>mean ± std</th><th>episodes</th><th>min</th><th>max</th></tr>")
        body.append(
            f'<tr><th>this run</th><td class="num">{fmt(summary.get("mean"))} ± '
            f"{fmt(summary.get('std'))}</td>"
            f'<td class="num">{esc(summary.get("episodes", len(returns)))}</td>'
            f'<td class="num">{fmt(summary.get("min"))}</td>'
            f'<td class="num">{fmt(summary.get("max"))}</td></tr>'
        )
        body.append(
            f'<tr><th>paper (Ha &amp; Schmidhuber 2018)</th><td class="num">{paper_m:.0f} ± {paper_s:.0f}</td>'
            '<td class="num">100</td><td class="num">–</td><td class="num">–</td></tr></table>'
        )
        extra = [
            f"{k.replace('_', ' ')}: {fmt(summary[k], 0)}"
            for k in ("env_steps", "env_steps_per_sec")
            if isinstance(summary.get(k), (int, float))
        ]
        if isinstance(summary.get("wall_time"), (int, float)):
            extra.append(f"wall time: {duration(summary['wall_time'])}")
        if summary.get("env_id"):
            extra.insert(0, f"environment: {summary['env_id']}")
        if extra:
            body.append(f'<p class="sub">{esc("; ".join(extra))}</p>')
        if returns:
            body.append(
                f"<figure>{img(plot_returns_histogram(returns), 'image/png', 'histogram of evaluation returns')}"
                "<figcaption>Returns of the evaluation episodes.</figcaption></figure>"
            )
        else:
            body.append(page.miss("per-episode returns (controller/evaluation.csv) for the histogram"))
    page.section("Score", "score", "\n".join(body))


def add_controller(page: Page, workdir: str) -> None:
    """CMA-ES's training curve and what it cost (generations, environment and dream steps, time)."""
    path = join(layout.Layout(workdir).controller, METRICS_NAME)
    records = (
        [r for r in read_jsonl(path) if all(k in r for k in ("generation", "mean", "max", "min"))]
        if exists(path)
        else []
    )
    if not records:
        page.section(
            "Controller training (CMA-ES)",
            "controller",
            page.miss("controller training curve (controller/metrics.jsonl): the train_controller stage has not run"),
        )
        return
    last = records[-1]
    steps = sum(int(r.get(k, 0)) for r in records for k in REAL_STEP_KEYS)
    dream_steps = sum(r.get("dream_steps", 0) for r in records)
    wall = sum(r.get("wall_time", 0.0) for r in records)
    best = max(records, key=lambda r: r["max"])
    facts = [
        f"{len(records)} generations" + (" in the dream" if dream_steps else ""),
        f"{steps:,} environment steps" + (f" and {dream_steps:,} dream steps" if dream_steps else ""),
        f"{duration(wall)} of training",
        f"best member {best['max']:.1f} (generation {best['generation']})",
        f"final population mean {last['mean']:.1f}",
    ]
    if last.get("best_eval") is not None:
        facts.append(f"best eval {last['best_eval']:.1f}")
    if last.get("sigma") is not None:
        facts.append(f"final σ {last['sigma']:.3g}")
    body = (
        f"<p>{esc('; '.join(facts))}.</p>"
        f"<figure>{img(plot_controller(records), 'image/png', 'controller training curve')}"
        "<figcaption>Return per generation: the population's mean (line), max and min (band); red points "
        "evaluate the CMA-ES mean on tracks the population never sees.</figcaption></figure>"
    )
    page.section("Controller training (CMA-ES)", "controller", body + _fidelity(workdir))


def _fidelity(workdir: str) -> str:
    """The dream's fidelity gauge (``wm.fidelity``'s JSON beside the controller), when it has been run."""
    path = layout.Layout(workdir).fidelity_json
    if not exists(path):
        return ""
    gauge = read_json(path)
    rows, rho = gauge["controllers"], float(gauge["spearman_rho"])
    return (
        f"<p>Dream fidelity (<code>python -m wm.fidelity</code>): Spearman rho {rho:.2f} over {len(rows)} "
        f"controllers, mean dream - real gap {fmt(gauge['mean_gap'])}, {gauge['episodes']} tracks and dream "
        f"worlds each.</p><figure>{img(plot_fidelity(rows, rho), 'image/png', 'dream fidelity scatter')}"
        "<figcaption>Each controller's mean return in M's dream against reality: a dream that ranks "
        "controllers as reality does puts them in the same order on both axes.</figcaption></figure>"
    )
