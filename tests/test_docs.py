"""The documentation stays true: every link in README.md and docs/ leads to a file of this
repository, and docs/api.md lists exactly the routes the app serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reelrank.engine import Engine
from reelrank.service import create_app

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BACKTICKED = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(```|~~~)")
EXTERNAL = ("http://", "https://", "mailto:")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (commands inside them are checked separately)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", _prose(
        path.read_text()), re.M)}


def links(path: Path) -> list[str]:
    return [m.group(1) for m in MARKDOWN_LINK.finditer(_prose(path.read_text()))]


def problems_of(path: Path) -> list[str]:
    problems = []
    text = path.read_text()
    for target in links(path):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.name}")
    # Paths written as code, in prose or in commands: none may climb out of the repository.
    for code in BACKTICKED.findall(text) + re.findall(r"(?m)^.*$", "\n".join(
            block for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S))):
        for token in code.split():
            if token.startswith("../") or "/../" in token or token.startswith("..\\"):
                problems.append(f"{token}: a path outside the repository")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_exist(path):
    assert problems_of(path) == []


def test_the_link_check_catches_what_it_should():
    page = ROOT / "docs" / "_probe_for_test.md"
    page.write_text("# Probe\n\n[ok](api.md) [anchor](api.md#conventions) [self](#probe)\n"
                    "[gone](missing.md) [out](../../elsewhere/API.md) [bad](api.md#nope)\n"
                    "Run `reelrank import kuairand ../shared/datasets/kuairand-pure`.\n")
    try:
        found = problems_of(page)
    finally:
        page.unlink()
    assert any(p.startswith("missing.md") for p in found)
    assert any(p.startswith("../../elsewhere/API.md") for p in found)
    assert any(p.startswith("api.md#nope") for p in found)
    assert any(p.startswith("../shared/datasets/kuairand-pure") for p in found)
    assert len(found) == 4


def test_the_docs_folder_has_its_pages():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"api.md", "getting-started.md", "datasets.md", "operations.md",
            "design.md"} <= names
    readme_links = set(links(ROOT / "README.md"))
    for name in ("api.md", "getting-started.md", "datasets.md", "operations.md", "design.md"):
        assert f"docs/{name}" in readme_links, name


ROUTE_HEADING = re.compile(r"^###\s+`(GET|POST|PUT|DELETE|PATCH)\s+(/[^`\s]*)`", re.M)


def test_api_reference_lists_exactly_the_apps_routes(store):
    documented = {(m.group(1), m.group(2))
                  for m in ROUTE_HEADING.finditer((ROOT / "docs" / "api.md").read_text())}
    schema = create_app(Engine(store).load(), None).openapi()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert documented == served, (
        f"routes served but not in docs/api.md: {sorted(served - documented)}; "
        f"in docs/api.md but not served: {sorted(documented - served)}")
