"""A parser for the Markdown that ``kdbench report`` writes (report.md and ``per-class/*.md``), into a tree that
``kdbench.report.html`` renders. It reads the subset those files use, by the CommonMark rules for it:

- blocks: ATX headings (``#`` to ``######``), pipe tables (a header row, a delimiter row that sets each column's
  alignment, body rows), bullet lists (``- `` items), paragraphs (consecutive lines), separated by blank lines;
- inlines: backslash escapes, code spans, ``**strong**``, ``*emphasis*`` (left- and right-flanking delimiters),
  links ``[text](target)``, images ``![alt](target)`` and the raw tags ``<sup>`` and ``<sub>``.

Anything else is text: a ``<`` that opens no allowed tag, or a ``*`` that closes nothing, is shown as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: the raw inline HTML tags kept as elements (the tables' seed-count superscripts)
RAW_TAGS = ("sup", "sub")
ESCAPABLE = set("\\`*_{}[]()#+-.!|<>~")


@dataclass
class Text:
    text: str


@dataclass
class Code:
    text: str


@dataclass
class Span:
    """Inline content wrapped in an element: ``strong``, ``em``, ``sup`` or ``sub``."""

    tag: str
    children: list[Inline]


@dataclass
class Link:
    children: list[Inline]
    target: str


@dataclass
class Image:
    alt: str
    target: str


Inline = Text | Code | Span | Link | Image


@dataclass
class Heading:
    level: int
    children: list[Inline]


@dataclass
class Paragraph:
    children: list[Inline]


@dataclass
class BulletList:
    items: list[list[Inline]]


@dataclass
class Table:
    header: list[list[Inline]]
    #: per column: "left", "right", "center" or "" (none given)
    align: list[str]
    rows: list[list[list[Inline]]] = field(default_factory=list)


Block = Heading | Paragraph | BulletList | Table

_HEADING = re.compile(r"^(#{1,6})(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$")
_DELIMITER_CELL = re.compile(r"^:?-+:?$")


def parse(text: str) -> list[Block]:
    """The blocks of a Markdown document, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
        elif match := _HEADING.match(line.strip()):
            blocks.append(Heading(len(match.group(1)), parse_inline((match.group(2) or "").rstrip("# "))))
            index += 1
        elif _is_table_start(lines, index):
            index = _table(lines, index, blocks)
        elif _is_item(line):
            index = _bullets(lines, index, blocks)
        else:
            index = _paragraph(lines, index, blocks)
    return blocks


def _is_item(line: str) -> bool:
    return line.startswith(("- ", "* ", "+ ")) or line.strip() in ("-", "*", "+")


def _is_table_start(lines: list[str], index: int) -> bool:
    if index + 1 >= len(lines) or "|" not in lines[index]:
        return False
    cells = split_row(lines[index + 1])
    return bool(cells) and all(_DELIMITER_CELL.match(c.replace(" ", "")) for c in cells) and \
        len(cells) == len(split_row(lines[index]))


def _table(lines: list[str], index: int, blocks: list[Block]) -> int:
    header = split_row(lines[index])
    align = [_alignment(c.replace(" ", "")) for c in split_row(lines[index + 1])]
    table = Table([parse_inline(c) for c in header], align)
    index += 2
    while index < len(lines) and lines[index].strip() and "|" in lines[index]:
        cells = split_row(lines[index])
        cells = (cells + [""] * len(header))[:len(header)]
        table.rows.append([parse_inline(c) for c in cells])
        index += 1
    blocks.append(table)
    return index


def _alignment(delimiter: str) -> str:
    left, right = delimiter.startswith(":"), delimiter.endswith(":")
    return "center" if left and right else "right" if right else "left" if left else ""


