"""HTML building blocks of the reports: escaped text, numbers and tables (no page, no plotly;
:mod:`rlsae.analysis.report` builds pages from them)."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any


def esc(text: Any) -> str:
    """``text`` as inert HTML (quotes too): ``<img onerror=...>`` stays literal text."""
    return html.escape(str(text), quote=True)


def num(v: Any, spec: str = ".4g", missing: str = "") -> str:
    """A number for a report: ``missing`` for None or NaN, ``spec`` for floats, escaped text
    for anything else (integers as they are)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    if isinstance(v, float):
        return format(v, spec)
    return esc(v)


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: Collection[str] = (),
    *,
    scroll: bool = False,
) -> str:
    """A table; ``rows`` hold ready HTML cells (pass text through :func:`esc`/:func:`num`);
    the columns named in ``left`` are left-aligned (``class='l'``)."""

    def cls(h: str) -> str:
        return " class='l'" if h in left else ""

    head = "".join(f"<th{cls(h)}>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{cls(h)}>{c}</td>" for h, c in zip(headers, r, strict=True)) + "</tr>"
        for r in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div class='scroll'>{table}</div>" if scroll else table


__all__ = ["esc", "html_table", "num"]
