"""The docs speak to users: no development history (numbered work sessions, builds that no longer exist).

History belongs in git and CHANGELOG.md; a page says what to run and what you get.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

HISTORY = re.compile(
    r"\bsessions?\b"  # "session 3", "session-4 build", "this project's sessions"
    r"|\brounds? of work\b"
    r"|\b(?:intermediate|earlier|previous|old)[- ](?:build|implementation|version|code|recipe)s?\b"
    r"|\bbefore this work\b"
    r"|\bwhat we learned\b"
    r"|^history:",
    re.IGNORECASE | re.MULTILINE,
)


def history_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line of ``text`` that reads like a development diary."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if HISTORY.search(line)]


@pytest.mark.parametrize(
    "line",
    [
        "is how the session-3 table below credited the naive form",
        "with an intermediate session-4 build, whose targets differ",
        "no GPU was lent to this project's sessions so far",
        "History: the eager-only MIRA stood at 1.50x",
        "the same recipe gave 96.4% with the earlier implementation",
        "Before this work the path was slower",
        "### What we learned getting there",
        "| old recipe: 16 px, crop (0.3, 1) |",
        "results of the second round of work",
    ],
)
def test_diary_wording_is_caught(line):
    assert history_lines(line) == [(1, line)]


@pytest.mark.parametrize(
    "line",
    [
        "each iteration is one pass over a matrix, and no intermediate leaves float32's normal range",
        "the median over rounds of the ratio, in paired rounds",
        "a run on the same machine minutes earlier gave 1.33x",
        "Measured 2026-11-25 on a 2-core CPU (AMD EPYC), torch 2.14.1",
        "the checkpoint's version of the config",
    ],
)
def test_user_facing_wording_passes(line):
    assert history_lines(line) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_has_no_development_history(page):
    hits = [f"{page.relative_to(ROOT)}:{n}: {line}" for n, line in history_lines(page.read_text())]
    assert hits == [], "development history belongs in git and CHANGELOG.md:\n" + "\n".join(hits)
