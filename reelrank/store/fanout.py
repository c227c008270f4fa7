"""Fan-out between processes: one Redis stream per deployment (``{prefix}stream``).

Why a Redis stream (docs/operations.md, "Events between processes"): the shared live state is in
Redis already, so the event's message is added by the same Lua script that applies the event
(one round trip, never a message without its state change or the reverse); every API process
reads the stream as a broadcast (``Subscriber``, XREAD from where it joined), while trainers read
it through a consumer group (``GroupReader``), whose pending entries let a second trainer claim
what a dead one had read but not finished. The stream is capped (``MAXLEN ~``); the event log in
the store stays the durable record, and whoever falls behind the cap rebuilds from it.

Messages are JSON objects with a ``kind`` and the sending process's ``origin``:

- ``event``: an accepted event (and the items whose co-engagement it changed), added by
  ``RedisLiveState.apply`` when the state was built with ``stream=``;
- ``items``: catalog upserts (``SharedCatalog``), which every process's in-memory catalog takes;
- ``rebuilt``: the shared state was replaced by one rebuilt from the log (after an erasure):
  every process drops what it cached of it;
- ``erase`` / ``reset``: a viewer erased, or their interests reset, by one process, for what the
  others hold in memory (recent traces, pending training examples). An erase message carries a
  keyed digest of the id, never the id (``digest``), and ``forget`` removes the viewer's event
  messages from the stream, so that no key in Redis holds the id's bytes afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from dataclasses import fields
from typing import Any, Callable, Iterable

from reelrank.store import live as live_api
from reelrank.types import Event, Item

log = logging.getLogger(__name__)

_EVENT_FIELDS = [f.name for f in fields(Event)]
_ITEM_FIELDS = [f.name for f in fields(Item)]


def event_from(row: list) -> Event:
    return Event(**dict(zip(_EVENT_FIELDS, row)))


def item_to_row(item: Item) -> list:
    row = [getattr(item, name) for name in _ITEM_FIELDS]
    row[_ITEM_FIELDS.index("hashtags")] = list(item.hashtags)
    row[_ITEM_FIELDS.index("attributes")] = dict(item.attributes or {})
    return row


def item_from(row: list) -> Item:
    values = dict(zip(_ITEM_FIELDS, row))
    values["hashtags"] = tuple(values["hashtags"])
    return Item(**values)


class Fanout:
    """Publishes to, and trims, a deployment's stream."""

    def __init__(self, client, prefix: str, maxlen: int = 100_000,
                 origin: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.key = prefix + "stream"
        self.maxlen = maxlen
        self.origin = origin or uuid.uuid4().hex[:12]

    def digest(self, user_id: str) -> str:
        """A viewer's id as erase messages carry it (keyed by the deployment's prefix)."""
        return hashlib.sha256(f"{self.prefix}\0{user_id}".encode()).hexdigest()

    def publish(self, kind: str, **body: Any) -> str:
        payload = json.dumps({"kind": kind, "origin": self.origin, **body},
                             separators=(",", ":"))
        msg_id = self.client.xadd(self.key, {"m": payload}, maxlen=self.maxlen,
                                  approximate=True)
        return msg_id.decode() if isinstance(msg_id, bytes) else msg_id

    def event_message(self, event: Event, co: list[str]) -> str:
        """An event's message (the live state adds it in the script that applies the event),
        with the items whose co-engagement with it grew."""
        return json.dumps({"kind": "event", "origin": self.origin,
                           "event": [getattr(event, name) for name in _EVENT_FIELDS],
                           "co": co}, separators=(",", ":"))

    def publish_items(self, items: list[Item]) -> str:
        return self.publish("items", items=[item_to_row(i) for i in items])

    def publish_erase(self, user_id: str) -> str:
        return self.publish("erase", digest=self.digest(user_id))

    def publish_reset(self, user_id: str) -> str:
        return self.publish("reset", digest=self.digest(user_id))

    def forget(self, user_id: str, chunk: int = 1000) -> int:
        """Delete the viewer's event messages from the stream (an erasure); returns how many.
        Reads the whole stream, at most ``maxlen`` entries: erasures are rare."""
        removed, start = 0, "-"
        while True:
            rows = self.client.xrange(self.key, start, "+", count=chunk)
            if not rows:
                return removed
            doomed = []
            for msg_id, values in rows:
                body = json.loads(values[b"m"])
                if body.get("kind") == "event" and body["event"][1] == user_id:
                    doomed.append(msg_id)
            if doomed:
                removed += self.client.xdel(self.key, *doomed)
            if len(rows) < chunk:
                return removed
            last = rows[-1][0].decode()
            start = "(" + last


Handler = Callable[[dict], None]


class Subscriber:
    """Reads every message added after it started (a broadcast: each API process has one) in a
    thread, and hands the others' messages to ``handle`` (its own process already acted)."""

    def __init__(self, client, fanout: Fanout, handle: Handler, block_ms: int = 200) -> None:
        self.client = client  # a connection of its own: XREAD blocks it
        self.fanout = fanout
        self.handle = handle
        self.block_ms = block_ms
        self.last_id = "$"
        self.received = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> Subscriber:
        # Where "now" is in the stream, fixed before the thread runs: nothing added after
        # start() returns is missed.
        info = self.client.xinfo_stream(self.fanout.key) if self.client.exists(
            self.fanout.key) else None
        if info is not None:
            last = info["last-generated-id"]
            self.last_id = last.decode() if isinstance(last, bytes) else last
        else:
            self.last_id = "0-0"
        self._thread = threading.Thread(target=self._run, name="fanout", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self.client.xread({self.fanout.key: self.last_id}, count=500,
                                        block=self.block_ms)
            except Exception:  # a lost connection: wait a moment and read on from last_id
                log.exception("reading the fan-out stream failed")
                self._stop.wait(1.0)
                continue
            for _, rows in got or []:
                for msg_id, values in rows:
                    self.last_id = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
                    body = json.loads(values[b"m"])
                    if body.get("origin") == self.fanout.origin:
                        continue
                    self.received += 1
                    try:
                        self.handle(body)
                    except Exception:  # one bad message must not stop the others
                        log.exception("handling a fan-out message failed")


class GroupReader:
    """A consumer group over the stream, for trainers: each message goes to one consumer of
    the group and stays pending until acknowledged, so a trainer that takes over claims what
    the dead one read but did not finish (``claim``)."""

    def __init__(self, client, fanout: Fanout, group: str = "trainers",
                 start: str = "0") -> None:
        self.client = client
        self.key = fanout.key
        self.group = group
        try:
            self.client.xgroup_create(self.key, group, id=start, mkstream=True)
        except Exception as exc:  # BUSYGROUP: made by another trainer already
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int = 500,
             block_ms: int | None = None) -> list[tuple[str, dict]]:
        got = self.client.xreadgroup(self.group, consumer, {self.key: ">"}, count=count,
                                     block=block_ms)
        return [(i.decode(), json.loads(v[b"m"])) for _, rows in got or [] for i, v in rows]

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self.client.xack(self.key, self.group, *ids)) if ids else 0

    def claim(self, consumer: str, min_idle_ms: int,
              count: int = 500) -> list[tuple[str, dict]]:
        """Take over messages another consumer has held unacknowledged for ``min_idle_ms``."""
        _, rows, _ = self.client.xautoclaim(self.key, self.group, consumer, min_idle_ms,
                                            start_id="0-0", count=count)
        return [(i.decode(), json.loads(v[b"m"])) for i, v in rows if v]


