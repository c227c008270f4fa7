"""A deterministic synthetic short-video world: a catalog, viewers with hidden tastes, their swipes.
The world itself (catalog, viewers, ``build_world``) is ``eval/world.py``; this module is how its
viewers behave (re-exporting ``World``, ``Viewer`` and ``build_world``).

It drives the demo, the tests and load runs; it is never evidence of quality on real data.

Model of behaviour (hidden from the engine, exposed to evaluations through ``World``):

- A viewer has a topic taste (a few strong interests), a preferred video length, a language, a
  "loyalty" that scales how much a creator's style matters to them, and a stamina.
- The *fit* of a video for a viewer is: topic match (main topic, plus half the secondary one)
  + creator pull (loyalty x style match) + sound (trend, and the sound's topic) - length mismatch
  - language mismatch + the video's own quality. ``World.true_affinity`` returns it, noise-free.
- On a swipe the viewer sees the video (``impression``) and plays it with a probability rising with
  fit - fatigue + noise; the watch ratio grows with the same quantity. Past 1.0 the video looped:
  ``play.watch_ms`` is the whole dwell and a ``rewatch`` event carries the looped part. Otherwise
  the viewer skips after a second or two. Likes, comments and shares get likelier with fit, follows
  with fit and creator pull; a very poor fit may draw ``not_interested``.
- Fatigue grows with each swipe (faster for low-stamina viewers); it lowers watch ratios and, in
  ``Simulator.run_session``, makes leaving likelier.

Everything random comes from ``numpy.random.Generator``s keyed by the world seed plus per-viewer
and per-session keys, so a seed fixes the world and every event stream. Times are epoch ms.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable, Iterator

import numpy as np

from reelrank.eval.world import (  # noqa: F401 - World, Viewer, build_world, GAP_MS: as before
    _FOLLOW, FLAG_TYPES, GAP_MS, LEAVE_BASE, Viewer, World, _fit, _sigmoid, build_world,
)
from reelrank.types import DAY_MS, Event

log = logging.getLogger(__name__)

Policy = Callable[[str, int, dict], list[str]]
"""``policy(user_id, n, context) -> item ids``: one page of a feed."""


@dataclass(frozen=True, slots=True)
class _Outcomes:
    played: np.ndarray
    watch_ms: np.ndarray  # the whole dwell; can exceed the duration
    rewatch_ms: np.ndarray  # the looped part (0 when the video did not loop)
    flags: np.ndarray  # (len(FLAG_TYPES), n) bool


def _outcomes(rng: np.random.Generator, fit: np.ndarray, pull: np.ndarray, fatigue: np.ndarray,
              duration: np.ndarray) -> _Outcomes:
    """What viewers do with videos of these fits: one model for single swipes and bulk runs."""
    n = fit.shape[0]
    mood = fit + rng.normal(0.0, 0.6, n)
    z = mood - fatigue
    played = rng.random(n) < _sigmoid(1.5 * z + 0.3)
    ratio = 0.05 + 1.2 * _sigmoid(1.3 * z - 0.7) * np.exp(rng.normal(0.0, 0.3, n))
    skip_ms = np.minimum(rng.uniform(300.0, 2500.0, n), 0.3 * duration)
    watch = np.where(played, ratio * duration, skip_ms).astype(np.int64)
    rewatch = np.where(played & (watch > duration), watch - duration.astype(np.int64), 0)
    u = rng.random((len(FLAG_TYPES), n))
    flags = np.stack([
        played & (u[0] < _sigmoid(1.8 * z - 3.5)),  # like
        played & (u[1] < _sigmoid(1.6 * z - 5.0)),  # comment
        played & (u[2] < _sigmoid(1.8 * z - 5.0)),  # share
        played & (u[3] < _sigmoid(1.2 * z + 3.0 * pull - 6.5)),  # follow
        u[4] < _sigmoid(-2.0 * mood - 7.0),  # not_interested: about the video, not fatigue
    ])
    return _Outcomes(played, watch, rewatch, flags)


def _swipe_events(viewer: Viewer, item_id: str, session_id: str, pos: int, ts: int,
                  watch_ms: int, rewatch_ms: int, played: bool, flags: tuple[bool, ...],
                  request_id: str | None, position: int | None) -> list[Event]:
    """The events the app sends for one swipe: impression at ``ts``, the rest when it ends."""
    prefix, user, end = f"sim:{viewer.user_id}:{session_id}:{pos}:", viewer.user_id, ts + watch_ms
    ctx = (request_id, position, viewer.device, viewer.region, "feed", session_id)
    view = "play" if played else "skip"
    out = [Event(prefix + "impression", user, item_id, ts, "impression", None, *ctx),
           Event(prefix + view, user, item_id, end, view, watch_ms, *ctx)]
    if rewatch_ms > 0:
        out.append(Event(prefix + "rewatch", user, item_id, end, "rewatch", rewatch_ms, *ctx))
    for kind, on in zip(FLAG_TYPES, flags):
        if on:
            out.append(Event(prefix + kind, user, item_id, end, kind, None, *ctx))
    return out


@dataclass(eq=False)
class SessionState:
    """One viewing session: its random stream, the swipes so far, the creators followed."""

    session_id: str
    rng: np.random.Generator
    swipes: int = 0
    followed: set[str] = field(default_factory=set)


class Simulator:
    """Viewers of a ``World`` answering feeds one swipe at a time; follows last across sessions."""

    def __init__(self, world: World, *, fatigue_per_swipe: float = 0.05,
                 leave_base: float = LEAVE_BASE, allow_leave: bool = True,
                 page_size: int = 10) -> None:
        self.world = world
        self.fatigue_per_swipe = fatigue_per_swipe
        self.leave_base = leave_base
        self.allow_leave = allow_leave
        self.page_size = page_size
        self.follows: dict[str, set[str]] = {}

    def new_session(self, viewer: Viewer, session_id: str) -> SessionState:
        key = [self.world.seed, *viewer.seed_key, zlib.crc32(session_id.encode())]
        followed = self.follows.setdefault(viewer.user_id, set())
        return SessionState(session_id, np.random.default_rng(key), followed=followed)

    def fatigue(self, viewer: Viewer, state: SessionState) -> float:
        return self.fatigue_per_swipe * state.swipes / viewer.stamina

    def respond(self, viewer: Viewer, item_id: str, ts: int, state: SessionState, *,
                request_id: str | None = None, position: int | None = None) -> list[Event]:
        """The events of one swipe at session position ``state.swipes``; advances ``state``."""
        k = self.world.index_of(item_id)
        idx = np.array([k])
        fit, pull = self.world.fits(viewer, idx)
        fatigue = np.array([self.fatigue(viewer, state)])
        out = _outcomes(state.rng, fit, pull, fatigue, self.world._cat.duration[idx])
        flags = [bool(f) for f in out.flags[:, 0]]
        creator = self.world.items[k].creator_id
        flags[_FOLLOW] = flags[_FOLLOW] and creator not in state.followed  # followed once
        if flags[_FOLLOW]:
            state.followed.add(creator)
        events = _swipe_events(viewer, item_id, state.session_id, state.swipes, ts,
                               int(out.watch_ms[0]), int(out.rewatch_ms[0]), bool(out.played[0]),
                               tuple(flags), request_id, position)
        state.swipes += 1
        return events

    def leaves(self, viewer: Viewer, state: SessionState) -> bool:
        """Whether the viewer closes the app now; likelier as fatigue grows."""
        if not self.allow_leave:
            return False
        p = min(0.5, self.leave_base * np.exp(self.fatigue(viewer, state)))
        return bool(state.rng.random() < p)

    def run_session(self, viewer: Viewer, policy: Policy, n_swipes: int, start_ts: int,
                    session_id: str) -> list[Event]:
        """Ask ``policy`` for pages and swipe through them until ``n_swipes`` or the viewer
        leaves. Time moves on by each watch plus a short gap. Unknown item ids are ignored.
        A policy that calls a real feed may set ``context["request_id"]`` to the feed's own id."""
        state, events, ts, page_no = self.new_session(viewer, session_id), [], start_ts, 0
        while state.swipes < n_swipes:
            request_id = f"sim:{viewer.user_id}:{session_id}:req{page_no}"
            context = {"session_id": session_id, "device": viewer.device, "region": viewer.region,
                       "source": "feed", "ts": ts, "request_id": request_id}
            page = policy(viewer.user_id, self.page_size, context)
            request_id = context.get("request_id") or request_id
            page = [i for i in page if i in self.world._index]
            if not page:
                log.info("no known items for %s; session %s ends", viewer.user_id, session_id)
                break
            for position, item_id in enumerate(page):
                swipe = self.respond(viewer, item_id, ts, state, request_id=request_id,
                                     position=position)
                events.extend(swipe)
                ts = swipe[1].ts + int(state.rng.integers(*GAP_MS))
                if state.swipes >= n_swipes or self.leaves(viewer, state):
                    return events
            page_no += 1
        return events


