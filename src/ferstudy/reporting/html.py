"""The report as one self-contained HTML page: just enough Markdown, embedded figures, style.

The report is written once as Markdown (``reports/report.md``); this turns the same text
into a page: headings (with the anchors GitHub gives them, so the report's links to its own
sections work), paragraphs (a paragraph right before a table reads as its caption), lists,
tables with a header row, images embedded as data URIs (the italic line after one is its
caption), bold, italics, code and links. A table cell
that starts with **yes** (a flag, e.g. degenerate features) is highlighted in red, one that
starts with **real** (a difference whose 95 % interval excludes 0) in green.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ferstudy.reporting.markdown import slug

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
background:#f6f8fa;margin:0}
main{max-width:1180px;margin:0 auto;padding:1.5em 2em 4em;background:#fff;
box-shadow:0 0 0 1px #d0d7de}
h1{font-size:1.9em;border-bottom:2px solid #0969da;padding-bottom:.3em}
h2{font-size:1.4em;margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.1em;margin-top:1.5em}
p{max-width:75em}
table{border-collapse:collapse;margin:.6em 0 1.6em;font-size:13px;display:block;
overflow-x:auto}
th{background:#eaeef2;font-weight:600;position:sticky;top:0}
td,th{border:1px solid #d0d7de;padding:4px 8px;white-space:nowrap}
.l{text-align:left}.r{text-align:right}.c{text-align:center}
tr:nth-child(even) td{background:#f6f8fa}
td.flag{background:#ffebe9 !important;color:#82071e;white-space:normal;text-align:left;
min-width:24em}
td.real{background:#dafbe1 !important;color:#116329;text-align:left}
code{background:#eff1f3;padding:0 .3em;border-radius:4px;font-size:92%}
ul{padding-left:1.4em}li{margin:.25em 0}
img{max-width:100%;border:1px solid #d0d7de;border-radius:4px;margin:.4em 0}
img+p{color:#57606a;font-size:13px;margin-top:0}
"""


def img_html(path: Path) -> str:
    """An image file embedded as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _cell(tag: str, content: str, align: str) -> str:
    """One table cell: Markdown's column alignment, and the highlight of a flag or a real
    difference."""
    classes = [align]
    if tag == "td" and content.startswith("<b>yes</b>"):
        classes.append("flag")
    elif tag == "td" and content.startswith("<b>real</b>"):
        classes.append("real")
    return f'<{tag} class="{" ".join(classes)}">{content}</{tag}>'


def _alignments(rows: list[list[str]]) -> list[str]:
    """Per column, from Markdown's separator row: ``l`` (``---``), ``r`` (``---:``) or ``c``
    (``:---:``); left for every column of a table without one."""
    for row in rows:
        if row and all(c and set(c) <= set("-:") for c in row):
            return [
                "c" if c.startswith(":") and c.endswith(":") else "r" if c.endswith(":") else "l"
                for c in row
            ]
    return ["l"] * max((len(r) for r in rows), default=0)


def markdown_to_html(text: str, title: str = "FER backbone comparison") -> str:
    """Just enough Markdown for this report: headings, lists, tables, images, bold, italics,
    code, links."""

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
        s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
        return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', s)

    out, table, in_list = [], [], False
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            aligns = _alignments(table)
            rows = [r for r in table if not all(set(c) <= set("-:") for c in r)]
            out.append(
                "<table>"
                + "".join(
                    "<tr>"
                    + "".join(
                        _cell("th" if i == 0 else "td", inline(c), a)
                        for c, a in zip(r, aligns + ["l"] * (len(r) - len(aligns)))
                    )
                    + "</tr>"
                    for i, r in enumerate(rows)
                )
                + "</table>"
            )
            table = []
        if line.startswith("- "):
            out.append(("" if in_list else "<ul>") + f"<li>{inline(line[2:])}</li>")
            in_list = True
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("{{IMG:"):
            out.append(img_html(Path(line[6:-2])))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            text = line[level:].strip()
            out.append(f'<h{level} id="{slug(text)}">{inline(text)}</h{level}>')
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>"
        + "\n".join(out)
        + "</main></body></html>\n"
    )
