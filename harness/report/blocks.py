"""What a report is made of, and its two renderings: the terminal text and report.html.

A section returns a list of Blocks; both renderers walk the same list, so the page and the
terminal never disagree. The page is self-contained: PNGs embedded as base64, inline CSS,
no scripts and no external addresses, so it opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.values import fmt, plain


@dataclass
class Block:
    kind: str  # heading | text | warn | pre | table | image
    text: str = ""  # the heading, the paragraph, the preformatted text, the image's caption
    table: pd.DataFrame | None = None
    path: Path | None = None  # the PNG of an image block


def cell(value: Any) -> str:
    """A table cell: the harness's one formatter, booleans as yes/no (easier to scan in a
    column than true/false)."""
    value = plain(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt(value)


def _table_text(df: pd.DataFrame | None) -> str:
    if df is None or df.empty:
        return "(none)"
    return df.map(cell).to_string(index=False)


def render_text(blocks: list[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            lines += ["", f"== {b.text} =="]
        elif b.kind == "warn":
            lines.append(f"WARNING: {b.text}")
        elif b.kind == "table":
            lines.append(_table_text(b.table))
        elif b.kind == "image":
            lines.append(f"figure: {b.path}")
        elif b.kind == "text":
            lines.append(textwrap.fill(b.text, width=100, break_on_hyphens=False))
        else:
            lines.append(b.text.rstrip("\n"))
    return "\n".join(lines).lstrip("\n") + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;"
    "padding-bottom:.2em;margin-top:1.6em}table{border-collapse:collapse;font-size:13px;"
    "margin:.4em 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
    "th{background:#f2f2f2}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
    ".warn{color:#a33;font-weight:600}img{max-width:100%;display:block;margin:.5em 0}"
    "figcaption{font-size:12px;color:#666}"
)


def render_html(title: str, blocks: list[Block]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for b in blocks:
        if b.kind == "heading":
            parts.append(f"<h2>{html.escape(b.text)}</h2>")
        elif b.kind == "warn":
            parts.append(f'<p class="warn">warning: {html.escape(b.text)}</p>')
        elif b.kind == "pre":
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind == "table":
            if b.table is None or b.table.empty:
                parts.append("<p>(none)</p>")
            else:
                parts.append(b.table.map(cell).to_html(index=False, border=0, escape=True))
        elif b.kind == "image":
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(b.path.name)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(b.text)}'
                "</figcaption></figure>"
            )
        else:
            parts.append(f"<p>{html.escape(b.text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
