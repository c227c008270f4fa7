"""Screenshots of each page of the web app, for the README:

    .venv/bin/python -m tests.web.screenshots --out docs/screenshots

A demo server over a synthetic world (large enough for creator insights to clear their
minimum-audience rule) and Debian's chromium driven by Playwright: every page at phone width
(390 px), and the studio and the console also at desktop width.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from reelrank import logs
from tests.web.conftest import chromium_path
from tests.web.server import demo_server

log = logging.getLogger("screenshots")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def take(out: Path, viewer: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp, \
            demo_server(Path(tmp) / "data", users=400, items=900, creators=36, sessions=3,
                        swipes=20) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True)

        def shot(page, name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            shots.append(path)
            log.info("wrote %s", path)

        phone = browser.new_context(viewport=PHONE, has_touch=True).new_page()
        phone.goto(server.base_url + "/app/")
        phone.locator(".viewer-choice").first.wait_for()
        shot(phone, "signin")
        phone.fill("#signin-user", viewer)
        phone.click("#signin-submit")
        phone.wait_for_selector(".card.active")
        for _ in range(3):  # a few cards watched for a while, so the progress bar moves
            time.sleep(1.2)
            phone.keyboard.press("ArrowDown")
        time.sleep(1.5)
        phone.click(".card.active [data-action=like]")
        time.sleep(0.6)
        shot(phone, "feed")
        phone.click(".card.active [data-action=why]")
        phone.locator("#why-sheet .why-facts").wait_for()
        shot(phone, "why-this")
        phone.keyboard.press("Escape")
        phone.click("a[data-page=me]")
        phone.fill("#mute-input", "spoilers")
        phone.click("#mute-add")
        phone.locator(".muted-word").first.wait_for()
        shot(phone, "me")

        desk = browser.new_context(viewport=DESKTOP).new_page()
        desk.goto(server.base_url + "/app/")
        desk.fill("#signin-user", viewer)
        desk.click("#signin-submit")
        desk.wait_for_selector(".card.active")
        desk.click("a[data-page=studio]")
        desk.locator(".studio").wait_for()
        # Past the picker, to the audience and what to post next.
        desk.evaluate("document.getElementById('page-studio').scrollTop = 270")
        desk.wait_for_timeout(500)
        shot(desk, "studio")
        desk.click("a[data-page=console]")
        desk.click("#train-start")
        desk.wait_for_function(
            "document.querySelector('#train-status').textContent.startsWith('done')", timeout=120_000)
        desk.wait_for_timeout(6_500)  # a few polls of /v1/stats for the live charts
        shot(desk, "console")

        # The operator's pages at phone width too: they must fit a 390 px screen.
        phone.click("a[data-page=studio]")
        phone.locator(".studio").wait_for()
        phone.wait_for_timeout(500)
        shot(phone, "studio-phone")
        phone.click("a[data-page=console]")
        phone.locator("[data-tile=long-view-rate]").wait_for()
        phone.wait_for_timeout(4_500)  # a few polls for the charts
        shot(phone, "console-phone")
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--viewer", default="u7", help="the synthetic viewer to sign in as")
    args = parser.parse_args()
    logs.setup("info")  # the same quiet logging as the server (faiss loader lines at DEBUG)
    take(args.out, args.viewer)


if __name__ == "__main__":
    main()
