"""Rendering the report's blocks: Markdown, and a self-contained HTML page (figures inlined,
nothing loaded from the network). Model text is escaped in the HTML and fenced in the Markdown.
"""

from __future__ import annotations

import base64
import html

from mathtune.report.blocks import Bullets, Contents, Figure, Heading, ModelText, Para, Table, anchor


def _md_fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return fence


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _contents(blocks: list, after: int) -> list[Heading]:
    return [b for b in blocks[after + 1:] if isinstance(b, Heading) and b.level == 2]


def render_markdown(blocks: list) -> str:
    parts = []
    for i, b in enumerate(blocks):
        if isinstance(b, Contents):
            parts.append("Contents: " + " · ".join(f"[{h.text}](#{anchor(h.text)})" for h in _contents(blocks, i)))
        elif isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, Figure):
            parts.append(f"![{b.caption}](figures/{b.name})")
        elif isinstance(b, ModelText):
            fence = _md_fence(b.text)
            parts.append(f"{b.label}:\n\n{fence}text\n{b.text}\n{fence}")
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
pre { background: #f7f7f7; padding: 0.6em; white-space: pre-wrap; word-wrap: break-word; border-left: 3px solid #ccc; }
.label { font-size: 0.85em; color: #666; margin-bottom: 0; }
nav.toc ol { columns: 2; margin-top: 0.3em; }
@media print {
  body { max-width: none; margin: 0; font-size: 10.5pt; }
  nav.toc { display: none; }
  h1, h2, h3 { break-after: avoid; page-break-after: avoid; }
  table, figure, pre, tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-before: auto; }
  img { max-width: 100%; max-height: 9cm; border: none; }
  a { color: inherit; text-decoration: none; }
}
"""


def _html_inline(text: str) -> str:
    # Only **bold** is used by the report's own sentences; everything is escaped first.
    escaped = html.escape(text)
    pieces = escaped.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(blocks: list, title: str, figures: dict[str, bytes]) -> str:
    body = []
    for i, b in enumerate(blocks):
        if isinstance(b, Contents):
            links = "".join(f'<li><a href="#{anchor(h.text)}">{html.escape(h.text)}</a></li>' for h in _contents(blocks, i))
            body.append(f'<nav class="toc"><p class="label">Contents</p><ol>{links}</ol></nav>')
        elif isinstance(b, Heading):
            body.append(f'<h{b.level} id="{anchor(b.text)}">{html.escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_html_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            # <wbr> after each '/': a long path may break there instead of widening the table
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('/', '/<wbr>')}</td>" for c in row) + "</tr>"
                           for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(figures[b.name]).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                        f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, ModelText):
            body.append(f'<p class="label">{html.escape(b.label)}:</p><pre>{html.escape(b.text)}</pre>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
