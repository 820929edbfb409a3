"""report.html (issue 18): `kdbench report --format ...,html` on the committed fixture tree (tests/fixtures/report,
copied first), checked against the report.md written beside it: every table with its header, rows and bold cells,
every figure embedded as a data URI, nothing fetched, the side bar's links resolving; then opened in headless
Chromium (skipped without it): a screenshot that is not blank, and the DOM after the page's script, with a column
sorted by clicks, "–" cells last, and the method column staying in view while a wide table scrolls."""

from __future__ import annotations

import base64
import html
import inspect
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli
from kdbench.report import FORMATS, document, write_report
from kdbench.report.figures import Figure, Plot, PlotInput
from kdbench.report.html import render_page

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "results"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium or chromium-browser on PATH (Debian: "
                                   "apt-get install chromium): report.html's browser checks need a real browser")
DELIMITER = re.compile(r"\|(\s*:?-+:?\s*\|)+")
MISSING = "–"


def report(*args: str) -> None:
    result = CliRunner().invoke(cli, ["report", *args])
    assert result.exit_code == 0, result.output


def copy_results(where: Path, per_class: bool = False) -> Path:
    """The fixture tree under ``where``; with ``per_class``, every record line gets per-class IoUs (road, car, sky
    around its mIoU), so the report writes per-class tables."""
    results = where / "results"
    shutil.copytree(FIXTURE, results)
    if per_class:
        for path in results.rglob("records.jsonl"):
            lines = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the fixture's deliberately broken line stays broken
                    lines.append(line)
                    continue
                record["per_class_iou"] = {"road": record["miou"] + 5, "car": record["miou"] - 5, "sky": record["miou"]}
                lines.append(json.dumps(record))
            path.write_text("\n".join(lines) + "\n")
    return results


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The fixture's report with tables and PNG plots (the report folder)."""
    root = tmp_path_factory.mktemp("plain")
    report(str(copy_results(root)), "--out", str(root / "rep"), "--format", "md,html,csv,tex,png")
    return root / "rep"


@pytest.fixture(scope="module")
def selected(tmp_path_factory) -> Path:
    """A report under a selection rule, with per-class tables (chosen-trial and sensitivity tables too)."""
    root = tmp_path_factory.mktemp("selected")
    report(str(copy_results(root, per_class=True)), "--out", str(root / "rep"), "--format", "md,html,csv",
           "--select", "default")
    return root / "rep"


