"""The documentation: the site builds with ``--strict`` (no broken link or anchor), every
setting is in the configuration table with the side that reads it, and the pages speak to users."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bghttp.config import SETTING_VARIABLES
from tests.support import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
SIDES = {"client", "worker", "both", "worker (local mode)", "bghttp's own processes"}


def test_mkdocs_builds_with_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The pages that include files from the top level really hold them.
    assert "bghttp worker --processes 1" in (tmp_path / "site" / "quickstart" / "index.html").read_text()
    assert "Ownership of a request ID" in (tmp_path / "site" / "reliability" / "index.html").read_text()


def test_every_page_is_in_the_nav() -> None:
    nav = (PROJECT_ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, page.name


def test_every_setting_is_in_the_configuration_table_with_its_side() -> None:
    rows = {
        match.group(1): match.group(2).strip()
        for match in re.finditer(r"^\| `(BGHTTP_[A-Z_]+)` \| ([^|]+) \|", (DOCS / "configuration.md").read_text(), re.M)
    }
    assert set(rows) == set(SETTING_VARIABLES.values())
    assert {variable: side for variable, side in rows.items() if side not in SIDES} == {}


def test_user_pages_name_no_issues() -> None:
    pages = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "RELIABILITY.md", *DOCS.glob("*.md")]
    for page in pages:
        text = page.read_text()
        found = re.findall(r"issue\s*#?\d+|\(items? \d+|mobile", text, re.IGNORECASE)
        assert found == [], (page.name, found)


def test_readme_is_short() -> None:
    assert len((PROJECT_ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    linked = set(re.findall(r"\]\(([a-z_-]+\.md)(?:#[^)]*)?\)", index))
    assert {page.name for page in DOCS.glob("*.md")} - {"index.md"} - linked == set()


def _public_methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


def _section(page: str, heading: str) -> str:
    return (DOCS / page).read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_api_page_lists_every_method_of_both_clients() -> None:
    from bghttp import AsyncBackgroundHttpClient, BackgroundHttpClient

    table = [line.split("|")[1] for line in _section("api.md", "Submitting and reading").splitlines()
             if line.startswith("| `")]  # fmt: skip
    in_table = {word for cell in table for word in re.findall(r"\b[a-z_]+\b", cell)}
    assert _public_methods(BackgroundHttpClient) - in_table == set()

    methods = re.search(r"^Methods: (.*?)\.(?: |$)", _section("api.md", "Async client"), re.M | re.S)
    assert methods is not None
    assert set(re.findall(r"`([a-z_]+)`", methods.group(1))) == _public_methods(AsyncBackgroundHttpClient)


def test_the_queue_row_names_every_queue_a_worker_declares() -> None:
    lines = (DOCS / "configuration.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith("| `BGHTTP_QUEUE` |"))
    for suffix in (".DQ", ".XQ", ".submit", ".submit.DQ", ".submit.XQ"):
        assert f"{suffix}`" in row, suffix
