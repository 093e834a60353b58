"""The report's "Score against real environment steps": the kept controller's held-out score along the run.

Each point is one CMA-ES generation of ``controller/metrics.jsonl`` with a ``heldout_score``
(``wm.train_controller --score_episodes``): the mean return of the controller kept at that moment on
``wm.evaluate``'s first tracks. Its x is every real-environment step the run had played by then (the
random rollouts, each iteration's collection, CMA-ES's fitness episodes and evaluations) and, on the
second axis, the stage time spent so far (``pipeline.json``'s wall times of the stages before it, plus
CMA-ES's own ``train_time``).
"""

from __future__ import annotations

from typing import Any

from tfrecords.schema import MANIFEST_NAME
from wm.core import layout
from wm.core.workdir import METRICS_NAME
from wm.reporting.files import exists, join, read_json, read_jsonl
from wm.reporting.html import Page, duration, esc, fmt, img
from wm.reporting.iterations import stage_value
from wm.reporting.plots import plot_score_curve

DATA_STAGES = ("generate", "collect")  # the stages whose real steps are episodes written to a dataset


def _frames(stage: dict) -> int:
    """The real steps a data stage played: its dataset's frame count (0 if it has none yet)."""
    out_dir = (stage.get("config") or {}).get("out_dir")
    path = join(out_dir, MANIFEST_NAME) if out_dir else ""
    return int(read_json(path).get("frames", 0)) if path and exists(path) else 0


def segments(pipeline: dict | None) -> list[tuple[int, int, float]]:
    """Per CMA-ES stage, in the order they ran: (its last generation, the real steps and the stage
    seconds of every other stage before it)."""
    out, steps, seconds = [], 0, 0.0
    for stage in (pipeline or {}).get("stages", []):
        name = str(stage.get("name", ""))
        if name.split("@")[0] == "train_controller":
            generations = stage_value(pipeline, name, "generations")
            if generations is not None:
                out.append((int(generations), steps, seconds))
            continue
        if name.split("@")[0] in DATA_STAGES:
            steps += _frames(stage)
        seconds += float(stage.get("wall_time") or 0.0)
    return out


def score_curve(workdir: str, pipeline: dict | None) -> list[dict[str, Any]]:
    """The points ``{generation, real_env_steps, seconds, score}`` of the run in ``workdir``, in order (without
    ``pipeline.json``, the controller's own steps and time)."""
    path = join(layout.Layout(workdir).controller, METRICS_NAME)
    records = [r for r in (read_jsonl(path) if exists(path) else []) if "heldout_score" in r]
    segs = segments(pipeline)
    points = []
    for r in records:
        gen = int(r["generation"])
        _, steps, seconds = next((s for s in segs if s[0] >= gen), (0, 0, 0.0))
        points.append(
            {
                "generation": gen,
                "real_env_steps": steps + int(r.get("real_env_steps", 0)),
                "seconds": seconds + float(r.get("train_time", 0.0)),
                "score": float(r["heldout_score"]),
            }
        )
    return points


def add_score_curve(page: Page, workdir: str, pipeline: dict | None) -> None:
    """The section: the curve, its last point, and ``wm.evaluate``'s score at the end."""
    title, anchor = "Score against real environment steps", "curve"
    points = score_curve(workdir, pipeline)
    if not points:
        wanted = any((s.get("config") or {}).get("score_episodes") for s in (pipeline or {}).get("stages", []))
        what = "held-out scores of the kept controller (controller/metrics.jsonl, heldout_score)"
        body = (
            page.miss(f"{what}: no generation with one has finished")
            if wanted
            else '<p class="note">Not measured: this run trained C without <code>--score_episodes</code>.</p>'
        )
        page.section(title, anchor, body)
        return
    paths = layout.Layout(workdir)
    final = read_json(paths.evaluation_json) if exists(paths.evaluation_json) else None
    last = points[-1]
    text = (
        f"The kept controller on wm.evaluate's first tracks: {fmt(last['score'])} after "
        f"{last['real_env_steps']:,} real environment steps and {duration(last['seconds'])} of stage time "
        f"(generation {last['generation']})"
    )
    if final and isinstance(final.get("mean"), (int, float)):
        tracks = final.get("episodes", "?")
        text += f"; wm.evaluate over {tracks} tracks: {fmt(final['mean'])} ± {fmt(final.get('std'))}"
    body = (
        f"<p>{esc(text)}.</p>"
        f"<figure>{img(plot_score_curve(points, final), 'image/png', 'score against real environment steps')}"
        "<figcaption>Each point: the controller kept at that generation, scored on tracks the run never trains or "
        "selects on; x counts every real step that training had played (data collection, fitness episodes, "
        "evaluations), not the scoring's own.</figcaption></figure>"
    )
    page.section(title, anchor, body)