def split_row(line: str) -> list[str]:
    """A table row's cells: split on the pipes that are neither escaped nor inside a code span, the outer pipes
    dropped, each cell stripped (an escaped pipe stays escaped, for the inline parser)."""
    text = line.strip()
    cells, current, index, ticks = [], [], 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index:index + 2])
            index += 2
            continue
        if char == "`":
            run = len(text[index:]) - len(text[index:].lstrip("`"))
            ticks = 0 if ticks == run else (run if ticks == 0 else ticks)
            current.append("`" * run)
            index += run
            continue
        if char == "|" and not ticks:
            cells.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    cells.append("".join(current))
    if text.startswith("|"):
        cells = cells[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        cells = cells[:-1]
    return [c.strip() for c in cells]


def _bullets(lines: list[str], index: int, blocks: list[Block]) -> int:
    items: list[list[str]] = []
    while index < len(lines) and lines[index].strip():
        line = lines[index]
        if _is_item(line):
            items.append([line[2:].strip()])
        elif line.startswith((" ", "\t")) or not _starts_block(lines, index):
            items[-1].append(line.strip())
        else:
            break
        index += 1
    blocks.append(BulletList([parse_inline("\n".join(item)) for item in items]))
    return index


def _starts_block(lines: list[str], index: int) -> bool:
    line = lines[index]
    return bool(_HEADING.match(line.strip())) or _is_item(line) or _is_table_start(lines, index)


def _paragraph(lines: list[str], index: int, blocks: list[Block]) -> int:
    start = index
    while index < len(lines) and lines[index].strip() and (index == start or not _starts_block(lines, index)):
        index += 1
    blocks.append(Paragraph(parse_inline("\n".join(line.strip() for line in lines[start:index]))))
    return index


def parse_inline(text: str) -> list[Inline]:
    """The inline content of a heading, paragraph, list item or table cell."""
    return _Inlines(text).parse(0, len(text))


class _Inlines:
    """A recursive-descent scanner over one run of inline text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self, start: int, end: int) -> list[Inline]:
        nodes: list[Inline] = []
        buffer: list[str] = []
        index = start
        while index < end:
            found = self._construct(index, end)
            if found is None:
                char = self.text[index]
                if char == "\\" and index + 1 < end and self.text[index + 1] in ESCAPABLE:
                    buffer.append(self.text[index + 1])
                    index += 2
                else:
                    buffer.append(char)
                    index += 1
                continue
            node, index = found
            if buffer:
                nodes.append(Text("".join(buffer)))
                buffer = []
            nodes.append(node)
        if buffer:
            nodes.append(Text("".join(buffer)))
        return nodes

    def _construct(self, index: int, end: int) -> tuple[Inline, int] | None:
        """The element that starts at ``index`` and the position after it, or None (the character is text)."""
        char = self.text[index]
        if char == "`":
            return self._code(index, end)
        if char == "!" and self.text.startswith("![", index):
            return self._link(index + 1, end, image=True)
        if char == "[":
            return self._link(index, end, image=False)
        if char == "*":
            return self._emphasis(index, end)
        if char == "<":
            return self._raw_tag(index, end)
        return None

    def _code(self, index: int, end: int) -> tuple[Inline, int] | None:
        run = len(self.text[index:end]) - len(self.text[index:end].lstrip("`"))
        fence = "`" * run
        close = index + run
        while True:
            close = self.text.find(fence, close, end)
            if close < 0:
                return None
            after = close + run
            if after >= end or self.text[after] != "`":
                break
            close = after + len(self.text[after:end]) - len(self.text[after:end].lstrip("`"))
        body = self.text[index + run:close].replace("\n", " ")
        if body.startswith(" ") and body.endswith(" ") and body.strip():
            body = body[1:-1]
        return Code(body), close + run

    def _link(self, index: int, end: int, image: bool) -> tuple[Inline, int] | None:
        close = self._matching(index, end, "[", "]")
        if close is None or close + 1 >= end or self.text[close + 1] != "(":
            return None
        paren = self._matching(close + 1, end, "(", ")")
        if paren is None:
            return None
        target = self.text[close + 2:paren].strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        if image:
            alt = plain_text(self.parse(index + 1, close))
            return Image(alt, target), paren + 1
        return Link(self.parse(index + 1, close), target), paren + 1

    def _matching(self, index: int, end: int, opening: str, closing: str) -> int | None:
        """The position of the bracket that closes the one at ``index`` (escapes and code spans skipped)."""
        depth, position = 0, index
        while position < end:
            char = self.text[position]
            if char == "\\":
                position += 2
                continue
            if char == "`" and (code := self._code(position, end)) is not None:
                position = code[1]
                continue
            if char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
                if depth == 0:
                    return position
            position += 1
        return None

    def _emphasis(self, index: int, end: int) -> tuple[Inline, int] | None:
        width = 2 if self.text.startswith("**", index) else 1
        after = index + width
        if after >= end or self.text[after].isspace() or self.text[after] == "*":
            return None
        close = self._closing(after, end, width)
        if close is None:
            return None
        return Span("strong" if width == 2 else "em", self.parse(after, close)), close + width

    def _closing(self, start: int, end: int, width: int) -> int | None:
        """Where the run of ``width`` stars that closes an emphasis opened before ``start`` begins: a
        right-flanking run (no space before it); code spans, links, raw tags and nested emphases are skipped
        whole."""
        position = start
        while position < end:
            char = self.text[position]
            if char == "\\":
                position += 2
                continue
            if char != "*":
                found = self._construct(position, end) if char in "`[!<" else None
                position = found[1] if found is not None else position + 1
                continue
            run = len(self.text[position:end]) - len(self.text[position:end].lstrip("*"))
            if run == width and position > start and not self.text[position - 1].isspace():
                return position
            inner = self._emphasis(position, end)
            position = inner[1] if inner is not None else position + run
        return None

    def _raw_tag(self, index: int, end: int) -> tuple[Inline, int] | None:
        for tag in RAW_TAGS:
            opening, closing = f"<{tag}>", f"</{tag}>"
            if self.text.startswith(opening, index):
                close = self.text.find(closing, index + len(opening), end)
                if close >= 0:
                    return Span(tag, self.parse(index + len(opening), close)), close + len(closing)
        return None


def plain_text(nodes: list[Inline]) -> str:
    """The text a reader sees, markup removed (an image counts as its alt text)."""
    parts = []
    for node in nodes:
        if isinstance(node, Text | Code):
            parts.append(node.text)
        elif isinstance(node, Span | Link):
            parts.append(plain_text(node.children))
        elif isinstance(node, Image):
            parts.append(node.alt)
    return "".join(parts)
