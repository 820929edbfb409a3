"""``report.html``: report.md as one self-contained page, for reading in a browser without a server or network.

The page is built from report.md's own text (parsed by ``kdbench.report.markdown``), so it holds whatever report.md
holds: every table, every embedded figure, every caption, in the same order. What report.md links to under the
report folder is brought into the page: a linked image (the loss curves) becomes a figure in a collapsed block
after the paragraph that links it, a linked Markdown file (the per-class tables) is inlined the same way, and any
other linked file (the tables' CSV and LaTeX) becomes a download link holding the file. Images are base64 data
URIs; style and script are inline; nothing is fetched.

Tables sort by a click on a column header (numbers by value, "–" cells last either way); their method column stays
in view while a wide table scrolls sideways; a cell that is bold in report.md (the best value of its column) is bold
here. A side bar lists the sections (suite, selection rule) and the pairs under them.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image as PILImage

from kdbench.report import markdown as md
from kdbench.results import atomic_write_text

#: the heading levels the side bar lists: suites and selection rules (##), pairs (###)
NAV_LEVELS = (2, 3)
#: the schemes a link to elsewhere may use ("": a relative link or an anchor); any other link is shown as its text
LINK_SCHEMES = ("", "http", "https", "mailto")
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp")
CSS_DPI = 96.0
#: a leading number of a cell's text: its sort key ("33.8 n=1", "+4.4 [-3.9, +12.6] n.s.")
_NUMBER = re.compile(r"^[+\-−]?(?:\d+(?:\.\d*)?|\.\d+)")
MISSING = ("", "–", "-", "—")


def write_html(path: Path, markdown: str, base: Path) -> Path:
    """Write the page of ``markdown`` (report.md's text, whose links are relative to ``base``) to ``path``."""
    atomic_write_text(path, render_page(markdown, base))
    return path


def render_page(markdown: str, base: Path) -> str:
    """The whole HTML document of ``markdown``."""
    page = _Page(Path(base))
    body = page.blocks(md.parse(markdown))
    return _TEMPLATE.format(title=html.escape(page.title or "kdbench report"), style=_STYLE, nav=page.nav(),
                            body=body, script=_SCRIPT)


@dataclass
class _Attachment:
    """A file a paragraph links to, shown after it: an image, or a Markdown document."""

    path: Path
    label: str
    anchor: str


class _Page:
    """Renders blocks to HTML, collecting the side bar's entries and the files the text links to."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.title = ""
        self.ids: set[str] = set()
        self.toc: list[tuple[int, str, str]] = []
        self.pending: list[_Attachment] = []
        self.included: set[Path] = set()
        self.depth = 0  # > 0 inside an inlined document: its headings stay out of the side bar

    def blocks(self, blocks: list[md.Block], levels: dict[int, int] | None = None) -> str:
        parts, index = [], 0
        while index < len(blocks):
            block = blocks[index]
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if isinstance(block, md.Paragraph) and _image_only(block) and _caption(following):
                parts.append(self.plot(block.children[0], following))
                index += 2
            elif isinstance(block, md.Paragraph) and _image_only(block):
                parts.append(self.plot(block.children[0], None))
                index += 1
            elif isinstance(block, md.Paragraph) and _caption(block) and isinstance(following, md.Table):
                parts.append(self.table(following, block))
                index += 2
            else:
                parts.append(self.block(block, levels or {}))
                index += 1
            parts.append(self.attachments())
        return "\n".join(p for p in parts if p)

    def block(self, block: md.Block, levels: dict[int, int]) -> str:
        if isinstance(block, md.Heading):
            return self.heading(block, levels.get(block.level, block.level))
        if isinstance(block, md.Table):
            return self.table(block, None)
        if isinstance(block, md.BulletList):
            return "<ul>\n" + "\n".join(f"<li>{self.inline(item)}</li>" for item in block.items) + "\n</ul>"
        return f"<p>{self.inline(block.children)}</p>"

    def heading(self, heading: md.Heading, level: int) -> str:
        text = md.plain_text(heading.children)
        anchor = self.anchor(text)
        if level == 1 and not self.title and not self.depth:
            self.title = text
        if level in NAV_LEVELS and not self.depth:
            self.toc.append((level, anchor, self.inline(heading.children)))
        level = min(level, 6)
        return f'<h{level} id="{anchor}">{self.inline(heading.children)}</h{level}>'

    def anchor(self, text: str) -> str:
        """A unique id for ``text``: its words, lower case, joined by dashes (a number added on a repeat)."""
        stem = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-") or "section"
        anchor, number = stem, 1
        while anchor in self.ids:
            number += 1
            anchor = f"{stem}-{number}"
        self.ids.add(anchor)
        return anchor

    def table(self, table: md.Table, caption: md.Paragraph | None) -> str:
        head = "".join(f'<th scope="col"{_align(table.align, i)}>{self.inline(cell)}</th>'
                       for i, cell in enumerate(table.header))
        rows = "\n".join("<tr>" + "".join(self.cell(cell, table.align, i) for i, cell in enumerate(row)) + "</tr>"
                         for row in table.rows)
        figcaption = f"<figcaption>{self.inline(caption.children[0].children)}</figcaption>" if caption else ""
        return (f'<figure class="table">{figcaption}<div class="scroll"><table class="sortable">\n'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div></figure>")

    def cell(self, cell: list[md.Inline], align: list[str], index: int) -> str:
        text = md.plain_text(cell).strip()
        classes = [c for c, on in (("best", _bold(cell)), ("missing", text in MISSING)) if on]
        number = _NUMBER.match(text)
        attributes = _align(align, index, classes)
        if number and text not in MISSING:
            attributes += f' data-sort="{float(number.group(0).replace("−", "-"))!r}"'
        return f"<td{attributes}>{self.inline(cell)}</td>"

    def plot(self, image: md.Image, caption: md.Paragraph | None) -> str:
        figcaption = f"<figcaption>{self.inline(caption.children[0].children)}</figcaption>" if caption else ""
        return f'<figure class="plot"><div class="frame">{self.image(image.target, image.alt)}</div>{figcaption}' \
               "</figure>"

    def image(self, target: str, alt: str) -> str:
        path = self.local(target)
        if path is None:
            return f'<span class="missing-image">[image not found: {html.escape(target)}]</span>'
        size = _css_size(path)
        dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
        return f'<img src="{_data_uri(path)}" alt="{html.escape(alt)}"{dimensions}>'

    def inline(self, nodes: list[md.Inline]) -> str:
        parts = []
        for node in nodes:
            if isinstance(node, md.Text):
                parts.append(html.escape(node.text, quote=False).replace("\n", " "))
            elif isinstance(node, md.Code):
                parts.append(f"<code>{html.escape(node.text, quote=False)}</code>")
            elif isinstance(node, md.Span):
                parts.append(f"<{node.tag}>{self.inline(node.children)}</{node.tag}>")
            elif isinstance(node, md.Link):
                parts.append(self.link(node))
            else:
                parts.append(self.image(node.target, node.alt))
        return "".join(parts)

    def link(self, link: md.Link) -> str:
        label = self.inline(link.children)
        path = self.local(link.target)
        if path is None:
            if urlsplit(link.target).scheme.lower() not in LINK_SCHEMES:
                return label
            return f'<a href="{html.escape(link.target)}">{label}</a>'
        if path.suffix.lower() in IMAGE_SUFFIXES or (path.suffix.lower() == ".md" and path not in self.included):
            attachment = _Attachment(path, md.plain_text(link.children), self.anchor(f"file {path.stem}"))
            self.pending.append(attachment)
            return f'<a href="#{attachment.anchor}">{label}</a>'
        return f'<a href="{_data_uri(path)}" download="{html.escape(path.name)}">{label}</a>'

    def local(self, target: str) -> Path | None:
        """The file under the report folder that ``target`` names, if it is one and exists."""
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path or target.startswith("#"):
            return None
        path = (self.base / unquote(parts.path)).resolve()
        base = self.base.resolve()
        return path if path.is_file() and (path == base or base in path.parents) else None

    def attachments(self) -> str:
        """The files the block just rendered links to, in collapsed blocks: figures, then inlined documents."""
        pending, self.pending = self.pending, []
        figures = [a for a in pending if a.path.suffix.lower() in IMAGE_SUFFIXES]
        parts = []
        if figures:
            inner = "\n".join(f'<figure class="plot" id="{a.anchor}"><div class="frame">'
                              f"{self.image(str(a.path), a.label)}</div><figcaption>{html.escape(a.label)}"
                              "</figcaption></figure>" for a in figures)
            count = f"{len(figures)} figure{'s' if len(figures) > 1 else ''}"
            parts.append(f'<details class="linked"><summary>Show the {count} linked above</summary>\n{inner}\n'
                         "</details>")
        parts += [self.document(a) for a in pending if a not in figures]
        return "\n".join(parts)

    def document(self, attachment: _Attachment) -> str:
        """A linked Markdown file, inlined under the pair's heading: its first heading becomes the block's title, the
        others become <h4> and below."""
        self.included.add(attachment.path)
        blocks = md.parse(attachment.path.read_text(encoding="utf-8"))
        title = next((md.plain_text(b.children) for b in blocks if isinstance(b, md.Heading)), attachment.path.name)
        if blocks and isinstance(blocks[0], md.Heading):
            blocks = blocks[1:]
        tables = sum(isinstance(b, md.Table) for b in blocks)
        found = sorted({b.level for b in blocks if isinstance(b, md.Heading)})
        levels = {level: min(4 + rank, 6) for rank, level in enumerate(found)}
        self.depth += 1
        try:
            inner = self.blocks(blocks, levels)
        finally:
            self.depth -= 1
        count = f"{tables} table{'s' if tables != 1 else ''}"
        return (f'<details class="document" id="{attachment.anchor}"><summary>{html.escape(title)} ({count})'
                f"</summary>\n{inner}\n</details>")

    def nav(self) -> str:
        """The side bar: a list of the ## headings, each with its ### headings under it."""
        items, open_sub = [], False
        for level, anchor, text in self.toc:
            if level == NAV_LEVELS[0]:
                if open_sub:
                    items.append("</ul></li>")
                    open_sub = False
                elif items:
                    items.append("</li>")
                items.append(f'<li><a href="#{anchor}">{text}</a>')
            else:
                if not open_sub:
                    items.append("<ul>")
                    open_sub = True
                items.append(f'<li><a href="#{anchor}">{text}</a></li>')
        if items:
            items.append("</ul></li>" if open_sub else "</li>")
        return "<ul>\n" + "\n".join(items) + "\n</ul>"


def _image_only(block: md.Paragraph) -> bool:
    return len(block.children) == 1 and isinstance(block.children[0], md.Image)


def _caption(block: md.Block | None) -> bool:
    """Whether ``block`` is a caption: a paragraph that is one emphasis."""
    return isinstance(block, md.Paragraph) and len(block.children) == 1 and \
        isinstance(block.children[0], md.Span) and block.children[0].tag == "em"


def _bold(cell: list[md.Inline]) -> bool:
    """Whether a cell is bold as a whole (report.md's mark of a column's best value)."""
    content = [n for n in cell if not (isinstance(n, md.Text) and not n.text.strip())]
    return len(content) == 1 and isinstance(content[0], md.Span) and content[0].tag == "strong"


def _align(align: list[str], index: int, classes: list[str] | None = None) -> str:
    names = list(classes or [])
    if index < len(align) and align[index] in ("right", "center"):
        names.append(align[index])
    return f' class="{" ".join(names)}"' if names else ""


def _data_uri(path: Path) -> str:
    kind = {".svg": "image/svg+xml", ".md": "text/markdown", ".tex": "text/x-tex", ".csv": "text/csv"}.get(
        path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _css_size(path: Path) -> tuple[int, int] | None:
    """A raster image's size in CSS pixels at its own resolution (a 150-dpi plot keeps its printed size), or None
    (SVG: the browser reads its size)."""
    if path.suffix.lower() == ".svg":
        return None
    try:
        with PILImage.open(path) as image:
            dpi = float((image.info.get("dpi") or (CSS_DPI,))[0]) or CSS_DPI
            scale = CSS_DPI / dpi if dpi > CSS_DPI else 1.0
            return round(image.width * scale), round(image.height * scale)
    except OSError:
        return None


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="kdbench report">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<nav id="toc" aria-label="Contents"><p class="nav-title"><a href="#top">Contents</a></p>
{nav}
</nav>
<main id="top">
{body}
</main>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
:root { color-scheme: light; --line: #d0d7de; --soft: #f6f8fa; --text: #1f2328; --muted: #57606a;
        --best: #e6f4ea; --nav: 17rem; }
* { box-sizing: border-box; }
html { scroll-padding-top: 1rem; }
body { margin: 0; color: var(--text); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", Arial, sans-serif; }
nav#toc { position: fixed; top: 0; left: 0; bottom: 0; width: var(--nav); overflow-y: auto; padding: 1rem;
          background: var(--soft); border-right: 1px solid var(--line); font-size: 0.85rem; line-height: 1.35; }
nav#toc ul { list-style: none; margin: 0; padding: 0; }
nav#toc li { margin: 0.35rem 0; }
nav#toc li ul { margin: 0.2rem 0 0.5rem 0.9rem; }
nav#toc a { color: var(--text); text-decoration: none; }
nav#toc a:hover { text-decoration: underline; }
nav#toc > ul > li > a { font-weight: 600; }
.nav-title { margin: 0 0 0.6rem; font-weight: 700; font-size: 0.95rem; }
main { margin-left: var(--nav); padding: 1.5rem 2rem 4rem; min-width: 0; }
main > p, main > ul, details > p, figcaption { max-width: 62rem; }
h1 { font-size: 1.7rem; margin: 0 0 1rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.8rem; padding-bottom: 0.3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.12rem; margin: 2rem 0 0.6rem; }
h4, h5, h6 { font-size: 1rem; margin: 1.4rem 0 0.5rem; }
a { color: #0969da; }
code { font: 0.85em ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
       background: var(--soft); padding: 0.1em 0.3em; border-radius: 4px; }
figure { margin: 1rem 0 1.5rem; }
figcaption { color: var(--muted); font-size: 0.88rem; font-style: italic; margin: 0.4rem 0; }
figure.table figcaption { margin: 0 0 0.5rem; }
.scroll, .frame { overflow-x: auto; max-width: 100%; }
.scroll { width: fit-content; border: 1px solid var(--line); border-radius: 6px; }
.frame.wide { border: 1px dashed var(--line); border-radius: 6px; }
.hint { color: var(--muted); font-size: 0.8rem; margin: 0.2rem 0 0; }
.frame img { display: block; max-width: none; height: auto; cursor: zoom-out; }
.frame img.fit { max-width: 100%; cursor: zoom-in; }
table { border-collapse: separate; border-spacing: 0; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.35rem 0.65rem; white-space: nowrap; border-bottom: 1px solid #eaeef2; background: #fff;
         text-align: left; }
thead th { background: #eef1f4; font-weight: 600; border-bottom: 1px solid var(--line); vertical-align: bottom; }
tbody tr:last-child > * { border-bottom: 0; }
tbody tr:nth-child(even) > * { background: #f8f9fb; }
tr > :first-child { position: sticky; left: 0; z-index: 1; border-right: 1px solid var(--line); }
thead tr > :first-child { z-index: 2; }
.right { text-align: right; }
.center { text-align: center; }
td.best { background: var(--best) !important; }
td.missing { color: #8c959f; }
sup { font-size: 0.7em; color: var(--muted); }
table.ready th { cursor: pointer; user-select: none; }
table.ready th::after { content: "\\2195"; margin-left: 0.3em; opacity: 0.3; font-weight: 400; }
table.ready th[aria-sort="ascending"]::after { content: "\\25B2"; opacity: 0.8; }
table.ready th[aria-sort="descending"]::after { content: "\\25BC"; opacity: 0.8; }
th:focus-visible { outline: 2px solid #0969da; outline-offset: -2px; }
details { margin: 0.4rem 0 1.2rem; padding: 0.5rem 0.8rem; border: 1px solid var(--line); border-radius: 6px; }
details[open] { background: #fcfcfd; }
summary { cursor: pointer; font-weight: 600; }
.missing-image { color: #cf222e; }
@media (max-width: 60rem) {
  nav#toc { position: static; width: auto; border-right: 0; border-bottom: 1px solid var(--line); }
  main { margin-left: 0; padding: 1rem; }
}
@media print { nav#toc { display: none; } main { margin-left: 0; } details { border: 0; } }
"""

_SCRIPT = """
"use strict";
(() => {
  const value = (cell) => (cell && cell.dataset.sort !== undefined ? Number(cell.dataset.sort) : null);
  const missing = (cell) => !cell || cell.classList.contains("missing");
  function compare(a, b, column, sign) {
    const x = a.cells[column], y = b.cells[column];
    if (missing(x) || missing(y)) return missing(x) - missing(y);
    const nx = value(x), ny = value(y);
    if (nx !== null && ny !== null) return sign * (nx - ny);
    if (nx !== null || ny !== null) return nx !== null ? -1 : 1;
    return sign * x.textContent.trim().localeCompare(y.textContent.trim(), undefined, {numeric: true});
  }
  function sort(table, header) {
    const column = header.cellIndex, body = table.tBodies[0];
    const numeric = Array.from(body.rows).some((row) => value(row.cells[column]) !== null);
    const now = header.getAttribute("aria-sort");
    const next = now === "descending" ? "ascending" : now === "ascending" ? "descending"
      : numeric ? "descending" : "ascending";
    for (const other of header.parentElement.cells) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", next);
    const sign = next === "ascending" ? 1 : -1;
    const rows = Array.from(body.rows, (row, index) => [row, index]);
    rows.sort(([a, i], [b, j]) => compare(a, b, column, sign) || i - j);
    for (const [row] of rows) body.appendChild(row);
  }
  for (const table of document.querySelectorAll("table.sortable")) {
    for (const header of table.tHead.rows[0].cells) {
      header.tabIndex = 0;
      header.title = "Sort by this column";
      header.addEventListener("click", () => sort(table, header));
      header.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(table, header); }
      });
    }
    table.classList.add("ready");
  }
  function markWide(image) {
    const frame = image.parentElement, width = Number(image.getAttribute("width"));
    if (frame.classList.contains("wide") || !width || !frame.clientWidth || width <= frame.clientWidth) return;
    frame.classList.add("wide");
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Wider than the page: scroll it sideways, or click it to fit (click again for full size).";
    frame.after(hint);
  }
  for (const image of document.querySelectorAll(".frame img")) {
    image.addEventListener("click", () => image.classList.toggle("fit"));
    markWide(image);
  }
  for (const details of document.querySelectorAll("details")) {
    details.addEventListener("toggle", () => details.querySelectorAll(".frame img").forEach(markWide));
  }
  function reveal() {
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (!target) return;
    for (let node = target; node; node = node.parentElement) if (node.tagName === "DETAILS") node.open = true;
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", reveal);
  reveal();
})();
"""
