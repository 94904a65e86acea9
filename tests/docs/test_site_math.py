"""The built site typesets its equations offline: headless Chromium loads every page with math from a
local server, and the rendered DOM must hold MathJax's output, no TeX errors and no raw ``\\[``/``\\(``.

Needs the ``chromium`` Debian package (``.ci/run`` installs it and sets ``SSLIB_REQUIRE_BROWSER=1``,
which turns a missing browser into a failure). A screenshot of the MIRA page is saved for review in
``.venv/site-screenshots/``.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers.docsite import ROOT, built_site, needs_mkdocs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags that keep headless Chromium from reaching for the network (it would hang on a closed one).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=20000",  # run the page's scripts (MathJax) to completion before dumping
)  # fmt: skip
SCREENSHOT_PAGE = "labelers/mira/"
SCREENSHOT_SIZE = (1280, 1600)
SCREENSHOTS = ROOT / ".venv" / "site-screenshots"
RAW_DELIMITERS = ("\\[", "\\]", "\\(", "\\)")


def _require_browser() -> None:
    if CHROMIUM is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("SSLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}, and SSLIB_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> None:
    _require_browser()


class MathReport(HTMLParser):
    """What a rendered page shows: its arithmatex elements, MathJax's containers and errors, and the text
    outside code blocks (where raw TeX delimiters would be visible) and inside the math (where an
    undefined macro would show as its name)."""

    SKIPPED = frozenset({"pre", "code", "script", "style", "textarea"})

    def __init__(self) -> None:
        super().__init__()
        self.arithmatex = self.containers = self.errors = 0
        self.prose: list[str] = []
        self.math_text: list[str] = []
        self._skip = self._math = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        self.arithmatex += "arithmatex" in classes
        self.errors += tag == "mjx-merror" or any(name == "data-mjx-error" for name, _ in attrs)
        self.containers += tag == "mjx-container"
        self._math += tag == "mjx-container"
        self._skip += tag in self.SKIPPED

    def handle_endtag(self, tag: str) -> None:
        self._math -= tag == "mjx-container" and self._math > 0
        self._skip -= tag in self.SKIPPED and self._skip > 0

    def handle_data(self, data: str) -> None:
        if self._math:
            self.math_text.append(data)
        elif not self._skip:
            self.prose.append(data)

    def problems(self) -> list[str]:
        """Why the page's math is not typeset (empty when it is)."""
        prose, math = "".join(self.prose), "".join(self.math_text)
        found = [
            f"{self.containers} MathJax containers for {self.arithmatex} equations"
            if self.containers < self.arithmatex
            else "",
            f"{self.errors} TeX errors" if self.errors else "",
            *(f"raw TeX delimiter {d!r} in the text" for d in RAW_DELIMITERS if d in prose),
            f"a backslash in the rendered math: ...{math[math.index(chr(92)) :][:40]}"
            if "\\" in math
            else "",
        ]
        return [p for p in found if p]


def report(html: str) -> MathReport:
    parser = MathReport()
    parser.feed(html)
    return parser


def chromium(*args: str) -> str:
    """Run headless Chromium with a fresh profile; its standard output."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, f"chromium {' '.join(args)} failed:\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return built_site(tmp_path_factory)


@pytest.fixture(scope="module")
def server(site: Path, browser: None) -> Iterator[str]:
    """The built site served on a free loopback port; its base URL."""
    handler = functools.partial(QuietHandler, directory=str(site))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        httpd.shutdown()
        thread.join()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def math_pages(site: Path) -> list[str]:
    """The site's pages that contain math, as URL paths."""
    pages = [p for p in sorted(site.rglob("index.html")) if 'class="arithmatex"' in p.read_text()]
    return [p.parent.relative_to(site).as_posix() + "/" for p in pages]


def test_report_flags_raw_tex_errors_and_missing_containers():
    raw = '<p>see <span class="arithmatex">\\(x^2\\)</span></p><pre><code>\\[ kept \\]</code></pre>'
    assert report(raw).problems() == [
        "0 MathJax containers for 1 equations",
        "raw TeX delimiter '\\\\(' in the text",
        "raw TeX delimiter '\\\\)' in the text",
    ]
    undefined = (
        '<span class="arithmatex"><mjx-container><mjx-merror>\\foo</mjx-merror></mjx-container></span>'
    )
    assert report(undefined).problems() == ["1 TeX errors", "a backslash in the rendered math: ...\\foo"]
    typeset = '<span class="arithmatex"><mjx-container><math><mi>x</mi></math></mjx-container></span>'
    assert report(typeset).problems() == []


@needs_mkdocs
def test_mathjax_is_shipped_with_the_site(site):
    assert (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert any((site / "javascripts" / "mathjax" / "output").rglob("*.woff"))
    assert "cdn.jsdelivr.net" not in (site / SCREENSHOT_PAGE / "index.html").read_text()


@needs_mkdocs
def test_every_equation_is_typeset_offline(site, server):
    pages = math_pages(site)
    assert SCREENSHOT_PAGE in pages and len(pages) >= 5
    with ThreadPoolExecutor(max_workers=2) as pool:
        doms = dict(
            zip(pages, pool.map(lambda page: chromium("--dump-dom", server + page), pages), strict=True)
        )
    problems = {page: report(dom).problems() for page, dom in doms.items()}
    assert {page: p for page, p in problems.items() if p} == {}
    assert all(report(dom).containers > 0 for dom in doms.values())


@needs_mkdocs
def test_screenshot_of_a_page_with_equations(server, tmp_path):
    shot = tmp_path / "mira.png"
    width, height = SCREENSHOT_SIZE
    chromium(f"--window-size={width},{height}", f"--screenshot={shot}", server + SCREENSHOT_PAGE)
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == SCREENSHOT_SIZE
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"screenshot: {SCREENSHOTS / shot.name}")
