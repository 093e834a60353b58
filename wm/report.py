"""One self-contained HTML page summarizing a pipeline run.

    python -m wm.report --workdir=runs/quickstart

Reads what ``python -m wm.pipeline`` left in ``WORKDIR`` (``rollouts/``, ``vae/``, ``mdnrnn/``,
``dream.gif``, ``controller/``, ``videos/``, ``pipeline.json``) and writes
``WORKDIR/report.html``: the evaluation scores next to the paper's, a histogram of the returns,
the controller's training curve, V's reconstructions next to their inputs, the V and M loss
curves, the dream next to the real episode, the evaluation videos, and each stage's wall time
and exact command. Images are embedded as base64 data URIs, so the file can be mailed or copied
on its own (GIFs larger than ``EMBED_LIMIT`` are linked instead). Whatever is missing (a partial
run, the smoke preset) is named at the top and in its section; the page is built regardless.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import html
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.core.workdir import read_metrics

REPORT_NAME = "report.html"
PAPER_SCORE = (906.0, 21.0)  # Ha & Schmidhuber (2018), CarRacing-v0, 100 random tracks
SOLVED = 900.0  # CarRacing counts as solved at an average of 900 over 100 tracks
EMBED_LIMIT = 16 << 20  # GIFs above this many bytes are linked, not embedded
MAX_VIDEOS = 3
RECON_FRAMES = 8


@dataclasses.dataclass
class ReportConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.report``)."""

    workdir: str = option(help="A wm.pipeline workdir (local or gs://).", required=True)


# ---------------------------------------------------------------- file access (local or gs://)


_join = fileio.join
_exists = fileio.exists


def _read_bytes(path: str) -> bytes:
    data = fileio.read_bytes(path)
    if data is None:
        raise FileNotFoundError(path)
    return data


def _read_json(path: str) -> Any:
    return json.loads(_read_bytes(path).decode("utf-8"))


def _read_jsonl(path: str) -> list[dict]:
    """A metrics.jsonl file's complete entries (``path`` is WORKDIR/metrics.jsonl)."""
    return read_metrics(fileio.dirname(path))