class Page(HTMLParser):
    """What a test reads from report.html: tables (header and rows as text, which cells hold <strong> and which
    are marked best), images, every URL-bearing attribute, ids, the side bar's links, styles and scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.nav: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._cell: dict | None = None
        self._link: list | None = None
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in ("img", "br", "meta"):
            self._in.append(tag)
        self.ids |= {attributes["id"]} if "id" in attributes else set()
        self.urls += [v for k, v in attributes.items() if k in ("src", "href", "srcset", "poster", "data") and v]
        self.styles += [attributes["style"]] if "style" in attributes else []
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        elif tag == "table":
            self.tables.append({"header": [], "rows": [], "strong": set(), "best": set()})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td") and self.tables:
            self._cell = {"text": [], "best": "best" in (attributes.get("class") or "").split()}
        elif tag == "strong" and self._cell is not None:
            self._cell["strong"] = True
        elif tag == "a" and "nav" in self._in:
            self._link = [attributes.get("href", ""), []]

    def handle_endtag(self, tag: str) -> None:
        while self._in and self._in.pop() != tag:
            pass
        if tag in ("th", "td") and self._cell is not None:
            table = self.tables[-1]
            row = table["rows"][-1]
            place = (len(table["rows"]) - 2, len(row))  # body row index (the header row is rows[0])
            row.append(" ".join("".join(self._cell["text"]).split()))
            if self._cell.get("strong"):
                table["strong"].add(place)
            if self._cell["best"]:
                table["best"].add(place)
            self._cell = None
        elif tag == "table":
            table = self.tables[-1]
            table["header"], table["rows"] = table["rows"][0], table["rows"][1:]
        elif tag == "a" and self._link is not None:
            self.nav.append((self._link[0], " ".join("".join(self._link[1]).split())))
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"].append(data)
        if self._link is not None:
            self._link[1].append(data)
        if self._in and self._in[-1] == "style":
            self.styles.append(data)


def plain_cell(cell: str) -> str:
    text = re.sub(r"</?sup>", "", cell).replace("**", "")
    return " ".join(re.sub(r"(?<!\\)\*", "", text).split())


def markdown_tables(text: str) -> list[dict]:
    """The pipe tables of a Markdown text: header and rows as the reader sees them, and the bold cells."""
    lines, tables, index = text.splitlines(), [], 0
    while index < len(lines):
        if lines[index].startswith("|") and index + 1 < len(lines) and DELIMITER.fullmatch(lines[index + 1].strip()):
            header = [c.strip() for c in lines[index].strip().strip("|").split("|")]
            rows, index = [], index + 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append([c.strip() for c in lines[index].strip().strip("|").split("|")])
                index += 1
            tables.append({"header": [plain_cell(c) for c in header],
                           "rows": [[plain_cell(c) for c in r] for r in rows],
                           "bold": {(i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c.startswith("**")}})
        else:
            index += 1
    return tables


def expected_tables(folder: Path) -> list[dict]:
    """report.md's tables in order, each per-class file's tables after the line that links it."""
    tables, chunk = [], []
    for line in (folder / "report.md").read_text().splitlines():
        chunk.append(line)
        linked = re.findall(r"\]\((per-class/[^)]+\.md)\)", line)
        if linked:
            tables += markdown_tables("\n".join(chunk))
            chunk = []
            for path in linked:
                tables += markdown_tables((folder / path).read_text())
    return tables + markdown_tables("\n".join(chunk))


def page_of(folder: Path) -> Page:
    return Page((folder / "report.html").read_text(encoding="utf-8"))


def test_html_is_a_format_of_the_report_and_in_the_default_output(tmp_path):
    assert "html" in FORMATS
    written = write_report(copy_results(tmp_path), tmp_path / "rep", formats=("md", "html", "csv"))
    assert written.html == tmp_path / "rep" / "report.html" and written.html in written.files
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "results"), "--out", str(tmp_path / "x"),
                                      "--format", "md,htm"])
    assert result.exit_code != 0 and "html" in result.output  # the error names the choices, html among them
    assert inspect.signature(write_report).parameters["formats"].default == FORMATS


@pytest.mark.parametrize("folder", ["plain", "selected"])
def test_every_table_of_report_md_is_in_the_page_with_its_rows_and_bold_cells(folder, request):
    rep = request.getfixturevalue(folder)
    expected, found = expected_tables(rep), page_of(rep).tables
    assert len(found) == len(expected) >= 2
    for want, got in zip(expected, found, strict=True):
        assert got["header"] == want["header"]
        assert len(got["rows"]) == len(want["rows"]) and got["rows"] == want["rows"]
        assert got["strong"] == want["bold"] and got["best"] == want["bold"]
    assert sum(bool(t["bold"]) for t in expected) >= 2  # there are best cells to check


def test_selection_rule_per_class_and_sensitivity_tables_are_all_there(selected):
    headers = [t["header"][:3] for t in page_of(selected).tables]
    assert ["pair", "benchmark", "method"] in headers  # the chosen trials, and the sensitivity table
    assert sum(h == ["pair", "benchmark", "method"] for h in headers) == 2
    assert ["method", "road", "car"] in headers  # per-class
    text = (selected / "report.html").read_text()
    assert "Sensitivity to hyper-parameters" in text and "Selection rule: default" in text


def test_every_image_is_embedded_and_nothing_is_fetched(plain):
    page, text = page_of(plain), (plain / "report.md").read_text()
    shown = re.findall(r"(!?)\[[^]]*\]\(([^)]+\.png)\)", text)  # in order: plots, and loss curves as links
    assert {bang for bang, _ in shown} == {"!", ""}
    assert len(page.images) == len(shown)
    for src, (_, path) in zip(page.images, shown, strict=True):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data == (plain / path).read_bytes()
        assert Image.open(io.BytesIO(data)).size[0] > 0
    assert not [u for u in page.urls if re.match(r"\s*(https?:)?//", u)]
    assert not [s for s in page.styles if re.search(r"url\(\s*['\"]?\s*(https?:)?//", s)]
    assert not [t for t, a in page.tags if t in ("link", "iframe", "object", "embed") or (t == "script" and "src" in a)]
    assert not [u for u in page.urls if not u.startswith(("data:", "#"))]  # no file beside it is needed


def test_linked_tables_are_downloads_holding_the_file(plain):
    page = page_of(plain)
    downloads = {a["download"]: a["href"] for t, a in page.tags if t == "a" and "download" in a}
    csv = next(p for p in (plain / "tables").glob("*.csv"))
    assert base64.b64decode(downloads[csv.name].split(",", 1)[1]) == csv.read_bytes()
    assert downloads[csv.name].startswith("data:text/csv;base64,")


@pytest.mark.parametrize("folder", ["plain", "selected"])
def test_the_side_bar_lists_every_suite_rule_and_pair_and_its_links_resolve(folder, request):
    rep = request.getfixturevalue(folder)
    page = page_of(rep)
    headings = [re.sub(r"^#+ ", "", line) for line in (rep / "report.md").read_text().splitlines()
                if re.match(r"#{2,3} ", line)]
    nav = [(href, label) for href, label in page.nav if label != "Contents"]
    assert [label for _, label in nav] == headings
    internal = [u[1:] for u in page.urls if u.startswith("#")]
    assert internal and all(anchor in page.ids for anchor in internal)
    assert len({href for href, _ in nav}) == len(nav)  # a repeated pair heading gets its own anchor


def test_a_newly_registered_plot_appears_in_the_page(tmp_path, monkeypatch):
    def draw(view: PlotInput) -> list[Figure]:
        figures = []
        for name, color in (("square", (200, 30, 30)), ("linked", (30, 30, 200))):
            path = view.place.stem(name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 20), color).save(path)
            figures.append(Figure([path], alt="a square", caption=f"{view.title}: a plugin's square.") if
                           name == "square" else Figure([path], link="its twin"))
        return figures

    monkeypatch.setattr(document, "plots_of", lambda scope: [("square", Plot(draw, "pair", 25, "Twins"))]
                        if scope == "pair" else [])
    report(str(copy_results(tmp_path)), "--out", str(tmp_path / "rep"), "--format", "html,png")
    text = (tmp_path / "rep" / "report.html").read_text()
    pngs = sorted((tmp_path / "rep" / "plots").glob("*square.png")) + sorted(
        (tmp_path / "rep" / "plots").glob("*linked.png"))
    assert len(pngs) == 4  # two tables (settings), a figure and a linked figure each
    sources = [base64.b64decode(src.split(",", 1)[1]) for src in Page(text).images]
    assert sorted(sources) == sorted(p.read_bytes() for p in pngs)
    assert text.count("<figcaption>mini f2l (F2L): a plugin's square.</figcaption>") == 2
    assert text.count('>its twin</a>') == 2 and text.count("Show the 1 figure linked above") == 2


def test_an_html_only_report_still_holds_every_table(tmp_path):
    report(str(copy_results(tmp_path, per_class=True)), "--out", str(tmp_path / "rep"), "--format", "html")
    rep = tmp_path / "rep"
    assert (rep / "report.html").is_file() and not (rep / "report.md").exists()
    headers = [t["header"][:2] for t in page_of(rep).tables]
    assert headers.count(["method", "city"]) == 2 and ["method", "road"] in headers


def test_a_report_of_failed_runs_only_is_a_page_too(tmp_path):
    failed = tmp_path / "results" / "mini" / "rgb2irrg" / "f2l" / "cwd"
    shutil.copytree(FIXTURE / "mini" / "rgb2irrg" / "f2l" / "cwd", failed)
    report(str(tmp_path / "results"), "--out", str(tmp_path / "rep"), "--format", "html")
    text = (tmp_path / "rep" / "report.html").read_text()
    assert "No finished runs, 1 failed." in text and "loss became nan at step 12" in text


def test_text_is_escaped_and_markdown_read_by_its_rules(tmp_path):
    page = render_page("# T\n\n- `a|b`: <script>alert(1)</script> 2 * 3 **bold *em* x**\n\n| m | v |\n|---|---:|\n"
                       "| a `x|y` | **1.0 <sup>n=1</sup>** |\n| b | – |\n| c | +4.4 [-3.9, +12.6] n.s. |\n", tmp_path)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:" not in render_page("see [this](javascript:alert(1)) and [that](#x)", tmp_path)
    assert "2 * 3 <strong>bold <em>em</em> x</strong>" in page and "<code>a|b</code>" in page
    table = Page(page).tables[0]
    assert table["rows"] == [["a x|y", "1.0 n=1"], ["b", "–"], ["c", "+4.4 [-3.9, +12.6] n.s."]]
    assert table["best"] == {(0, 1)}
    assert 'data-sort="1.0"' in page and 'data-sort="4.4"' in page
    assert re.search(r'<td class="missing right">–</td>', page)


def browser(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@needs_browser
def test_the_page_renders_in_a_browser(plain, tmp_path):
    shot = tmp_path / "report.png"
    browser(tmp_path, plain / "report.html", f"--screenshot={shot}", "--window-size=1400,1800")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1400)
    assert pixels.std() > 20, "the screenshot is blank"
    assert (pixels < 100).mean() > 0.005, "no text or lines drawn"
    assert 0.5 < (pixels > 240).mean() < 0.98  # mostly page background, not all of it
    assert pixels[:, 20:200].mean() < pixels[:, 600:].mean() + 20  # a side bar is drawn on the left


PROBE = """<script>
window.addEventListener("load", () => {
  const tables = Array.from(document.querySelectorAll("table"));
  const result = {ready: tables.map((t) => t.classList.contains("ready")),
                  rows: tables.map((t) => t.tBodies[0].rows.length)};
  const named = (t) => Array.from(t.tHead.rows[0].cells).some((c) => c.textContent.trim() === "mean OOD");
  const table = tables.find(named);
  const head = Array.from(table.tHead.rows[0].cells);
  const order = () => Array.from(table.tBodies[0].rows, (r) => r.cells[0].textContent.trim());
  const ood = head.find((c) => c.textContent.trim() === "mean OOD");
  ood.click(); result.descending = order(); result.state = ood.getAttribute("aria-sort");
  ood.click(); result.ascending = order();
  head[0].click(); result.byMethod = order();
  const scroll = table.closest(".scroll");
  scroll.scrollLeft = scroll.scrollWidth;
  const box = scroll.getBoundingClientRect(), cells = table.tBodies[0].rows[0].cells;
  result.scrolled = scroll.scrollLeft;
  result.first = cells[0].getBoundingClientRect().left - box.left;
  result.second = cells[1].getBoundingClientRect().left - box.left;
  result.images = Array.from(document.images, (i) => i.naturalWidth);
  document.body.setAttribute("data-probe", JSON.stringify(result));
});
</script>
</body>"""


def probe(tmp_path: Path, folder: Path) -> dict:
    page = tmp_path / "probe.html"
    page.write_text((folder / "report.html").read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    dom = browser(tmp_path, page, "--dump-dom", "--window-size=1000,800").stdout
    found = re.search(r'<body[^>]*data-probe="([^"]*)"', dom)
    assert found, "the probe did not run: the page's script failed, or the DOM lost its tables"
    return json.loads(html.unescape(found.group(1)))


def by_mean_ood(table: dict, descending: bool) -> list[str]:
    """The table's method order sorted by mean OOD, as the page's script should: by value, "–" cells last."""
    column = table["header"].index("mean OOD")
    present = [r for r in table["rows"] if r[column] != MISSING]
    ranked = sorted(present, key=lambda row: float(row[column].split()[0]), reverse=descending)
    return [r[0] for r in ranked] + [r[0] for r in table["rows"] if r[column] == MISSING]


@needs_browser
def test_columns_sort_by_a_click_and_the_method_column_stays_in_view(plain, tmp_path):
    result = probe(tmp_path, plain)
    tables = expected_tables(plain)
    assert result["ready"] == [True] * len(tables)  # the script ran over every table
    assert result["rows"] == [len(t["rows"]) for t in tables]
    paper = tables[0]
    assert result["state"] == "descending"
    assert result["descending"] == by_mean_ood(paper, descending=True)
    assert result["ascending"] == by_mean_ood(paper, descending=False)
    assert result["descending"][-1] == result["ascending"][-1] == "kd (temperature=4.0)"  # its "–" stays last
    assert result["byMethod"] == sorted(r[0] for r in paper["rows"])
    assert result["scrolled"] > 100, "the paper table does not scroll sideways at 1000 px"
    assert abs(result["first"]) < 3 and result["second"] < 0  # the method column stays, the next one scrolled away
    assert result["images"] and all(width > 0 for width in result["images"])


def test_written_files_get_the_mode_a_plain_write_gives(tmp_path):
    """mkstemp's 0600 used to reach report.md and every table: unreadable to a shared group."""
    import os
    import stat

    from kdbench.results import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
