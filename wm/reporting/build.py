"""The report page from its sections: ``build_report(workdir)`` writes ``WORKDIR/report.html``."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError
from wm.core import layout
from wm.reporting import curve, iterations, models, outputs, scores
from wm.reporting.files import exists, read_json
from wm.reporting.html import CSS, Page, esc


def _header(workdir: str, pipeline: dict | None) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    bits = [f"workdir <code>{esc(workdir)}</code>"]
    if pipeline:
        bits.append(f"preset <b>{esc(pipeline.get('preset', '?'))}</b>")
        if pipeline.get("started"):
            bits.append(f"started {esc(pipeline['started'])}")
    bits.append(f"report built {esc(now)}")
    return '<h1>World Models run report</h1>\n<p class="sub">' + " · ".join(bits) + "</p>"


def _read_pipeline(workdir: str) -> dict | None:
    """pipeline.json's contents; None when it is absent or unreadable."""
    path = layout.Layout(workdir).pipeline_json
    if not exists(path):
        return None
    try:
        return read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def build_report(workdir: str) -> str:
    """Writes ``WORKDIR/report.html`` (self-contained, atomically) and returns its path.

    Every missing or unreadable piece is named in the page instead of failing the build; only a
    workdir that does not exist is an error (UsageError).
    """
    if not workdir or not exists(workdir):
        raise UsageError(f"no such workdir: {workdir!r}")
    pipeline = _read_pipeline(workdir)
    page = Page()
    steps: list[Callable[[], None]] = [
        lambda: scores.add_score(page, workdir),
        lambda: scores.add_controller(page, workdir),
        lambda: curve.add_score_curve(page, workdir, pipeline),
        lambda: iterations.add_iterations(page, workdir, pipeline),
        lambda: models.add_vae(page, workdir),
        lambda: models.add_mdnrnn(page, workdir),
        lambda: models.add_dream(page, workdir),
        lambda: outputs.add_videos(page, workdir),
        lambda: outputs.add_rollouts(page, workdir),
        lambda: outputs.add_stages(page, workdir, pipeline),
    ]
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - one unreadable file must not lose the rest of the report
            page.section("Error", "error", page.miss(f"a section failed to build ({type(e).__name__}: {e})"))
    head = _header(workdir, pipeline)
    if page.missing:
        items = "".join(f"<li>{esc(m)}</li>" for m in page.missing)
        head += f'<div class="missing"><b>Missing or incomplete</b> ({len(page.missing)})<ul>{items}</ul></div>'
    else:
        head += '<p class="done">Every stage\'s output is present.</p>'
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>World Models report: {esc(os.path.basename(workdir.rstrip('/')) or workdir)}</title>"
        f"<style>{CSS}</style></head>\n<body>\n{head}\n" + "\n".join(page.sections) + "\n</body></html>\n"
    )
    out = layout.Layout(workdir).report
    fileio.write_text_atomic(out, doc)
    return out
