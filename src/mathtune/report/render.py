"""Rendering the report's blocks: Markdown, and a self-contained HTML page (figures inlined,
nothing loaded from the network). Model text is escaped in the HTML and fenced in the Markdown.
"""

from __future__ import annotations

import base64
import html

from mathtune.report.blocks import (Bullets, Columns, Contents, Details, Figure, Heading, ModelText, Para, Table, Verdict,
                                    anchor)


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
    return "\n\n".join(_md_block(b, blocks, i) for i, b in enumerate(blocks)) + "\n"


def _md_block(b, blocks: list, i: int) -> str:
    if isinstance(b, Contents):
        return "Contents: " + " · ".join(f"[{h.text}](#{anchor(h.text)})" for h in _contents(blocks, i))
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Verdict):
        return f"**{b.text}**"
    if isinstance(b, Bullets):
        return "\n".join(f"- {item}" for item in b.items)
    if isinstance(b, Table):
        lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        return "\n".join(lines)
    if isinstance(b, Figure):
        return f"![{b.caption}](figures/{b.name})"
    if isinstance(b, ModelText):
        fence = _md_fence(b.text)
        return f"{b.label}:\n\n{fence}text\n{b.text}\n{fence}"
    if isinstance(b, Columns):
        return render_markdown(b.left + b.right).rstrip("\n")
    if isinstance(b, Details):
        # GitHub renders the tags; the blank lines let the Markdown inside them render too.
        return f"<details><summary>{html.escape(b.summary, quote=False)}</summary>\n\n{render_markdown(b.blocks)}\n</details>"
    raise TypeError(f"no Markdown for {type(b).__name__}")


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
h1 { font-size: 1.5em; margin: 0.4em 0; }
p.verdict { font-size: 1.15em; font-weight: 600; background: #f3f7ff; border-left: 4px solid #3b6fd4;
            padding: 0.5em 0.8em; margin: 0.6em 0; }
div.columns { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
div.columns > div { flex: 1 1 420px; min-width: 0; }
div.columns figure { margin: 0.5em 0; }
details { margin: 0.6em 0; border: 1px solid #e3e3e3; border-radius: 4px; padding: 0.2em 0.8em; }
details > summary { cursor: pointer; font-weight: 600; padding: 0.3em 0; }
code { background: #f2f2f2; padding: 0 0.2em; }
td { overflow-wrap: anywhere; }
@media (max-width: 700px) {
  body { margin: 0.5em auto; }
  table { display: block; overflow-x: auto; }  /* a wide table scrolls by itself, not the page */
  nav.toc ol { columns: 1; }
}
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
    # The report's own sentences use **bold** and `code` alone; everything is escaped first.
    escaped = html.escape(text)
    pieces = escaped.split("**")
    bold = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))
    pieces = bold.split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick is a character, not markup
        return bold
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(blocks: list, title: str, figures: dict[str, bytes]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + _html_blocks(blocks, figures)
        + "\n</body></html>\n"
    )


def _html_blocks(blocks: list, figures: dict[str, bytes]) -> str:
    return "\n".join(_html_block(b, blocks, i, figures) for i, b in enumerate(blocks))


def _html_block(b, blocks: list, i: int, figures: dict[str, bytes]) -> str:
    if isinstance(b, Contents):
        links = "".join(f'<li><a href="#{anchor(h.text)}">{html.escape(h.text)}</a></li>' for h in _contents(blocks, i))
        return f'<nav class="toc"><p class="label">Contents</p><ol>{links}</ol></nav>'
    if isinstance(b, Heading):
        return f'<h{b.level} id="{anchor(b.text)}">{html.escape(b.text)}</h{b.level}>'
    if isinstance(b, Para):
        return f"<p>{_html_inline(b.text)}</p>"
    if isinstance(b, Verdict):
        return f'<p class="verdict">{_html_inline(b.text)}</p>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
        # <wbr> after each '/': a long path may break there instead of widening the table
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('/', '/<wbr>')}</td>" for c in row) + "</tr>"
                       for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Figure):
        data = base64.b64encode(figures[b.name]).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
    if isinstance(b, ModelText):
        return f'<p class="label">{html.escape(b.label)}:</p><pre>{html.escape(b.text)}</pre>'
    if isinstance(b, Columns):
        return (f'<div class="columns"><div>{_html_blocks(b.left, figures)}</div>'
                f"<div>{_html_blocks(b.right, figures)}</div></div>")
    if isinstance(b, Details):
        return (f"<details><summary>{html.escape(b.summary)}</summary>\n{_html_blocks(b.blocks, figures)}\n"
                "</details>")
    raise TypeError(f"no HTML for {type(b).__name__}")
