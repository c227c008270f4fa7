"""The feed lanes (service/lanes.py): at most ``feed_threads`` feeds computed at once, the
rest waiting their turn and then served, each answered in full."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from reelrank.service import create_app
from reelrank.service.guard import RequestLimits
from reelrank.service.lanes import FeedLanes
from tests.service.test_guard import _call, _scope, Body, engine  # noqa: F401  (fixture)


class Counting:
    """Wraps a method: counts the calls running at once, each held ``hold_s``."""

    def __init__(self, fn, hold_s: float):
        self.fn, self.hold_s = fn, hold_s
        self.now = self.most = self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.hold_s)
            return self.fn(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize("threads", [1, 2])
def test_feeds_are_computed_at_most_feed_threads_at_once(engine, threads):  # noqa: F811
    app = create_app(engine, None, limits=RequestLimits(feed_threads=threads))
    feed = engine.feed = Counting(engine.feed, 0.05)
    rank = engine.rank = Counting(engine.rank, 0.05)

    async def scenario():
        feeds = [_call(app, _scope("GET", "/v1/feed", query=f"user_id=u{k}&n=3".encode()),
                       Body(0)) for k in range(8)]
        body = b'{"user_id": "u1", "item_ids": ["v1", "v2"]}'
        ranks = [_call(app, _scope("POST", "/v1/rank", headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]), _Once(body)) for _ in range(4)]
        waiting = asyncio.ensure_future(asyncio.gather(*feeds, *ranks))
        await asyncio.sleep(0.1)
        during = app.state.lanes.view()
        return await waiting, during

    answers, during = asyncio.run(scenario())
    assert [a[0] for a in answers] == [200] * 12
    assert all(len(a[2]["items"]) == 3 for a in answers[:8])
    assert [i["item_id"] for i in answers[8][2]["items"]] != []
    assert feed.calls == 8 and rank.calls == 4
    # Feeds and ranks share the lanes: never more than ``threads`` of them at once.
    assert max(feed.most, rank.most) <= threads
    assert during["threads"] == threads and during["busy"] <= threads
    assert during["busy"] + during["waiting"] >= 2
    assert app.state.lanes.view()["busy"] == 0


class _Once:
    def __init__(self, body: bytes):
        self.body, self.sent = body, False

    async def __call__(self) -> dict:
        if self.sent:
            await asyncio.sleep(3600)  # a client that sent its body waits for the answer
        self.sent = True
        return {"type": "http.request", "body": self.body, "more_body": False}


def test_feed_threads_must_be_positive():
    with pytest.raises(ValueError, match="feed_threads"):
        RequestLimits(feed_threads=0)
    with pytest.raises(ValueError, match="feed_threads"):
        FeedLanes(0)
