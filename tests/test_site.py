"""The course website (``make site``): built from the stored outputs, complete, and free of solutions.

The book is built once for this module. Then: every notebook has a page and the front page links
to each; every internal link and image resolves, anchors included; no line of any solution, no
answer and no answer-key explanation reaches a page, its sources or its downloads; and headless
Chromium renders two pages with typeset math, a drawn figure and a folded hint that opens.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib
import json
import os
import re
import shutil
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Set, Tuple
from urllib.parse import unquote, urlparse

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import build_site  # noqa: E402

from involution_edu.exercises import CHECKER_MODULES  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Dict[str, object]:
    return build_site.build(tmp_path_factory.mktemp("site"), mathjax="local")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: List[Tuple[str, str]] = []
        self.ids: Set[str] = set()
        self.text: List[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for name in ("href", "src"):
            if attrs.get(name) and not (tag == "link" and attrs.get("rel") == "preconnect"):
                self.links.append((tag, attrs[name]))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _solution_lines(path: Path) -> Set[str]:
    return build_site.solution_lines(nbformat.read(path, as_version=4))


def _page_text(path: Path) -> str:
    return re.sub(r"\s+", " ", html.unescape("".join(_parse(path).text)))


def test_every_notebook_has_a_page_and_the_front_page_links_to_each(site):
    html_dir: Path = site["html"]
    front = (html_dir / "index.html").read_text(encoding="utf-8")
    assert "Course map" in front
    for notebook in NOTEBOOKS:
        page = html_dir / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        assert f'href="{notebook.stem}.html"' in front, f"the front page does not link to {notebook.stem}"
        assert (html_dir / "_downloads").exists()
    assert site["page_count"] >= len(NOTEBOOKS) + 1
    assert site["mathjax"] != "cdn", "MathJax must be copied into the site (offline build)"


def test_every_internal_link_and_image_resolves(site):
    html_dir: Path = site["html"]
    broken = []
    for page in sorted(html_dir.glob("*.html")):
        for tag, link in _parse(page).links:
            parsed = urlparse(link)
            if parsed.scheme or link.startswith("//") or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = page if not parsed.path else (page.parent / unquote(parsed.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.name}: <{tag}> {link} -> missing {target.relative_to(html_dir.resolve()) if html_dir.resolve() in target.parents else target}")
                continue
            if parsed.fragment and target.suffix == ".html" and unquote(parsed.fragment) not in _parse(target).ids:
                broken.append(f"{page.name}: <{tag}> {link} -> no id {parsed.fragment!r} in {target.name}")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:30])


def test_no_external_resource_is_needed_to_read_a_page(site):
    for page in sorted(site["html"].glob("*.html")):
        external = [link for tag, link in _parse(page).links if tag in ("script", "img")
                    and urlparse(link).scheme in ("http", "https")]
        assert not external, f"{page.name} loads {external} from the network"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_solution_line_reaches_a_page_its_source_or_its_download(site, notebook):
    lines = _solution_lines(notebook)
    assert lines, f"{notebook.name} has no solution lines to look for"
    html_dir: Path = site["html"]
    text = _page_text(html_dir / f"{notebook.stem}.html")
    texts = {"page": text}
    for extra in list(html_dir.rglob(f"{notebook.stem}*.ipynb")) + list(html_dir.rglob(f"{notebook.stem}*.txt")):
        texts[str(extra.relative_to(html_dir))] = "\n".join(
            cell.source for cell in nbformat.read(extra, as_version=4).cells) if extra.suffix == ".ipynb" \
            else extra.read_text(encoding="utf-8")
    leaks = []
    for where, content in texts.items():
        flat = re.sub(r"\s+", " ", content)
        leaks += [f"{where}: {line}" for line in lines if re.sub(r"\s+", " ", line) in flat]
    assert not leaks, f"{notebook.name}: solution lines published:\n" + "\n".join(leaks[:20])
    assert "BEGIN SOLUTION" not in text and "BEGIN ANSWER" not in text


def test_no_answer_key_and_no_question_explanation_is_published(site):
    html_dir: Path = site["html"]
    assert not [p for p in html_dir.rglob("*") if "answer_key" in p.name.lower()]
    everything = " ".join(_page_text(page) for page in html_dir.glob("*.html"))
    shown = []
    for module_name in CHECKER_MODULES:
        for key, question in getattr(importlib.import_module(f"involution_edu.exercises.{module_name}"),
                                     "QUESTIONS", {}).items():
            if question.explanation[:60] in everything:
                shown.append(f"{module_name}:{key}")
    assert not shown, f"the explanations (answers) of these questions are published: {shown}"


def test_exercise_stubs_and_teaching_outputs_are_both_shown(site):
    text = _page_text(site["html"] / "02_involution_loops.html")
    assert "YOUR CODE HERE" in text
    page = site["html"] / "02_involution_loops.html"
    images = [link for tag, link in _parse(page).links if tag == "img" and link.endswith(".png")]
    assert images, "the teaching cells' figures are missing from the page"


# ------------------------------------------------------------------------------- in a browser
def _browser_needed() -> None:
    if CHROMIUM is None:
        if os.environ.get("CI") or os.environ.get("INVOLUTION_EDU_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is needed for the site's browser test: apt-get install chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium); CI runs this test")


@pytest.mark.parametrize("page", ["02_involution_loops.html", "04_kernel_generation.html"])
def test_a_page_renders_in_chromium_with_math_a_figure_and_a_folded_hint(site, page):
    _browser_needed()
    from playwright.sync_api import sync_playwright

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site["html"]))
    handler.log_message = lambda *args, **kwargs: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                tab = browser.new_page()
                failed = []
                tab.on("requestfailed", lambda request: failed.append(request.url))
                tab.goto(f"http://127.0.0.1:{server.server_address[1]}/{page}", wait_until="load")
                tab.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=30_000)
                typeset = tab.evaluate("document.querySelectorAll('mjx-container').length")
                raw_tex = tab.evaluate("document.body.innerText.includes('\\\\frac') || "
                                       "document.body.innerText.includes('\\\\sum')")
                drawn = tab.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0 "
                                     "&& i.getBoundingClientRect().width > 0).length")
                hint = tab.locator("details").first
                assert tab.locator("details").count() > 0, f"{page}: no folded hint"
                assert hint.evaluate("d => d.open") is False, f"{page}: the first hint is open before a click"
                hint.locator("summary").click()
                opened = hint.evaluate("d => d.open")
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert typeset > 0 and not raw_tex, f"{page}: MathJax did not typeset the math ({typeset} formulas)"
    assert drawn > 0, f"{page}: no figure was drawn with a non-zero size"
    assert opened, f"{page}: clicking a hint's summary did not open it"
    assert not [url for url in failed if "127.0.0.1" in url], f"{page}: requests failed: {failed}"
