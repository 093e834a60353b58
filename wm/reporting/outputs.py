"""The report's "Evaluation videos", "Rollouts" and "Stages" sections."""

from __future__ import annotations

from tfrecords.runtime import fileio
from tfrecords.schema import MANIFEST_NAME
from wm.core import layout
from wm.reporting.files import exists, gif, join, read_json
from wm.reporting.html import Page, duration, esc

MAX_VIDEOS = 3


def add_videos(page: Page, workdir: str) -> None:
    """The first ``MAX_VIDEOS`` evaluation videos (videos/*.gif)."""
    vdir = layout.Layout(workdir).videos
    names = sorted(n for n in fileio.gfile().listdir(vdir) if n.endswith(".gif")) if exists(vdir) else []
    if not names:
        page.section("Evaluation videos", "videos", '<p class="note">No evaluation videos (videos/*.gif).</p>')
        return
    figs = [
        f"<figure>{gif(workdir, f'{layout.VIDEOS}/{n}', n)}<figcaption>{esc(n)}: real frame | V's reconstruction | "
        "actions</figcaption></figure>"
        for n in names[:MAX_VIDEOS]
    ]
    more = f"<p>{len(names) - MAX_VIDEOS} more in <code>videos/</code>.</p>" if len(names) > MAX_VIDEOS else ""
    page.section("Evaluation videos", "videos", '<div class="row">' + "".join(figs) + "</div>" + more)


def add_rollouts(page: Page, workdir: str) -> None:
    """What the rollout dataset holds (rollouts/manifest.json)."""
    path = join(layout.Layout(workdir).rollouts, MANIFEST_NAME)
    if not exists(path):
        page.section(
            "Rollouts",
            "rollouts",
            page.miss("the rollout dataset (rollouts/manifest.json): the generate stage has not finished"),
        )
        return
    m = read_json(path)
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
    page.section("Rollouts", "rollouts", f"<p>{esc('; '.join(facts))}.</p>")


def _command_html(command: str) -> str:
    """A command line whose lines break only between arguments."""
    return " ".join(f"<span>{esc(arg)}</span>" for arg in str(command).split())


def add_stages(page: Page, workdir: str, pipeline: dict | None) -> None:
    """Each pipeline stage's status, wall time and command (pipeline.json); a failed stage counts as missing."""
    tb = (
        f"<p>All stages log to TensorBoard: <code>tensorboard --logdir {esc(workdir)}</code> "
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
            f'<tr><td class="nowrap">{esc(s.get("name", "?"))}</td><td class="{esc(status)}">{esc(shown)}</td>'
            f'<td class="num">{duration(wall)}</td><td><code>{_command_html(s.get("command", ""))}</code></td></tr>'
        )
        if status == "failed":
            page.missing.append(f"stage {s.get('name', '?')} failed")
    rows.append(f'<tr><th>total</th><td></td><td class="num"><b>{duration(total)}</b></td><td></td></tr></table>')
    page.section("Stages", "stages", "\n".join(rows) + tb)
