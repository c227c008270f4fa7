"""End to end: headless Chromium drives the web app against a real server in demo mode.

Each test signs in as its own synthetic viewer, so tests share one server without sharing
state. The page's clock is Playwright's fake clock, moved forward to stand for time spent on a
card; in the swipe test it is paused, so the watch time of each play and skip the server stores
must equal the time the test kept the card on screen, to the millisecond.
"""

from __future__ import annotations

import json
import re
import time

from reelrank.pipeline.context import FeedRequest



def wait_until(check, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sign_in(page, server, user_id: str, paused: bool = False) -> None:
    page.clock.install()
    if paused:  # the page's time then moves only when the test moves it
        page.clock.pause_at(time.time() + 1)
    page.goto(server.base_url + "/app/")
    notice = page.locator("#demo-notice")
    notice.wait_for()
    assert "Demo sign-in" in notice.inner_text()
    page.fill("#signin-user", user_id)
    page.click("#signin-submit")
    page.wait_for_selector(".card.active")


def active(page) -> dict:
    return page.eval_on_selector(".card.active", "el => ({index: Number(el.dataset.index), "
                                 "item: el.dataset.itemId, source: el.dataset.source})")


def wait_active_index(page, index: int) -> None:
    page.wait_for_function(
        f"document.querySelector('.card.active') && "
        f"document.querySelector('.card.active').dataset.index === '{index}'", timeout=8000)


def touch_swipe_up(page) -> None:
    """A finger dragged up the screen, as real touch input (not mouse events)."""
    cdp = page.context.new_cdp_session(page)
    x, y0, y1 = 160, 600, 300
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y0}]})
    for k in range(1, 7):
        cdp.send("Input.dispatchTouchEvent",
                 {"type": "touchMove", "touchPoints": [{"x": x, "y": y0 + (y1 - y0) * k / 6}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def swipe(page, how: str) -> None:
    if how == "key":
        page.keyboard.press("ArrowDown")
    elif how == "wheel":
        page.mouse.move(160, 400)
        page.mouse.wheel(0, 120)
    else:
        touch_swipe_up(page)


def by_type(events) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in events:
        out.setdefault(e.type, []).append(e)
    return out


# (how to leave the card, ms on screen): a mix of inputs, of plays and of skips.
SWIPES = [("key", 4_000), ("wheel", 600), ("touch", 300), ("key", 2_500), ("touch", 700),
          ("wheel", 5_000), ("key", 400), ("touch", 3_000), ("wheel", 500), ("key", 800)]


def test_swipe_ten_cards_then_like_one(phone, server):
    user = "u1"
    before = len(server.events_of(user))
    sign_in(phone, server, user, paused=True)
    shown = []
    for k, (how, dwell) in enumerate(SWIPES):
        card = active(phone)
        assert card["index"] == k
        shown.append((card["item"], dwell))
        phone.clock.fast_forward(dwell)
        swipe(phone, how)
        wait_active_index(phone, k + 1)
    # Every swipe's events reach the server: 11 impressions (cards 0..10), 10 views.
    def new_events():
        events = server.events_of(user)[before:]
        kinds = by_type(events)
        views = kinds.get("play", []) + kinds.get("skip", [])
        return kinds if len(kinds.get("impression", [])) == 11 and len(views) == 10 else None

    kinds = wait_until(new_events, what="impressions and views of the ten swipes")
    views = {e.item_id: e for e in kinds["play"] + kinds["skip"]}
    for item_id, dwell in shown:
        view = views[item_id]
        assert view.type == ("play" if dwell >= 2_000 else "skip"), (item_id, dwell, view)
        # The time on screen, plus the few real milliseconds the test itself took.
        assert view.watch_ms == dwell, (dwell, view.watch_ms)
        assert view.request_id and view.position is not None and view.device == "web"
    impressions = {e.item_id for e in kinds["impression"]}
    assert {item for item, _ in shown} <= impressions

    # Like the card on screen.
    liked = active(phone)["item"]
    button = phone.locator(".card.active [data-action=like]")
    button.click()
    assert button.get_attribute("aria-pressed") == "true"
    like = wait_until(lambda: [e for e in server.events_of(user)[before:] if e.type == "like"],
                      what="the like event")
    assert [e.item_id for e in like] == [liked]


def test_why_this_video_shows_the_explanation(phone, server):
    user = "u2"
    sign_in(phone, server, user)
    phone.keyboard.press("ArrowDown")
    wait_active_index(phone, 1)
    card = active(phone)
    phone.click(".card.active [data-action=why]")
    sheet = phone.locator("#why-sheet")
    sheet.locator(".why-reasons li").first.wait_for()
    shown = [t.strip() for t in sheet.locator(".why-reasons li").all_inner_texts()]
    explained = server.engine.explain(user, card["item"])
    assert explained["shown"] is True
    assert shown == [r["text"] for r in explained["reasons"]] and shown
    facts = sheet.locator(".why-facts").inner_text()
    assert f"#{explained['position']} of its page" in facts
    # Plain words only: no per-task model outputs as percentages, no model version; at most
    # one sentence of expectation, there exactly when the long-view prediction clears 0.5.
    text = sheet.inner_text()
    assert "%" not in text and not sheet.locator(".why-predictions").count()
    version = explained.get("model_version") or server.engine.pipeline.scorer.version
    assert version not in text and "model" not in facts.lower()
    long_view = (explained.get("predictions") or {}).get("long_view")
    expected = sheet.locator(".why-expectation")
    assert expected.count() == (1 if long_view is not None and long_view >= 0.5 else 0)
    if expected.count():
        assert expected.inner_text().startswith("You are likely to watch")
    phone.keyboard.press("Escape")
    assert not sheet.is_visible()


def test_mute_a_word_then_turn_personalization_off(phone, server):
    user = "u3"
    sign_in(phone, server, user)
    assert phone.locator("#feed-mode").get_attribute("data-mode") == "personalized"
    upcoming = phone.eval_on_selector_all(".card", "els => els.map(e => e.dataset.itemId)")
    # Mute the hashtag most common among the cards loaded but not shown yet.
    tags: dict[str, int] = {}
    for item_id in upcoming[1:]:
        for tag in server.engine.catalog.get(item_id).hashtags:
            tags[tag] = tags.get(tag, 0) + 1
    word = max(sorted(tags), key=tags.get)

    phone.click("a[data-page=me]")
    phone.fill("#mute-input", word)
    phone.click("#mute-add")
    phone.locator(f".muted-word[data-word='{word}']").wait_for()
    assert server.engine.settings(user).muted_keywords == (word,)

    def mentions(item_id: str) -> bool:
        item = server.engine.catalog.get(item_id)
        words = set(re.findall(r"\w+", item.caption.lower())) | {t.lower() for t in item.hashtags}
        return word.lower() in words

    phone.click("a[data-page=feed]")
    current = active(phone)["index"]
    # The cards queued before the mute were replaced: none ahead mentions the word.
    phone.wait_for_function(f"document.querySelectorAll('.card').length > {current + 1}")
    ahead = phone.eval_on_selector_all(
        ".card", f"els => els.filter(e => Number(e.dataset.index) > {current}).map(e => e.dataset.itemId)")
    assert ahead and not [i for i in ahead if mentions(i)]
    for k in range(1, 4):
        phone.keyboard.press("ArrowDown")
        wait_active_index(phone, current + k)
        assert not mentions(active(phone)["item"])
    later = server.engine.feed(FeedRequest(user_id=user, n=20))
    assert later.items and not [i.item_id for i in later.items if mentions(i.item_id)]

    # Personalization off: the feed says so and its new cards come from non-personal sources.
    phone.click("a[data-page=me]")
    switch = phone.locator("#personalization")
    assert switch.is_checked()
    switch.click()
    phone.wait_for_function("document.querySelector('#settings-status').textContent === 'Saved'")
    assert server.engine.settings(user).personalization is False
    phone.click("a[data-page=feed]")
    phone.wait_for_function("document.querySelector('#feed-mode').dataset.mode === 'non_personalized'")
    assert phone.locator("#feed-mode").inner_text() == "Not personalized"
    current = active(phone)["index"]
    phone.wait_for_function(f"document.querySelectorAll('.card').length > {current + 1}")
    allowed = {s.name for s in server.engine.pipeline.sources["non_personalized"]}
    new_sources = phone.eval_on_selector_all(
        ".card", f"els => els.filter(e => Number(e.dataset.index) > {current}).map(e => e.dataset.source)")
    assert new_sources and set(new_sources) <= allowed, (new_sources, allowed)


def test_download_then_erase_my_data(phone, server):
    user = "u4"
    sign_in(phone, server, user)
    for k in range(3):
        phone.clock.fast_forward(2_500)
        phone.keyboard.press("ArrowDown")
        wait_active_index(phone, k + 1)
    phone.click(".card.active [data-action=like]")
    wait_until(lambda: any(e.type == "like" for e in server.events_of(user)), what="the like")
    phone.click("a[data-page=me]")

    with phone.expect_download() as info:
        phone.click("#download-data")
    download = info.value
    assert download.suggested_filename == f"reelrank-data-{user}.json"
    data = json.loads(open(download.path(), encoding="utf-8").read())
    assert data["user_id"] == user
    stored = {e.event_id for e in server.events_of(user)}
    downloaded = {e["event_id"] for e in data["events"]}
    assert downloaded == stored and len(stored) > 20  # the background history plus this session
    assert {"impression", "play", "like"} <= {e["type"] for e in data["events"]}
    phone.locator("#data-summary svg").first.wait_for()

    phone.click("#erase-data")
    phone.click("#modal-confirm")
    phone.wait_for_function("document.querySelector('#data-status').textContent.startsWith('Erased')")
    assert server.store.count_events(user) == 0
    assert server.engine.live.user(user) is None or server.engine.live.user(user).is_new()
    import httpx

    export = httpx.get(f"{server.base_url}/v1/users/{user}/data",
                       headers={"Authorization": f"Bearer {server.admin_token}"}).json()
    assert export["events"] == []
    # The page signed the same id in again (erasure revoked its token): its feed is a cold start.
    phone.click("a[data-page=feed]")
    phone.wait_for_function("document.querySelectorAll('.card').length > 0")
    assert phone.locator(".card.active").count() == 1


def test_creator_studio_shows_a_creators_insights(desktop, server):
    sign_in(desktop, server, "u5")
    desktop.click("a[data-page=studio]")
    studio = desktop.locator(".studio")
    studio.wait_for()
    creator = studio.get_attribute("data-creator-id")
    videos = len(server.engine.catalog.by_creator(creator))
    tiles = desktop.locator(".studio .tile").all_inner_texts()
    assert any(f"@{creator}" in t for t in tiles) and any(str(videos) in t for t in tiles)
    assert desktop.locator(".studio .data-table tbody tr").count() == min(videos, 10)
    # Another creator from the picker.
    other = desktop.locator("#creator-picker .chip-btn").nth(1)
    other_id = other.get_attribute("data-creator-id")
    other.click()
    desktop.wait_for_function(
        "document.querySelector('.studio') && "
        f"document.querySelector('.studio').dataset.creatorId === '{other_id}'")


# Elements wider than the viewport, outside the boxes that scroll on purpose (a wide table).
OVERFLOWING = """() => {
  const vw = document.documentElement.clientWidth;
  return [...document.querySelectorAll('body *')]
    .filter((el) => !el.closest('.table-wrap') && el.getBoundingClientRect().right > vw + 0.5)
    .map((el) => el.tagName + '.' + (el.getAttribute('class') || '') + '#' + el.id);
}"""


def page_width(page, selector: str) -> tuple[int, int]:
    return page.eval_on_selector(selector, "el => [el.scrollWidth, el.clientWidth]")


def test_creator_studio_fits_a_phone(phone, server):
    sign_in(phone, server, "u8")
    phone.click("a[data-page=studio]")
    studio = phone.locator(".studio")
    studio.wait_for()
    phone.locator(".studio .data-table").wait_for()
    assert phone.viewport_size["width"] == 390
    for selector in ("#page-studio", "body", "html"):
        scroll, client = page_width(phone, selector)
        assert scroll <= client, f"{selector} overflows: {scroll} > {client}"
    assert phone.evaluate(OVERFLOWING) == []
    # The four figures and the Open button are on screen, not cut off.
    for box in [phone.locator(".studio .tile").nth(i).bounding_box() for i in range(4)] + [
            phone.locator("#creator-open").bounding_box()]:
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390


def test_operator_console_shows_live_figures_and_trains(desktop, server):
    sign_in(desktop, server, "u6")
    desktop.click("a[data-page=console]")
    version = desktop.locator("[data-tile=model-version] .tile-value")
    version.wait_for()
    assert version.inner_text() == server.engine.pipeline.scorer.version
    # Engagement over the demo world's events (stored before the server started), non-zero,
    # with the window it covers said on the page.
    rate = desktop.locator("[data-tile=long-view-rate] .tile-value")
    desktop.wait_for_function(
        "document.querySelector('[data-tile=long-view-rate] .tile-value')"
        ".textContent.endsWith('%')")
    assert float(rate.inner_text().rstrip("%")) > 0
    assert float(desktop.locator("[data-tile=like-rate] .tile-value").inner_text().rstrip("%")) > 0
    window = desktop.locator("#engagement-window").inner_text()
    assert "all events in the log" in window and "impressions" in window
    assert desktop.locator(".line-chart figcaption", has_text="all events in the log").count() == 1
    desktop.locator(".line-chart path.chart-line").first.wait_for()
    assert desktop.locator(".tile").count() >= 8
    desktop.click("#train-start")
    desktop.wait_for_function(
        "document.querySelector('#train-status').textContent.startsWith('done')", timeout=90_000)
    new_version = server.engine.pipeline.scorer.version
    assert new_version != "heuristic-v0"
    assert new_version in desktop.locator("#train-status").inner_text()
    desktop.wait_for_function(
        f"document.querySelector('[data-tile=model-version] .tile-value').textContent === '{new_version}'")


def test_share_comment_follow_and_not_interested(phone, server):
    user = "u7"
    before = len(server.events_of(user))
    sign_in(phone, server, user)
    card = active(phone)
    creator = server.engine.catalog.get(card["item"]).creator_id
    phone.click(".card.active [data-action=share]")
    phone.click(".card.active [data-action=comment]")
    phone.fill("#comment-text", "nice one")
    phone.click("#comment-send")
    follow = phone.locator(".card.active [data-action=follow]")
    was_following = follow.get_attribute("aria-pressed") == "true"
    follow.click()
    expected = {"share", "comment", "unfollow" if was_following else "follow"}

    def sent():
        kinds = {e.type for e in server.events_of(user)[before:] if e.item_id == card["item"]}
        return expected <= kinds
    wait_until(sent, what="share, comment and follow events")

    # Not interested in this creator: settings remember it, and no card of theirs comes next.
    phone.click(".card.active [data-action=not-interested]")
    phone.click("#hide-sheet .hide-choice[data-scope=creator]")
    wait_active_index(phone, 1)
    assert server.engine.settings(user).hidden_creators == (creator,)
    assert any(e.type == "not_interested" and e.item_id == card["item"]
               for e in server.events_of(user)[before:])
    ahead = phone.eval_on_selector_all(
        ".card", "els => els.filter(e => Number(e.dataset.index) >= 1).map(e => e.dataset.creatorId)")
    assert ahead and creator not in ahead


def test_api_docs_render_offline(desktop, server):
    # Every request to another host is refused and recorded: the page must not need one.
    elsewhere: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    desktop.route("**/*", only_this_server)
    desktop.goto(server.base_url + "/docs")
    desktop.locator(".opblock").first.wait_for(timeout=15_000)
    paths = desktop.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/feed" in p for p in paths) and any("/v1/events" in p for p in paths)
    assert elsewhere == []


def _events_posts(page) -> list[str | None]:
    """The Authorization header of every POST /v1/events the page makes, as it makes it."""
    seen: list[str | None] = []
    page.on("request", lambda r: seen.append(r.headers.get("authorization"))
            if r.method == "POST" and r.url.endswith("/v1/events") else None)
    return seen


def test_events_go_out_with_the_viewers_own_token(phone, server):
    user = "u9"
    before = len(server.events_of(user))
    posts = _events_posts(phone)
    sign_in(phone, server, user)
    tokens = phone.evaluate("JSON.parse(sessionStorage.getItem('reelrank.session.v1')).tokens")
    assert tokens["user"] and "ingest" not in tokens  # the demo hands out no ingest token
    phone.clock.fast_forward(3_000)
    swipe(phone, "key")
    wait_active_index(phone, 1)
    wait_until(lambda: {"impression", "play"} <= {e.type for e in server.events_of(user)[before:]},
               what="the impression and the play")
    assert posts and set(posts) == {f"Bearer {tokens['user']}"}


def test_the_regular_sign_in_asks_only_for_the_viewers_token(phone, server):
    """Outside demo mode (the demo status is answered as a regular server's), a viewer signs in
    with their own token alone, and their events go out with it."""
    import httpx

    user = "u11"
    minted = httpx.post(f"{server.base_url}/v1/admin/users/{user}/token",
                        headers={"Authorization": f"Bearer {server.admin_token}"})
    token = minted.json()["token"]
    before = len(server.events_of(user))
    phone.route("**/v1/demo", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"demo": False, "auth": True})))
    posts = _events_posts(phone)
    phone.clock.install()
    phone.goto(server.base_url + "/app/")
    phone.wait_for_selector("#signin-token")
    assert phone.locator("#signin-ingest").count() == 0
    assert "ingest" not in phone.locator("#signin").inner_text().lower()
    phone.fill("#signin-user", user)
    phone.fill("#signin-token", token)
    phone.click("#signin-submit")
    phone.wait_for_selector(".card.active")
    phone.clock.fast_forward(3_000)
    swipe(phone, "key")
    wait_active_index(phone, 1)
    wait_until(lambda: {"impression", "play"} <= {e.type for e in server.events_of(user)[before:]},
               what="the impression and the play")
    assert posts and set(posts) == {f"Bearer {token}"}