def random_policy(world: World, seed: int = 0) -> Policy:
    """Uniformly random items among those already posted at ``context["ts"]``."""
    rng = np.random.default_rng([world.seed, 4, seed])
    order = np.argsort(world._cat.created, kind="stable")
    created = world._cat.created[order]

    def policy(user_id: str, n: int, context: dict) -> list[str]:
        posted = int(np.searchsorted(created, context.get("ts", world.start_ts), side="right"))
        return [world.items[k].item_id for k in order[rng.integers(0, max(posted, 1), n)].tolist()]

    return policy


def popular_policy(world: World) -> Policy:
    """The best items by hidden quality and sound trend, each served once per viewer."""
    order = np.argsort(-(world._cat.quality + 0.4 * world._cat.sound_trend), kind="stable").tolist()
    served: dict[str, int] = {}

    def policy(user_id: str, n: int, context: dict) -> list[str]:
        start = served.get(user_id, 0)
        served[user_id] = start + n
        return [world.items[k].item_id for k in order[start:start + n]]

    return policy


def generate_history(world: World, n_sessions_per_user: int, swipes_per_session: int, seed: int,
                     policy: Policy | None = None, *, span_ms: int = 7 * DAY_MS,
                     topic_bias: float = 0.6, allow_leave: bool = False,
                     fatigue_per_swipe: float = 0.05) -> Iterator[Event]:
    """Background events of every world viewer over ``span_ms`` before ``start_ts``, in time order.

    Session ``r`` of a viewer starts in the first half of the ``r``-th slice of the span. With a
    policy, each session is ``Simulator.run_session``. Without one, a vectorised twin of it runs,
    with items drawn (with probability ``topic_bias``) from a topic of the viewer's taste, else from
    anywhere, always among the items posted when the session starts.
    """
    rng = np.random.default_rng([world.seed, 3, seed])
    U, R, S = len(world.users), n_sessions_per_user, swipes_per_session
    slot = span_ms / max(R, 1)
    offsets = np.arange(R) * slot + rng.random((U, R)) * slot / 2
    starts = (world.start_ts - span_ms + offsets).astype(np.int64)  # (U, R)
    if policy is None:
        events = _bulk_history(rng, world, starts, S, seed, topic_bias, allow_leave,
                               fatigue_per_swipe)
    else:
        sim = Simulator(world, allow_leave=allow_leave, fatigue_per_swipe=fatigue_per_swipe)
        events = [e for u, v in enumerate(world.users) for r in range(R)
                  for e in sim.run_session(v, policy, S, int(starts[u, r]), f"h{seed}-{r}")]
    events.sort(key=attrgetter("ts"))  # stable: a swipe's own events keep their order
    return iter(events)