# ---------------------------------------------------------------- HTML helpers

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: Menlo, Consolas, monospace; font-size: 0.85em; overflow-wrap: anywhere; }
th, td.num, td.nowrap, code span { white-space: nowrap; }
.missing { background: #fff6e0; border: 1px solid #f0c36d; padding: 0.6em 1em; border-radius: 4px; }
.note { color: #8a6d3b; font-style: italic; }
.big { font-size: 1.6em; font-weight: 600; }
.done { color: #2a7d2a; } .failed { color: #c0392b; font-weight: 600; }
.running { color: #1f6fb2; } .skipped { color: #777; }
img { max-width: 100%; height: auto; } img.pixel { image-rendering: pixelated; min-width: 384px; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.9em; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, mime: str, alt: str, css: str = "", width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    c = f' class="{css}"' if css else ""
    return f'<img src="{_data_uri(data, mime)}" alt="{_e(alt)}"{c}{w}>'


def _fmt(x: Any, digits: int = 1) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return "–" if isinstance(x, float) and not math.isfinite(x) else f"{x:,.{digits}f}"
    return "–" if x is None else str(x)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


class _Page:
    """Sections of the page, and the list of what was missing."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.missing: list[str] = []

    def miss(self, what: str) -> str:
        """Records a missing piece; returns the note to show in its section."""
        self.missing.append(what)
        return f'<p class="note">Missing: {_e(what)}</p>'

    def section(self, title: str, anchor: str, body: str) -> None:
        self.sections.append(f'<section id="{anchor}"><h2>{_e(title)}</h2>\n{body}\n</section>')


# ---------------------------------------------------------------- plots (matplotlib, Agg)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    return fig


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_controller(records: list[dict]) -> bytes:
    """PNG of the CMA-ES population's mean, max and min return per generation, with eval points.

    A run whose M can dream (``dream_eval_mean`` in its records, in the dream or in the real
    environment) also shows the CMA-ES mean's return in the dream beside its real return: the gap
    between the two is what C exploits in M when it trains in the dream.
    """
    gens = [r["generation"] for r in records]
    fig = _figure(8, 3.6)
    ax = fig.add_subplot()
    ax.fill_between(
        gens, [r["min"] for r in records], [r["max"] for r in records], color="#1f77b4", alpha=0.15, label="min–max"
    )
    ax.plot(gens, [r["max"] for r in records], color="#1f77b4", lw=1, alpha=0.7, label="max")
    ax.plot(gens, [r["mean"] for r in records], color="#1f77b4", lw=2, label="mean")
    ax.plot(gens, [r["min"] for r in records], color="#1f77b4", lw=1, ls=":", alpha=0.7, label="min")
    ev = [(r["generation"], r["eval_mean"]) for r in records if r.get("eval_mean") is not None]
    if ev:
        ax.plot(*zip(*ev), "o-", color="#d62728", ms=4, lw=1, label="eval (mean params)")
    dream_ev = [(r["generation"], r["dream_eval_mean"]) for r in records if r.get("dream_eval_mean") is not None]
    if dream_ev:
        ax.plot(*zip(*dream_ev), "s--", color="#9467bd", ms=4, lw=1, label="mean params in the dream")
    top = max(r["max"] for r in records)
    if top > 0.5 * SOLVED:
        ax.axhline(SOLVED, color="#2ca02c", ls="--", lw=1, label=f"solved ({SOLVED:.0f})")
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_ylabel("return (mean over trials)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def _loss_terms(rows: list[dict], preferred: tuple[str, ...]) -> list[str]:
    present = [k for k in preferred if any(isinstance(r.get(k), (int, float)) for r in rows)]
    loss = [r.get("loss") for r in rows]
    # Drop a term that is the loss itself (M's loss is z_nll when it predicts nothing else).
    return [k for k in present if k == "loss" or [r.get(k) for r in rows] != loss]


def plot_losses(rows: list[dict], preferred: tuple[str, ...]) -> bytes | None:
    """PNG with one panel per loss term, train and eval curves against the step; None if no data."""
    terms = _loss_terms(rows, preferred)
    if not terms:
        return None
    fig = _figure(3.4 * len(terms), 2.8)
    for i, term in enumerate(terms):
        ax = fig.add_subplot(1, len(terms), i + 1)
        for split, style in (
            ("train", dict(color="#1f77b4", lw=1.5)),
            ("eval", dict(color="#d62728", marker="o", ms=4, lw=1)),
        ):
            pts = [
                (r["step"], r[term]) for r in rows if r.get("split") == split and isinstance(r.get(term), (int, float))
            ]
            if pts:
                ax.plot(*zip(*pts), label=split, **style)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(_integer_locator())
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_returns_histogram(returns: list[float]) -> bytes:
    """PNG histogram of evaluation returns, with the mean (and the paper's score when in range)."""
    import numpy as np

    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    ax.hist(returns, bins=min(30, max(5, len(returns) // 3)), color="#1f77b4", alpha=0.8, edgecolor="white")
    mean = float(np.mean(returns))
    ax.axvline(mean, color="#d62728", lw=2, label=f"mean {mean:.1f}")
    if max(returns) > 0.5 * PAPER_SCORE[0]:
        ax.axvline(PAPER_SCORE[0], color="#2ca02c", ls="--", lw=1.5, label=f"paper {PAPER_SCORE[0]:.0f}")
    ax.set_xlabel("return")
    ax.set_ylabel("episodes")
    ax.yaxis.set_major_locator(_integer_locator())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_reconstructions(inputs, recons) -> bytes:
    """PNG grid: input frames on the top row, V's reconstructions below."""
    n = len(inputs)
    fig = _figure(1.3 * n, 3.0)
    for row, (images, label) in enumerate(((inputs, "input"), (recons, "reconstruction"))):
        for i, im in enumerate(images):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    return _png(fig)


# ---------------------------------------------------------------- sections


def _header(workdir: str, pipeline: dict | None) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    bits = [f"workdir <code>{_e(workdir)}</code>"]
    if pipeline:
        bits.append(f"preset <b>{_e(pipeline.get('preset', '?'))}</b>")
        if pipeline.get("started"):
            bits.append(f"started {_e(pipeline['started'])}")
    bits.append(f"report built {_e(now)}")
    return '<h1>World Models run report</h1>\n<p class="sub">' + " · ".join(bits) + "</p>"


def _scores(page: _Page, workdir: str) -> None:
    ctl = _join(workdir, "controller")
    summary_path, csv_path = _join(ctl, "evaluation.json"), _join(ctl, "evaluation.csv")
    body = []
    summary = _read_json(summary_path) if _exists(summary_path) else None
    returns: list[float] = []
    if _exists(csv_path):
        rows = list(csv.DictReader(io.StringIO(_read_bytes(csv_path).decode("utf-8"))))
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
            f'<p><span class="big">{_fmt(summary.get("mean"))} ± {_fmt(summary.get("std"))}</span> '
            f"over {_e(summary.get('episodes', len(returns)))} tracks "
            f"(paper: {paper_m:.0f} ± {paper_s:.0f} over 100; solved means ≥ {SOLVED:.0f}).</p>"
        )
        body.append("<table><tr><th></th><th>mean ± std</th><th>episodes</th><th>min</th><th>max</th></tr>")
        body.append(
            f'<tr><th>this run</th><td class="num">{_fmt(summary.get("mean"))} ± '
            f"{_fmt(summary.get('std'))}</td>"
            f'<td class="num">{_e(summary.get("episodes", len(returns)))}</td>'
            f'<td class="num">{_fmt(summary.get("min"))}</td>'
            f'<td class="num">{_fmt(summary.get("max"))}</td></tr>'
        )
        body.append(
            f'<tr><th>paper (Ha &amp; Schmidhuber 2018)</th><td class="num">{paper_m:.0f} ± {paper_s:.0f}</td>'
            '<td class="num">100</td><td class="num">–</td><td class="num">–</td></tr></table>'
        )
        extra = [
            f"{k.replace('_', ' ')}: {_fmt(summary[k], 0)}"
            for k in ("env_steps", "env_steps_per_sec")
            if isinstance(summary.get(k), (int, float))
        ]
        if isinstance(summary.get("wall_time"), (int, float)):
            extra.append(f"wall time: {_duration(summary['wall_time'])}")
        if summary.get("env_id"):
            extra.insert(0, f"environment: {summary['env_id']}")
        if extra:
            body.append(f'<p class="sub">{_e("; ".join(extra))}</p>')
        if returns:
            body.append(
                f"<figure>{_img(plot_returns_histogram(returns), 'image/png', 'histogram of evaluation returns')}"
                "<figcaption>Returns of the evaluation episodes.</figcaption></figure>"
            )
        else:
            body.append(page.miss("per-episode returns (controller/evaluation.csv) for the histogram"))
    page.section("Score", "score", "\n".join(body))


def _controller(page: _Page, workdir: str) -> None:
    path = _join(workdir, "controller", "metrics.jsonl")
    records = (
        [r for r in _read_jsonl(path) if all(k in r for k in ("generation", "mean", "max", "min"))]
        if _exists(path)
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
    steps = sum(r.get("env_steps", 0) + r.get("eval_env_steps", 0) for r in records)
    dream_steps = sum(r.get("dream_steps", 0) for r in records)
    wall = sum(r.get("wall_time", 0.0) for r in records)
    best = max(records, key=lambda r: r["max"])
    facts = [
        f"{len(records)} generations" + (" in the dream" if dream_steps else ""),
        f"{steps:,} environment steps" + (f" and {dream_steps:,} dream steps" if dream_steps else ""),
        f"{_duration(wall)} of training",
        f"best member {best['max']:.1f} (generation {best['generation']})",
        f"final population mean {last['mean']:.1f}",
    ]
    if last.get("best_eval") is not None:
        facts.append(f"best eval {last['best_eval']:.1f}")
    if last.get("sigma") is not None:
        facts.append(f"final σ {last['sigma']:.3g}")
    body = (
        f"<p>{_e('; '.join(facts))}.</p>"
        f"<figure>{_img(plot_controller(records), 'image/png', 'controller training curve')}"
        "<figcaption>Return per generation: the population's mean (line), max and min (band); red points "
        "evaluate the CMA-ES mean on tracks the population never sees.</figcaption></figure>"
    )
    page.section("Controller training (CMA-ES)", "controller", body)


def _vae_reconstructions(workdir: str) -> tuple[bytes | None, str]:
    """(PNG, caption) or (None, what is missing)."""
    import numpy as np

    export = _join(workdir, "vae", "export")
    enc_path, dec_path = _join(export, "encoder.keras"), _join(export, "decoder.keras")
    if not (_exists(enc_path) and _exists(dec_path)):
        return None, "the exported VAE (vae/export/encoder.keras, decoder.keras): train_vae has not finished"
    rollouts = _join(workdir, "rollouts")
    if not _exists(rollouts):
        return None, "rollouts (rollouts/) to reconstruct"
    import keras

    import tfrecords

    try:
        episode = next(iter(tfrecords.episodes_dataset(rollouts).take(1)))
    except (StopIteration, Exception) as e:  # noqa: BLE001 - any unreadable dataset is reported, not fatal
        return None, f"readable rollouts in rollouts/ ({type(e).__name__}: {e})"
    frames = episode["frames"].numpy()
    idx = np.unique(np.linspace(0, len(frames) - 1, RECON_FRAMES).round().astype(int))
    inputs = frames[idx]
    encoder = keras.models.load_model(enc_path, compile=False)
    decoder = keras.models.load_model(dec_path, compile=False)
    mu, _ = encoder(inputs, training=False)
    recons = np.clip(np.asarray(decoder(mu, training=False)), 0.0, 1.0)
    mse = float(np.mean((inputs.astype(np.float32) / 255.0 - recons) ** 2))
    caption = (
        f"Frames {', '.join(map(str, idx))} of the first rollout episode (top) and V's reconstructions "
        f"from their means μ (bottom); mean squared error {mse:.4f} per pixel channel."
    )
    return plot_reconstructions(inputs, recons), caption


def _vae(page: _Page, workdir: str) -> None:
    body = []
    try:
        png, text = _vae_reconstructions(workdir)
    except Exception as e:  # noqa: BLE001 - a broken export must not stop the report
        png, text = None, f"VAE reconstructions (failed: {type(e).__name__}: {e})"
    if png is None:
        body.append(page.miss(text))
    else:
        body.append(
            f"<figure>{_img(png, 'image/png', 'VAE inputs and reconstructions')}"
            f"<figcaption>{_e(text)}</figcaption></figure>"
        )
    body.append(_loss_block(page, _join(workdir, "vae"), "V", ("loss", "reconstruction", "kl"), "train_vae"))
    page.section("V: the variational autoencoder", "vae", "\n".join(body))


def _loss_block(page: _Page, run_dir: str, label: str, terms: tuple[str, ...], stage: str) -> str:
    path = _join(run_dir, "metrics.jsonl")
    rows = [r for r in _read_jsonl(path) if "step" in r] if _exists(path) else []
    png = plot_losses(rows, terms) if rows else None
    name = os.path.basename(run_dir.rstrip("/"))
    if png is None:
        return page.miss(f"{label}'s loss curves ({name}/metrics.jsonl): the {stage} stage has not logged yet")
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    facts = [f"{train[-1]['step'] if train else 0} steps"]
    if train and isinstance(train[-1].get("loss"), (int, float)):
        facts.append(f"final train loss {train[-1]['loss']:.4g}")
    if evals and isinstance(evals[-1].get("loss"), (int, float)):
        facts.append(f"final eval loss {evals[-1]['loss']:.4g}")
    rates = [r["items_per_sec"] for r in train if isinstance(r.get("items_per_sec"), (int, float))]
    if rates:
        facts.append(f"{rates[-1]:,.0f} items/s")
    note = "" if evals else " (no eval entries: no held-out shards)"
    return (
        f"<figure>{_img(png, 'image/png', f'{label} loss curves')}<figcaption>{_e(label)} loss terms per step, "
        f"train and eval{_e(note)}: {_e('; '.join(facts))}.</figcaption></figure>"
    )


def _mdnrnn(page: _Page, workdir: str) -> None:
    body = _loss_block(
        page, _join(workdir, "mdnrnn"), "M", ("loss", "z_nll", "reward_mse", "terminal_ce"), "train_mdnrnn"
    )
    page.section("M: the MDN-RNN", "mdnrnn", body)


def _gif(workdir: str, rel: str, alt: str) -> str:
    """An embedded GIF (or a relative link when it is too large)."""
    path = _join(workdir, rel)
    size = fileio.gfile().stat(path).length
    if size > EMBED_LIMIT:
        return (
            f'<p><a href="{_e(rel)}">{_e(rel)}</a> ({size / 2**20:.1f} MB, linked rather than embedded; '
            "open it from the workdir).</p>"
        )
    return _img(_read_bytes(path), "image/gif", alt, css="pixel")


def _dream(page: _Page, workdir: str) -> None:
    if not _exists(_join(workdir, "dream.gif")):
        page.section("Dream", "dream", page.miss("the dream (dream.gif): the dream stage has not run"))
        return
    body = (
        f"<figure>{_gif(workdir, 'dream.gif', 'real episode and dream side by side')}"
        "<figcaption>Left: the real episode. Right: M dreaming on its own from the episode's first frame "
        "with the same actions, decoded by V.</figcaption></figure>"
    )
    page.section("Dream", "dream", body)


def iteration_rows(workdir: str, pipeline: dict | None) -> list[dict]:
    """Per iteration (0: the first pass): the CMA-ES generation it ended at, the real and dream
    evaluation of the CMA-ES mean there, and (from 1) what the collected data showed of M."""
    stages = {s.get("name"): s for s in (pipeline or {}).get("stages", [])}
    k_max = int((pipeline or {}).get("iterations") or 0)
    path = _join(workdir, "controller", "metrics.jsonl")
    by_gen = {r.get("generation"): r for r in (_read_jsonl(path) if _exists(path) else [])}
    rows = []
    for k in range(k_max + 1):
        name = "train_controller" if k == 0 else f"train_controller@{k}"
        m = re.search(r"--generations=(\d+)", (stages.get(name) or {}).get("command") or "")
        gen = int(m.group(1)) if m else None
        rec = by_gen.get(gen) or {}
        row = {"iteration": k, "generation": gen, "real": rec.get("eval_mean"), "dream": rec.get("dream_eval_mean")}
        if row["real"] is not None and row["dream"] is not None:
            row["gap"] = row["dream"] - row["real"]
        manifest_path = _join(workdir, f"iter_{k}", "rollouts", "manifest.json")
        if k and _exists(manifest_path):
            man = _read_json(manifest_path)
            row.update(collected=man.get("episodes"), collected_return=man.get("mean_return"))
            row.update({f"m_{key}": v for key, v in (man.get("model_errors") or {}).items() if key != "mdnrnn"})
        rows.append(row)
    return rows


def iteration_env(pipeline: dict | None) -> str:
    """Where the iterations' CMA-ES ran: "dream" or "real" (train_controller@1's ``--env``; real by default)."""
    stages = {s.get("name"): s for s in (pipeline or {}).get("stages", [])}
    m = re.search(r"--env=(\w+)", (stages.get("train_controller@1") or {}).get("command") or "")
    return m.group(1) if m else "real"


def _iterations(page: _Page, workdir: str, pipeline: dict | None) -> None:
    if not (pipeline or {}).get("iterations"):
        return
    rows = iteration_rows(workdir, pipeline)
    head = (
        "<tr><th>iteration</th><th>generation</th><th>real (CMA-ES mean)</th><th>dream (same)</th>"
        "<th>dream − real</th><th>collected episodes</th><th>their mean return</th>"
        "<th>M's reward MSE on them</th><th>M's return error on them</th><th>M's z NLL on them</th></tr>"
    )
    cells = [
        "<tr>"
        + "".join(
            f'<td class="num">{_fmt(r.get(k), d)}</td>'
            for k, d in (
                ("iteration", 0),
                ("generation", 0),
                ("real", 1),
                ("dream", 1),
                ("gap", 1),
                ("collected", 0),
                ("collected_return", 1),
                ("m_reward_mse", 3),
                ("m_return_error", 1),
                ("m_z_nll", 3),
            )
        )
        + "</tr>"
        for r in rows
    ]
    figs = []
    for r in rows:
        rel = f"iter_{r['iteration']}/dream_vs_real.gif"
        if _exists(_join(workdir, rel)):
            figs.append(
                f"<figure>{_gif(workdir, rel, 'real and dream')}<figcaption>iteration {r['iteration']}: "
                "real (left) and dream (right), the same controller</figcaption></figure>"
            )
    where = (
        "in the new M's dream"
        if iteration_env(pipeline) == "dream"
        else "in the real environment (the dream column: the same mean played in the new M's dream, a gauge)"
    )
    body = (
        '<p class="note">Each iteration collects rollouts with the current controller, continues M on all data '
        f"and CMA-ES {where}. M's errors are measured on each iteration's new data before M trains on it; "
        "the return error is M's predicted return along the real episodes minus their real return.</p>"
        f"<table>{head}{''.join(cells)}</table>" + ('<div class="row">' + "".join(figs) + "</div>" if figs else "")
    )
    page.section("Iterations", "iterations", body)


def _videos(page: _Page, workdir: str) -> None:
    vdir = _join(workdir, "videos")
    names = sorted(n for n in fileio.gfile().listdir(vdir) if n.endswith(".gif")) if _exists(vdir) else []
    if not names:
        page.section("Evaluation videos", "videos", '<p class="note">No evaluation videos (videos/*.gif).</p>')
        return
    figs = [
        f"<figure>{_gif(workdir, 'videos/' + n, n)}<figcaption>{_e(n)}: real frame | V's reconstruction | "
        "actions</figcaption></figure>"
        for n in names[:MAX_VIDEOS]
    ]
    more = f"<p>{len(names) - MAX_VIDEOS} more in <code>videos/</code>.</p>" if len(names) > MAX_VIDEOS else ""
    page.section("Evaluation videos", "videos", '<div class="row">' + "".join(figs) + "</div>" + more)


def _rollouts(page: _Page, workdir: str) -> None:
    path = _join(workdir, "rollouts", "manifest.json")
    if not _exists(path):
        page.section(
            "Rollouts",
            "rollouts",
            page.miss("the rollout dataset (rollouts/manifest.json): the generate stage has not finished"),
        )
        return
    m = _read_json(path)
    eps, frames = m.get("episodes", 0), m.get("frames", 0)
    ret = sum(s.get("return_sum", 0.0) for s in m.get("shards", []))
    policy = (m.get("spec") or m.get("flags") or {}).get("policy", "?")
    facts = [
        f"{eps:,} episodes",
        f"{frames:,} frames",
        f"{len(m.get('shards', []))} shards",
        f"policy {policy}",
        f"environment {m.get('env_id', '?')}",
        f"frame shape {m.get('frame_shape', '?')}",
    ]
    if eps:
        facts.append(f"mean return {ret / eps:.1f}")
    page.section("Rollouts", "rollouts", f"<p>{_e('; '.join(facts))}.</p>")


def _command_html(command: str) -> str:
    """A command line whose lines break only between arguments."""
    return " ".join(f"<span>{_e(arg)}</span>" for arg in str(command).split())


def _stages(page: _Page, workdir: str, pipeline: dict | None) -> None:
    tb = (
        f"<p>All stages log to TensorBoard: <code>tensorboard --logdir {_e(workdir)}</code> "
        "shows V, M and the controller together.</p>"
    )
    if not pipeline:
        page.section(
            "Stages",
            "stages",
            page.miss("pipeline.json (stage timings and commands): not run through wm.pipeline") + tb,
        )
        return
    rows = ["<table><tr><th>stage</th><th>status</th><th>wall time</th><th>command</th></tr>"]
    total = 0.0
    for s in pipeline.get("stages", []):
        status = str(s.get("status", "?"))
        shown = "building this page" if s.get("name") == "report" and status == "running" else status
        wall = s.get("wall_time")
        total += wall if isinstance(wall, (int, float)) else 0.0
        rows.append(
            f'<tr><td class="nowrap">{_e(s.get("name", "?"))}</td><td class="{_e(status)}">{_e(shown)}</td>'
            f'<td class="num">{_duration(wall)}</td><td><code>{_command_html(s.get("command", ""))}</code></td></tr>'
        )
        if status == "failed":
            page.missing.append(f"stage {s.get('name', '?')} failed")
    rows.append(f'<tr><th>total</th><td></td><td class="num"><b>{_duration(total)}</b></td><td></td></tr></table>')
    page.section("Stages", "stages", "\n".join(rows) + tb)


# ---------------------------------------------------------------- the report


def build_report(workdir: str) -> str:
    """Writes ``WORKDIR/report.html`` (self-contained, atomically) and returns its path.

    Every missing or unreadable piece is named in the page instead of failing the build; only a
    workdir that does not exist is an error (UsageError).
    """
    if not workdir or not _exists(workdir):
        raise UsageError(f"no such workdir: {workdir!r}")
    pipeline_path = _join(workdir, "pipeline.json")
    pipeline = None
    if _exists(pipeline_path):
        try:
            pipeline = _read_json(pipeline_path)
        except (json.JSONDecodeError, UnicodeDecodeError):
            pipeline = None
    page = _Page()
    steps: list[Callable[[], None]] = [
        lambda: _scores(page, workdir),
        lambda: _controller(page, workdir),
        lambda: _iterations(page, workdir, pipeline),
        lambda: _vae(page, workdir),
        lambda: _mdnrnn(page, workdir),
        lambda: _dream(page, workdir),
        lambda: _videos(page, workdir),
        lambda: _rollouts(page, workdir),
        lambda: _stages(page, workdir, pipeline),
    ]
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - one unreadable file must not lose the rest of the report
            page.section("Error", "error", page.miss(f"a section failed to build ({type(e).__name__}: {e})"))
    head = _header(workdir, pipeline)
    if page.missing:
        items = "".join(f"<li>{_e(m)}</li>" for m in page.missing)
        head += f'<div class="missing"><b>Missing or incomplete</b> ({len(page.missing)})<ul>{items}</ul></div>'
    else:
        head += '<p class="done">Every stage\'s output is present.</p>'
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>World Models report: {_e(os.path.basename(workdir.rstrip('/')) or workdir)}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n{head}\n" + "\n".join(page.sections) + "\n</body></html>\n"
    )
    out = _join(workdir, REPORT_NAME)
    fileio.write_text_atomic(out, doc)
    return out


def run(cfg: ReportConfig) -> str:
    """Builds the report for ``cfg.workdir``; returns the path of report.html."""
    check(cfg)
    path = build_report(cfg.workdir)
    print(f"report: {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    run_binary(ReportConfig, run, "report", lock=False)  # it only reads, and replaces report.html atomically
