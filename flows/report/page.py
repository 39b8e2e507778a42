"""The HTML of ``focus report``: one static page, inline CSS, figures as relative PNG files.

Plain functions that turn already computed values into escaped HTML strings; no database, no
torch. :mod:`flows.report.build` gathers the values and writes the page.

Every number in a table cell is formatted by :func:`fmt` (3 decimals; counts as integers) and
every data row carries the exact values in ``data-*`` attributes (Python's shortest
round-trip ``repr``; empty when undefined), so a reader or a test can check them against the
database.

Examples
--------
>>> fmt(0.91234), fmt(float("nan")), fmt_p(0.00001)
('0.912', '–', '< 0.001')
>>> table(["a"], [row({"a": 1.5}, ["1.500"])])
'<table>\\n<thead><tr><th>a</th></tr></thead>\\n<tbody>\\n<tr data-a="1.5"><td class="num">1.500</td></tr>\\n</tbody>\\n</table>'
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CSS",
    "DASH",
    "Figure",
    "count",
    "Section",
    "data_value",
    "fmt",
    "fmt_p",
    "fmt_signed",
    "page",
    "row",
    "seed_list",
    "table",
]

DASH = "–"

CSS = """
:root { --fg: #1d2430; --muted: #5b6472; --line: #d9dee5; --accent: #1f77b4; --bg-alt: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #16324f; color: #fff; padding: 1.4rem 2rem 1.1rem; }
header h1 { margin: 0 0 .35rem; font-size: 1.6rem; font-weight: 600; }
header p { margin: .15rem 0; color: #d5e2ef; }
header code { color: #fff; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
      padding: .45rem 2rem; font-size: .9rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: .9rem; white-space: nowrap; line-height: 1.8; }
main { max-width: 1400px; padding: 0 1.6rem 3rem; }
section { margin-top: 2.2rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid var(--line); padding-bottom: .25rem; margin-bottom: .6rem; }
h3 { font-size: 1.05rem; margin: 1.3rem 0 .4rem; }
p.lead, p.caption { color: var(--muted); max-width: 62rem; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .55rem .8rem; max-width: 62rem; }
p.missing { background: var(--bg-alt); border-left: 4px solid #9aa5b1; padding: .55rem .8rem; color: var(--muted); }
.figures { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .3rem; max-width: 60rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .84rem; margin: .4rem 0 1rem; }
th, td { padding: .28rem .45rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td { white-space: normal; }  /* names wrap at their spaces, so the table fits its container */
th { background: var(--bg-alt); font-weight: 600; overflow-wrap: normal; }
th[title] { text-decoration: underline dotted; cursor: help; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.sig { font-weight: 600; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; }
details { margin: .6rem 0; }
summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: .85rem; border-top: 1px solid var(--line); margin-top: 3rem; padding-top: .8rem; }
"""


def fmt(value: Any, decimals: int = 3) -> str:
    """A number as table text: ``decimals`` decimals, integers as integers, undefined as a dash."""
    if value is None:
        return DASH
    if isinstance(value, (bool, int)) and not isinstance(value, float):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if math.isnan(number):
        return DASH
    return f"{number:.{decimals}f}"


def count(n: int, noun: str) -> str:
    """``n`` and ``noun`` in the number it takes: ``"1 seed"``, ``"10 epochs"``, ``"0 seeds"``.

    Examples
    --------
    >>> count(1, "seed"), count(5, "seed"), count(2, "random model")
    ('1 seed', '5 seeds', '2 random models')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def seed_list(seeds: Sequence[int]) -> str:
    """Seeds as their count and their ids, runs of consecutive ids shortened: ``"1 seed (0)"``, ``"5 seeds (0–4)"``.

    Examples
    --------
    >>> seed_list([0]), seed_list([0, 1, 2, 3, 4]), seed_list([0, 1, 2, 7])
    ('1 seed (0)', '5 seeds (0–4)', '4 seeds (0–2, 7)')
    """
    runs: list[list[int]] = []
    for s in sorted(seeds):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    ids = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}{DASH}{r[-1]}" for r in runs)
    return f"{count(len(seeds), 'seed')} ({ids})"


def fmt_p(value: Any) -> str:
    """A p-value: 3 decimals, ``< 0.001`` below that, a dash when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return "< 0.001" if float(value) < 0.001 else fmt(value)


def fmt_signed(value: Any) -> str:
    """A change with its sign, 3 decimals; a dash when undefined.

    Examples
    --------
    >>> fmt_signed(0.12), fmt_signed(-0.08), fmt_signed(None), fmt_signed(float("nan"))
    ('+0.120', '-0.080', '–', '–')
    """
    if value is None:
        return DASH
    number = float(value)
    return DASH if math.isnan(number) else f"{number:+.3f}"


def data_value(value: Any) -> str:
    """The exact value for a ``data-*`` attribute: shortest round-trip repr; empty when undefined."""
    if value is None:
        return ""
    if isinstance(value, (bool, int)) and not isinstance(value, float):
        return str(int(value))
    if isinstance(value, float) or hasattr(value, "dtype"):
        number = float(value)
        return "" if math.isnan(number) else repr(number)
    return str(value)


def _attr_name(key: str) -> str:
    return "data-" + key.replace("_", "-")


def row(data: Mapping[str, Any], cells: Sequence[str], numeric: Sequence[bool] | None = None,
        classes: Sequence[str] | None = None, titles: Sequence[str | None] | None = None) -> str:
    """One ``<tr>`` with ``data-*`` attributes from ``data`` and already formatted ``cells``.

    Cells are escaped here; ``numeric[i]`` (default: True when the cell looks like a number or a
    dash) right-aligns cell ``i``; ``classes[i]`` adds a CSS class; ``titles[i]`` a tooltip.
    """
    attrs = "".join(f' {_attr_name(k)}="{html.escape(data_value(v), quote=True)}"' for k, v in data.items())
    parts = []
    for i, cell in enumerate(cells):
        text = str(cell)
        is_number = numeric[i] if numeric is not None else _looks_numeric(text)
        css = (["num"] if is_number else []) + ([classes[i]] if classes and classes[i] else [])
        klass = f' class="{" ".join(css)}"' if css else ""
        tip = titles[i] if titles and i < len(titles) else None
        klass += f' title="{html.escape(tip, quote=True)}"' if tip else ""
        parts.append(f"<td{klass}>{html.escape(text)}</td>")
    return f"<tr{attrs}>{''.join(parts)}</tr>"


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(DASH, "").replace("< ", "").replace("[", "").replace("]", "").replace(",", "")
    stripped = stripped.replace(" ", "").replace(".", "").replace("-", "").replace("%", "")
    return text == DASH or (stripped.isdigit() and bool(stripped))


def table(headers: Sequence[str], rows: Sequence[str], *, table_id: str | None = None,
          titles: Sequence[str | None] | None = None) -> str:
    """A ``<table>`` of escaped ``headers`` (with optional tooltips) and pre-rendered ``rows``."""
    head = []
    for i, header in enumerate(headers):
        title = titles[i] if titles and i < len(titles) else None
        tip = f' title="{html.escape(title, quote=True)}"' if title else ""
        head.append(f"<th{tip}>{html.escape(header)}</th>")
    ident = f' id="{html.escape(table_id, quote=True)}"' if table_id else ""
    return (f"<table{ident}>\n<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


@dataclass
class Figure:
    """A PNG written next to the page (``src`` relative to it) with its caption."""

    src: str
    alt: str
    caption: str = ""
    figure_id: str | None = None

    def render(self) -> str:
        ident = f' id="{html.escape(self.figure_id, quote=True)}"' if self.figure_id else ""
        caption = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return (f'<figure{ident}><img src="{html.escape(self.src, quote=True)}" '
                f'alt="{html.escape(self.alt, quote=True)}" loading="eager">{caption}</figure>')


@dataclass
class Section:
    """One part of the page: a heading, a lead paragraph, figures, notes and raw HTML blocks."""

    section_id: str
    title: str
    lead: str = ""
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: str | None = None  # set when the data for this section is not recorded
    blocks: list[str] = field(default_factory=list)  # trusted HTML (built with table()/row())

    def render(self) -> str:
        parts = [f'<section id="{html.escape(self.section_id, quote=True)}">',
                 f"<h2>{html.escape(self.title)}</h2>"]
        if self.lead:
            parts.append(f'<p class="lead">{html.escape(self.lead)}</p>')
        if self.missing:
            parts.append(f'<p class="missing">{html.escape(self.missing)}</p>')
        for note in self.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        if self.figures:
            parts.append('<div class="figures">' + "\n".join(f.render() for f in self.figures) + "</div>")
        parts.extend(self.blocks)
        parts.append("</section>")
        return "\n".join(parts)


def page(title: str, header_lines: Sequence[str], sections: Sequence[Section], footer: str) -> str:
    """The whole document: header (escaped lines), a navigation bar, the sections and a footer."""
    nav = "\n".join(f'<a href="#{html.escape(s.section_id, quote=True)}">{html.escape(s.title)}</a>' for s in sections)
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in header_lines)
    body = "\n".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>{lines}</header>\n<nav>{nav}</nav>\n"
        f"<main>\n{body}\n<footer>{html.escape(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