def _sample_items(rng: np.random.Generator, world: World, uidx: np.ndarray, start: np.ndarray,
                  bias: float) -> np.ndarray:
    """One item per swipe, of a topic drawn from the viewer's taste or of any topic, posted by
    ``start`` (the oldest item when none is)."""
    cat, n, T = world._cat, uidx.shape[0], len(world.topics)
    by_time = np.argsort(cat.created, kind="stable")
    posted = np.maximum(np.searchsorted(cat.created[by_time], start, side="right"), 1)
    pick = by_time[(rng.random(n) * posted).astype(np.int64)]
    # Inverse-CDF topic draws for all swipes at once: row u of the cumulative taste is shifted by u.
    cum = np.cumsum(world.viewer_arrays.taste, axis=1)
    cum = (cum / cum[:, -1:] + np.arange(len(world.users))[:, None]).ravel()
    topic = np.minimum(np.searchsorted(cum, uidx + rng.random(n)) - uidx * T, T - 1)
    by_topic = np.lexsort((cat.created, cat.topic))
    bounds = np.searchsorted(cat.topic[by_topic], np.arange(T + 1))
    use, u = rng.random(n) < bias, rng.random(n)
    for t in range(T):
        rows = np.flatnonzero(use & (topic == t))
        lo, hi = bounds[t], bounds[t + 1]
        avail = np.searchsorted(cat.created[by_topic[lo:hi]], start[rows], side="right")
        rows, avail = rows[avail > 0], avail[avail > 0]
        pick[rows] = by_topic[lo + (u[rows] * avail).astype(np.int64)]
    return pick