class SharedCatalog:
    """A process's in-memory catalog whose upserts reach every other process's (through the
    fan-out); the store stays the durable copy, loaded at start-up as before."""

    def __init__(self, inner: live_api.Catalog, fanout: Fanout) -> None:
        self.inner = inner
        self.fanout = fanout

    def upsert(self, items: list[Item]) -> None:
        self.inner.upsert(items)
        if items:
            self.fanout.publish_items(items)

    def take(self, items: list[Item]) -> None:
        """Upserts another process made."""
        self.inner.upsert(items)

    @property
    def version(self) -> int:
        return self.inner.version

    def get(self, item_id: str) -> Item | None:
        return self.inner.get(item_id)

    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]:
        return self.inner.get_many(item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.inner

    def __len__(self) -> int:
        return len(self.inner)

    def ids(self) -> list[str]:
        return self.inner.ids()

    def newest(self, n: int, created_after: int | None = None) -> list[Item]:
        return self.inner.newest(n, created_after)

    def by_creator(self, creator_id: str) -> set[str]:
        return self.inner.by_creator(creator_id)


def live_handler(live, catalog: SharedCatalog | None = None,
                 on_erase: Callable[[str], None] | None = None,
                 on_reset: Callable[[str], None] | None = None) -> Handler:
    """What an API process does with the others' messages: drop its cached counters of the
    items an event changed, take catalog upserts, and pass erasures and resets (as digests) to
    what holds viewers in this process's memory."""

    def handle(body: dict) -> None:
        kind = body.get("kind")
        if kind == "event":
            event = event_from(body["event"])
            item = live.catalog.get(event.item_id)
            live.invalidate(items=[event.item_id, *body.get("co", ())],
                            creators=[item.creator_id] if item is not None else ())
        elif kind == "rebuilt":
            live.invalidate(everything=True)
        elif kind == "items" and catalog is not None:
            catalog.take([item_from(row) for row in body["items"]])
        elif kind == "erase" and on_erase is not None:
            on_erase(body["digest"])
        elif kind == "reset" and on_reset is not None:
            on_reset(body["digest"])

    return handle
