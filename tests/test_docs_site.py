"""The documentation: the site builds with `mkdocs build --strict` (every page in the nav, every link and
anchor found), every table renders as a table, the Markdown lint passes, the README stays a five-minute
read, and the tutorial shows the plots the pipeline drew. Which fenced blocks are run: test_readme.py."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from helpers.commands import run
from helpers.paths import ROOT
from test_readme import doc_pages

MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # not --quiet: it hides the warnings strict counts


def build(project: Path, site: Path, check: bool = True):
    return run([*MKDOCS, "--config-file", project / "mkdocs.yml", "--site-dir", site], project, check=check,
               env={"NO_MKDOCS_2_WARNING": "1"})


def tables_that_do_not_render(site: Path) -> list[str]:
    """Table rows that came out as text: a row cut off from its table (by a blank line, or rows after
    prose) renders as a paragraph that starts with a pipe."""
    return [f"{page.relative_to(site)}: {row[:80]}" for page in sorted(site.rglob("*.html"))
            for row in re.findall(r"<p>\s*(\|[^<]*)", page.read_text())]


def docs_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_site_builds_strictly_and_every_table_renders(tmp_path):
    build(ROOT, tmp_path / "site")
    assert (tmp_path / "site/index.html").is_file() and (tmp_path / "site/how-to/triton/index.html").is_file()
    assert tables_that_do_not_render(tmp_path / "site") == []


def test_a_link_to_a_missing_anchor_fails_the_build(tmp_path):
    project = docs_copy(tmp_path)
    page = project / "docs/reference/file-formats.md"
    page.write_text(page.read_text() + "\nSee [serving](../how-to/triton.md#no-such-section).\n")
    failed = build(project, tmp_path / "site", check=False)
    assert failed.returncode != 0 and "does not contain an anchor '#no-such-section'" in failed.stderr


def test_a_page_left_out_of_the_nav_fails_the_build(tmp_path):
    project = docs_copy(tmp_path)
    (project / "docs/how-to/forgotten.md").write_text("# Forgotten\n")
    failed = build(project, tmp_path / "site", check=False)
    assert failed.returncode != 0 and "forgotten.md" in failed.stderr


def test_a_table_cut_by_a_blank_line_is_found(tmp_path):
    project = docs_copy(tmp_path)
    page = project / "docs/reference/file-formats.md"
    page.write_text(page.read_text() + "\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n")
    build(project, tmp_path / "site")
    assert tables_that_do_not_render(tmp_path / "site") == ["reference/file-formats/index.html: | 3 | 4 |"]


def test_every_page_passes_the_markdown_lint():
    pages = [str(p.relative_to(ROOT)) for p in doc_pages()]
    result = run([sys.executable, "-m", "pymarkdown", "--config", ".pymarkdown.json", "scan", *pages], ROOT,
                 check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Run it", "## Your own model, in three steps", "## The menu", "## Comparing experiments",
                        "## Documentation"]
    assert "make test" in "\n".join(lines)  # the test command CI runs


def test_the_readme_links_to_every_page_of_the_site():
    readme = (ROOT / "README.md").read_text()
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
             if "hooks" not in p.parts and p.name != "index.md" and p.parent.name != "contributing"
             or p.name in ("testing.md", "layout.md")}
    assert {page for page in pages if f"]({page})" not in readme} == set()


def test_the_tutorial_shows_the_plots_the_pipeline_drew(built_project, tmp_path):
    build(built_project, tmp_path / "site")
    tutorial = (tmp_path / "site/tutorials/first-deployment/index.html").read_text()
    shown = re.findall(r'<img [^>]*src="([^"]+)"', tutorial)
    assert sorted(shown) == sorted([f"../sample/curves/{name}.png" for name in ("car", "cyclist", "pedestrian")]
                                   + [f"../sample/detections/{n:06d}.png" for n in range(4)])
    for source in shown:
        drawn = (tmp_path / "site/tutorials/first-deployment" / source).resolve()
        kind = drawn.parent.name
        assert drawn.read_bytes() == (built_project / "artifacts/evaluation" / kind / drawn.name).read_bytes()


def test_before_the_pipeline_ran_the_tutorial_says_how_to_get_its_plots(tmp_path):
    project = docs_copy(tmp_path)  # no artifacts/ beside it
    build(project, tmp_path / "site")
    tutorial = (tmp_path / "site/tutorials/first-deployment/index.html").read_text()
    assert "<img" not in tutorial.split('class="md-content"', 1)[1]
    assert "Run <code>make repro</code> and build the site again" in tutorial