def _bulk_history(rng: np.random.Generator, world: World, starts: np.ndarray, S: int, seed: int,
                  bias: float, allow_leave: bool, fatigue_per_swipe: float) -> list[Event]:
    """``Simulator.run_session`` for all viewers and sessions at once, in arrays of swipes."""
    U, R = starts.shape
    vw, cat = world.viewer_arrays, world._cat
    uidx = np.repeat(np.arange(U), R * S)  # swipes ordered by viewer, session, position
    start = np.repeat(starts.ravel(), S)
    pos = np.tile(np.arange(S), U * R)
    item = _sample_items(rng, world, uidx, start, bias)
    fit, pull = _fit(cat, vw, uidx, item)
    out = _outcomes(rng, fit, pull, fatigue_per_swipe * pos / vw.stamina[uidx], cat.duration[item])
    dwell = (out.watch_ms + rng.integers(*GAP_MS, uidx.shape[0])).reshape(U * R, S)
    ts = start + (np.cumsum(dwell, axis=1) - dwell).ravel()
    keep = np.ones(uidx.shape[0], dtype=bool)
    if allow_leave:  # same rule as Simulator.leaves, checked after each swipe
        tired = fatigue_per_swipe * (pos + 1) / vw.stamina[uidx]
        p_leave = np.minimum(0.5, LEAVE_BASE * np.exp(tired))
        gone = (rng.random(uidx.shape[0]) < p_leave).reshape(U * R, S)
        last = np.where(gone.any(axis=1), gone.argmax(axis=1), S - 1)
        keep = (pos.reshape(U * R, S) <= last[:, None]).ravel()
    session = np.repeat(np.arange(U * R) % R, S)
    columns = (uidx, session, pos, item, ts, out.watch_ms, out.rewatch_ms, out.played, *out.flags,
               cat.creator[item], keep)
    followed: set[tuple[int, int]] = set()
    events: list[Event] = []
    rows = zip(*(a.tolist() for a in columns))
    for u, r, p, i, t, w, rw, pl, like, com, sh, fol, ni, c, k in rows:
        if not k:
            continue
        if fol:  # a creator is followed once
            fol = (u, c) not in followed
            followed.add((u, c))
        events.extend(_swipe_events(world.users[u], world.items[i].item_id, f"h{seed}-{r}", p, t,
                                    w, rw, pl, (like, com, sh, fol, ni), None, None))
    return events
