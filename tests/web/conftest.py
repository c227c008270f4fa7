"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a demo server.

`make test` installs both (apt-get's chromium when missing and run as root, playwright from the
dev extra). Playwright's own browser download is never used: it needs the internet. Without a
browser these tests skip and say why; on the development machines and CI they run.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.web.server import demo_server

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    explicit = os.environ.get("REELRANK_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make test` installs it")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium (apt-get, as root), "
                    "or set REELRANK_CHROMIUM to a Chromium binary")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with demo_server(tmp_path_factory.mktemp("web") / "data") as s:
        yield s


@pytest.fixture
def phone(browser):
    """A phone-sized page with touch, as the feed is used."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                  accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def desktop(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
