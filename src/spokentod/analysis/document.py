"""The report as a document: sections of tables, figures and notes, rendered to Markdown (figures as PNG
files beside it) and to one self-contained HTML page (figures embedded as base64 PNG, so the one file
can be mailed or attached)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    cls: str = ""  # "drop" (flagged), "sig" (CI excludes 0), "muted", "wrap" (long text)
    sub: str = ""  # small print under the value (n)


@dataclass
class View:
    columns: list[str]
    rows: list[list[Cell | str]]
    caption: str = ""
    lead: int = 1  # leading label columns: left-aligned; a system name there gets its colour swatch


@dataclass
class Figure:
    name: str  # file stem
    png: bytes
    alt: str


@dataclass
class Note:
    text: str
    kind: str = "note"  # "note" | "warn"


@dataclass
class Section:
    id: str
    title: str
    how: str
    blocks: list[View | Figure | Note] = field(default_factory=list)
    details: list[tuple[str, View]] = field(default_factory=list)  # long tables, folded in HTML, CSV-only in MD


# ---------------------------------------------------------------- rendering


def _md_table(v: View) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    def cell(c: Cell | str) -> str:
        if not isinstance(c, Cell):
            return esc(c)
        text = f"**{esc(c.text)}**" if c.cls in ("drop", "sig") else esc(c.text)
        return f"{text} ({esc(c.sub)})" if c.sub else text

    def left(i: int) -> bool:
        return any(isinstance(row[i], Cell) and row[i].cls == "wrap" for row in v.rows[:1])

    lines = [f"**{v.caption}**", ""] if v.caption else []
    lines += ["| " + " | ".join(esc(c) for c in v.columns) + " |",
              "|" + "|".join("---" if i < v.lead or left(i) else "---:" for i in range(len(v.columns))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in v.rows]
    return "\n".join(lines)


def render_md(sections: list[Section], header: list[str], banner: str | None, figures: dict[str, str]) -> str:
    out = ["# spokentod bench report", "", *header, ""]
    if banner:
        out += [f"> **⚠ {banner}**", ""]
    for s in sections:
        out += [f"## {s.title}", "", f"*How to read this:* {s.how}", ""]
        for b in s.blocks:
            if isinstance(b, View):
                out += [_md_table(b), ""]
            elif isinstance(b, Figure):
                out += [f"![{b.alt}]({figures[b.name]})", ""]
            else:
                out += [("> **Warning:** " if b.kind == "warn" else "") + b.text, ""]
        if s.details:
            out += ["Per-turn tables for the other metrics: per_turn.csv (and report.html).", ""]
    return "\n".join(out)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:24px 32px 64px}
h1{margin:0 0 4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}
.banner{background:#fde8e8;border:2px solid #d62728;color:#7a1010;padding:12px 16px;border-radius:6px;margin:16px 0;
font-weight:600}
.how{background:#eef4fb;border-left:4px solid #1f77b4;padding:8px 12px;font-size:14px;color:#234}
.note{font-size:14px;color:#333}.warn{color:#8a4b00;background:#fff4e0;padding:6px 10px;border-radius:4px}
nav ol{columns:2;font-size:14px}
.scroll{max-height:70vh;overflow:auto;border:1px solid #ddd;border-radius:4px;margin:8px 0 20px;background:#fff}
table{border-collapse:separate;border-spacing:0;font-size:13px;width:100%}
caption{caption-side:top;text-align:left;font-weight:600;padding:6px 8px}
th{position:sticky;top:0;background:#f0f0f0;z-index:1;text-align:right;padding:6px 8px;border-bottom:1px solid #bbb;
white-space:nowrap}
td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th:first-child,td:first-child,td.txt,th.txt{text-align:left}
td.wrap{white-space:normal;text-align:left;min-width:260px;color:#555}
tr:hover td{background:#f7f9fc}
td small{display:block;color:#888;font-size:11px}
td.drop{background:#fde8e8;color:#a01010;font-weight:600}td.sig{font-weight:700}td.muted{color:#aaa}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:middle}
figure{margin:12px 0 24px}figure img{max-width:100%;height:auto;border:1px solid #eee;background:#fff}
figcaption{font-size:13px;color:#555}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
"""

# Marks each <img> with whether it decoded (naturalWidth > 0): the browser test reads it from the DOM dump,
# and a reader whose viewer blocks data: URIs sees a message instead of silent blanks.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0;
  imgs.forEach(function (i) { var r = i.complete && i.naturalWidth > 0; i.dataset.rendered = r ? 'yes' : 'no';
    if (r) ok++; });
  document.body.dataset.images = ok + '/' + imgs.length;
});
"""


def _html_table(v: View, colors: dict[str, str]) -> str:
    e = html.escape
    txt = ' class="txt"'
    head = "".join(f"<th{txt if i < v.lead else ''}>{e(c)}</th>" for i, c in enumerate(v.columns))
    body = []
    for row in v.rows:
        tds = []
        for i, c in enumerate(row):
            c = c if isinstance(c, Cell) else Cell(c)
            cls = " ".join(x for x in (c.cls, "txt" if i < v.lead else "") if x)
            sw = (f'<span class="sw" style="background:{colors[c.text]}"></span>'
                  if i < v.lead and c.text in colors else "")
            sub = f"<small>{e(c.sub)}</small>" if c.sub else ""
            attr = f' class="{cls}"' if cls else ""
            tds.append(f"<td{attr}>{sw}{e(c.text)}{sub}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{e(v.caption)}</caption>" if v.caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_html(sections: list[Section], header: list[str], banner: str | None, colors: dict[str, str]) -> str:
    e = html.escape
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             "<meta name=viewport content='width=device-width,initial-scale=1'>",
             f"<title>spokentod bench report</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>",
             "<body><main><h1>spokentod bench report</h1>",
             *(f'<div class="meta">{e(h)}</div>' for h in header)]
    if banner:
        parts.append(f'<div class="banner" id="weak-judge">⚠ {e(banner)}</div>')
    parts.append("<nav><ol>" + "".join(f'<li><a href="#{s.id}">{e(s.title)}</a></li>' for s in sections)
                 + "</ol></nav>")
    for s in sections:
        parts += [f'<section id="{s.id}"><h2>{e(s.title)}</h2>',
                  f'<p class="how"><b>How to read this:</b> {e(s.how)}</p>']
        for b in s.blocks:
            if isinstance(b, View):
                parts.append(_html_table(b, colors))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                parts.append(f'<figure><img alt="{e(b.alt)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{e(b.alt)}</figcaption></figure>")
            else:
                parts.append(f'<p class="{b.kind}">{e(b.text)}</p>')
        for title, v in s.details:
            parts.append(f"<details><summary>{e(title)}</summary>{_html_table(v, colors)}</details>")
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
