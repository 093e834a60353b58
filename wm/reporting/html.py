"""HTML primitives of the report: escaping, numbers, embedded images and the page's sections."""

from __future__ import annotations

import base64
import html
import math
from typing import Any

CSS = """
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


def esc(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values."""
    return html.escape(str(x))


def data_uri(data: bytes, mime: str) -> str:
    """``data`` as a base64 data URI."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def img(data: bytes, mime: str, alt: str, css: str = "", width: int | None = None) -> str:
    """An ``<img>`` with the image embedded."""
    w = f' width="{width}"' if width else ""
    c = f' class="{css}"' if css else ""
    return f'<img src="{data_uri(data, mime)}" alt="{esc(alt)}"{c}{w}>'


def fmt(x: Any, digits: int = 1) -> str:
    """A number with thousands separators and ``digits`` decimals; "–" for None and non-finite floats."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return "–" if isinstance(x, float) and not math.isfinite(x) else f"{x:,.{digits}f}"
    return "–" if x is None else str(x)


def duration(seconds: Any) -> str:
    """Seconds as "12.3 s", "4.5 min" or "1.25 h"; "–" when not a number."""
    if not isinstance(seconds, (int, float)):
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


class Page:
    """Sections of the page, and the list of what was missing."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.missing: list[str] = []

    def miss(self, what: str) -> str:
        """Records a missing piece; returns the note to show in its section."""
        self.missing.append(what)
        return f'<p class="note">Missing: {esc(what)}</p>'

    def section(self, title: str, anchor: str, body: str) -> None:
        """Appends a section with its heading."""
        self.sections.append(f'<section id="{anchor}"><h2>{esc(title)}</h2>\n{body}\n</section>')
