"""The report's "Iterations" section, and the stage settings it reads from ``pipeline.json``.

The pipeline records each stage's resolved config in ``pipeline.json`` (``stages[i]["config"]``, the stage
binary's config dataclass as JSON); a ``pipeline.json`` written before it did has only the command lines,
from which ``_legacy_command_value`` parses the same settings.
"""

from __future__ import annotations

import re
from typing import Any

from tfrecords.schema import MANIFEST_NAME
from wm.core import layout
from wm.core.workdir import METRICS_NAME
from wm.reporting.files import exists, gif, join, read_json, read_jsonl
from wm.reporting.html import Page, fmt

# The settings the report reads, as they appear in a command line (pipeline.json without "config").
_LEGACY_FLAGS = {"generations": r"--generations=(\d+)", "env": r"--env=(\w+)"}


def _legacy_command_value(stage: dict, key: str) -> str | None:
    """``--KEY=VALUE`` parsed out of the stage's command: for a pipeline.json that records no config."""
    m = re.search(_LEGACY_FLAGS[key], stage.get("command") or "")
    return m.group(1) if m else None


def stage_value(pipeline: dict | None, name: str, key: str) -> Any:
    """The setting ``key`` of stage ``name`` (e.g. "train_controller@1") as the pipeline ran it; None if unknown."""
    stage = {s.get("name"): s for s in (pipeline or {}).get("stages", [])}.get(name) or {}
    config = stage.get("config")
    if isinstance(config, dict):
        return config.get(key)
    return _legacy_command_value(stage, key)


def iteration_rows(workdir: str, pipeline: dict | None) -> list[dict]:
    """Per iteration (0: the first pass): the CMA-ES generation it ended at, the real and dream
    evaluation of the CMA-ES mean there, and (from 1) what the collected data showed of M."""
    k_max = int((pipeline or {}).get("iterations") or 0)
    paths = layout.Layout(workdir)
    path = join(paths.controller, METRICS_NAME)
    by_gen = {r.get("generation"): r for r in (read_jsonl(path) if exists(path) else [])}
    rows = []
    for k in range(k_max + 1):
        generations = stage_value(pipeline, "train_controller" if k == 0 else f"train_controller@{k}", "generations")
        gen = int(generations) if generations is not None else None
        rec = by_gen.get(gen) or {}
        row = {"iteration": k, "generation": gen, "real": rec.get("eval_mean"), "dream": rec.get("dream_eval_mean")}
        if row["real"] is not None and row["dream"] is not None:
            row["gap"] = row["dream"] - row["real"]
        manifest_path = join(paths.iteration(k).rollouts, MANIFEST_NAME) if k else ""
        if manifest_path and exists(manifest_path):
            man = read_json(manifest_path)
            row.update(collected=man.get("episodes"), collected_return=man.get("mean_return"))
            row.update({f"m_{key}": v for key, v in (man.get("model_errors") or {}).items() if key != "mdnrnn"})
        rows.append(row)
    return rows


def iteration_env(pipeline: dict | None) -> str:
    """Where the iterations' CMA-ES ran: "dream" or "real" (train_controller@1's ``env``; real by default)."""
    env = stage_value(pipeline, "train_controller@1", "env")
    return str(env) if env else "real"


_COLUMNS = (
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


def add_iterations(page: Page, workdir: str, pipeline: dict | None) -> None:
    """A row per iteration (see ``iteration_rows``) and each iteration's dream-vs-real video; none without them."""
    if not (pipeline or {}).get("iterations"):
        return
    rows = iteration_rows(workdir, pipeline)
    head = (
        "<tr><th>iteration</th><th>generation</th><th>real (CMA-ES mean)</th><th>dream (same)</th>"
        "<th>dream − real</th><th>collected episodes</th><th>their mean return</th>"
        "<th>M's reward MSE on them</th><th>M's return error on them</th><th>M's z NLL on them</th></tr>"
    )
    cells = ["<tr>" + "".join(f'<td class="num">{fmt(r.get(k), d)}</td>' for k, d in _COLUMNS) + "</tr>" for r in rows]
    figs = []
    for r in rows:
        rel = f"{layout.iteration_dir(r['iteration'])}/{layout.DREAM_VS_REAL_GIF}"
        if exists(join(workdir, rel)):
            figs.append(
                f"<figure>{gif(workdir, rel, 'real and dream')}<figcaption>iteration {r['iteration']}: "
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
