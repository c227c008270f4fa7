"""A deterministic synthetic short-video world: a catalog, viewers with hidden tastes, their swipes.

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

from reelrank.types import Event, Item

log = logging.getLogger(__name__)

Policy = Callable[[str, int, dict], list[str]]
"""``policy(user_id, n, context) -> item ids``: one page of a feed."""

DAY_MS = 86_400_000
MIN_DURATION_MS, MAX_DURATION_MS = 5_000, 180_000
REGIONS = ("US", "BR", "DE", "ID", "IN", "MX", "GB", "JP")
REGION_WEIGHTS = (0.24, 0.16, 0.08, 0.14, 0.16, 0.10, 0.06, 0.06)
REGION_LANGUAGE = {"US": "en", "BR": "pt", "DE": "de", "ID": "id", "IN": "hi", "MX": "es",
                   "GB": "en", "JP": "ja"}
LANGUAGES = ("en", "pt", "de", "id", "hi", "es", "ja")  # "en" first: understood by many
DEVICES, DEVICE_WEIGHTS = ("ios", "android", "web"), (0.4, 0.5, 0.1)
STYLE_DIM = 4
FLAG_TYPES = ("like", "comment", "share", "follow", "not_interested")
_FOLLOW = FLAG_TYPES.index("follow")
GAP_MS = (200, 1500)  # pause between two swipes
LEAVE_BASE = 0.02  # chance of leaving after a swipe, before fatigue

# name: "hashtags | caption words"
_TOPIC_TEXT = {
    "cooking": "cooking recipe foodtok | pasta garlic crispy dinner spicy noodles",
    "football": "football soccer goals | goal dribble match striker freekick",
    "cats": "cats kitten catsoftiktok | kitten purring zoomies whiskers meow",
    "dogs": "dogs puppy doglover | puppy fetch walkies goodboy tail",
    "fitness": "fitness gym workout | squat reps protein cardio deadlift",
    "dance": "dance choreo dancechallenge | moves routine groove challenge steps",
    "music": "music cover guitar | chorus acoustic melody vocals riff",
    "comedy": "comedy funny skit | prank skit awkward roommate punchline",
    "gaming": "gaming gamer speedrun | speedrun boss clutch controller glitch",
    "travel": "travel wanderlust beach | sunset hostel roadtrip hidden island",
    "fashion": "fashion ootd style | outfit thrift sneakers vintage layering",
    "beauty": "makeup skincare beauty | glow eyeliner serum routine blush",
    "tech": "tech gadgets coding | unboxing laptop setup keyboard review",
    "science": "science space experiment | planet chemistry rocket telescope atoms",
    "diy": "diy crafts homedecor | woodwork paint upcycle glue shelf",
    "cars": "cars carsoftiktok drift | engine drift restoration turbo detailing",
    "gardening": "gardening plants houseplants | seedlings compost tomato repot bloom",
    "art": "art drawing painting | sketch watercolor portrait canvas timelapse",
    "finance": "money investing budget | savings stocks sidehustle tips budget",
    "parenting": "parenting momlife toddler | toddler bedtime snacks tantrum family",
    "asmr": "asmr satisfying relaxing | crunchy soap slime tapping whisper",
    "anime": "anime manga cosplay | cosplay opening episode fanart villain",
    "baking": "baking cake sourdough | bread frosting oven cookies dough",
    "basketball": "basketball nba dunk | crossover dunk buzzer court hoops",
}
TOPICS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = tuple(
    (name, tuple(text.split("|")[0].split()), tuple(text.split("|")[1].split()))
    for name, text in _TOPIC_TEXT.items()
)
GENERIC_TAGS = ("fyp", "viral", "foryou", "trending")
OPENERS = ("", "", "pov:", "wait for it", "part 2:", "try this", "day 3 of", "you need this")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True, slots=True, eq=False)
class Viewer:
    """A simulated viewer. An engine may see ``user_id``, ``region``, ``device``; not the rest."""

    user_id: str
    taste: np.ndarray  # (T,) topic affinities summing to 1, a few strong ones
    preferred_duration_ms: float
    region: str
    device: str
    language: str
    activity: float  # around 1.0; more active viewers have more stamina
    loyalty: float  # 0..1: how much the creator, not only the topic, matters
    style: np.ndarray  # (STYLE_DIM,) matched against creators' styles
    seed_key: tuple[int, ...]

    @property
    def stamina(self) -> float:
        return float(np.sqrt(self.activity))


def _draw_viewer(rng: np.random.Generator, user_id: str, n_topics: int,
                 seed_key: tuple[int, ...]) -> Viewer:
    alpha = np.full(n_topics, 0.1)
    n_strong = min(int(rng.integers(1, 4)), n_topics)
    alpha[rng.choice(n_topics, size=n_strong, replace=False)] += 1.5
    region = REGIONS[rng.choice(len(REGIONS), p=REGION_WEIGHTS)]
    length = np.exp(rng.normal(np.log(25_000), 0.6))
    return Viewer(
        user_id=user_id,
        taste=rng.dirichlet(alpha),
        preferred_duration_ms=float(np.clip(length, MIN_DURATION_MS, MAX_DURATION_MS)),
        region=region,
        device=DEVICES[rng.choice(len(DEVICES), p=DEVICE_WEIGHTS)],
        language="en" if rng.random() < 0.15 else REGION_LANGUAGE[region],
        activity=float(rng.lognormal(0.0, 0.5)),
        loyalty=float(rng.beta(2.0, 2.0)),
        style=rng.normal(0.0, 0.7, STYLE_DIM),
        seed_key=seed_key,
    )


@dataclass(frozen=True, slots=True)
class _Viewers:
    """Hidden viewer parameters as arrays, one row per viewer, for vectorised fits."""

    taste: np.ndarray  # (U, T)
    taste_rel: np.ndarray  # (U, T+1) taste / strongest taste; last column 0 means "no topic"
    style: np.ndarray  # (U, D)
    loyalty: np.ndarray  # (U,)
    log_pref: np.ndarray  # (U,) log preferred duration
    language: np.ndarray  # (U,) index into LANGUAGES
    stamina: np.ndarray  # (U,)

    @classmethod
    def of(cls, viewers: list[Viewer]) -> _Viewers:
        n = len(viewers)
        taste = np.array([v.taste for v in viewers]).reshape(n, -1)
        rel = taste / np.maximum(taste.max(axis=1, keepdims=True), 1e-12)
        return cls(
            taste=taste,
            taste_rel=np.hstack([rel, np.zeros((n, 1))]),
            style=np.array([v.style for v in viewers]).reshape(n, STYLE_DIM),
            loyalty=np.array([v.loyalty for v in viewers]),
            log_pref=np.log([v.preferred_duration_ms for v in viewers]),
            language=np.array([LANGUAGES.index(v.language) for v in viewers], dtype=np.int64),
            stamina=np.array([v.stamina for v in viewers]),
        )


@dataclass(frozen=True, slots=True)
class _Catalog:
    """Hidden per-item parameters (one entry per item); topic columns use T for "none"."""

    topic: np.ndarray
    topic2: np.ndarray
    creator: np.ndarray
    duration: np.ndarray  # ms, float
    created: np.ndarray  # ms, int64
    quality: np.ndarray
    sound: np.ndarray  # index of a library sound, -1 for the video's own audio
    sound_trend: np.ndarray
    sound_topic: np.ndarray
    region: np.ndarray  # index into REGIONS
    language: np.ndarray  # index into LANGUAGES
    creator_style: np.ndarray  # (C, D), by creator


def _fit(cat: _Catalog, vw: _Viewers, u: np.ndarray,
         i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free fit and creator pull for viewer rows ``u`` and items ``i`` (same shape)."""
    rel = vw.taste_rel
    topic = rel[u, cat.topic[i]] + 0.5 * rel[u, cat.topic2[i]]
    sound = 0.4 * cat.sound_trend[i] + 0.3 * rel[u, cat.sound_topic[i]]
    length = -0.35 * np.abs(np.log(cat.duration[i]) - vw.log_pref[u])
    lang = cat.language[i]
    lang = np.where(lang == vw.language[u], 0.0, np.where(lang == 0, -0.2, -0.4))
    pull = vw.loyalty[u] * np.einsum("nd,nd->n", vw.style[u], cat.creator_style[cat.creator[i]])
    return 2.2 * (topic - 0.4) + pull + sound + length + lang + cat.quality[i] + 0.3, pull


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


class World:
    """The catalog and viewers of one synthetic world, with ground-truth accessors."""

    def __init__(self, seed: int, start_ts: int, topics: tuple[str, ...], items: list[Item],
                 users: list[Viewer], catalog: _Catalog) -> None:
        self.seed, self.start_ts, self.topics = seed, start_ts, topics
        self.items, self.users, self._cat = items, users, catalog
        self._index = {it.item_id: k for k, it in enumerate(items)}
        self._viewers = {v.user_id: v for v in users}
        self._arrays: _Viewers | None = None

    @property
    def viewer_arrays(self) -> _Viewers:
        if self._arrays is None:
            self._arrays = _Viewers.of(self.users)
        return self._arrays

    def viewer(self, user_id: str) -> Viewer:
        return self._viewers[user_id]

    def item(self, item_id: str) -> Item:
        return self.items[self._index[item_id]]

    def index_of(self, item_id: str) -> int:
        return self._index[item_id]

    def topic_of(self, item_id: str) -> str:
        return self.topics[int(self._cat.topic[self._index[item_id]])]

    def item_ids_of_topic(self, topic: str) -> list[str]:
        t = self.topics.index(topic)
        return [self.items[k].item_id for k in np.flatnonzero(self._cat.topic == t)]

    def strong_topics(self, user_id: str, k: int = 2) -> list[str]:
        """The viewer's ``k`` strongest topics, strongest first."""
        order = np.argsort(-self._viewers[user_id].taste, kind="stable")[:k]
        return [self.topics[t] for t in order]

    def fits(self, viewer: Viewer, item_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free fit and creator pull of items (by index) for one viewer."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        return _fit(self._cat, _Viewers.of([viewer]), np.zeros_like(item_idx), item_idx)

    def true_affinity(self, user_id: str, item_id: str) -> float:
        """The hidden fit of an item for a viewer (higher: watched longer, liked more)."""
        idx = np.array([self._index[item_id]])
        return float(self.fits(self._viewers[user_id], idx)[0][0])

    def new_viewer(self, user_id: str, seed: int) -> Viewer:
        """A viewer with no history, for cold-start runs; ``viewer``/``true_affinity`` know it."""
        rng = np.random.default_rng([self.seed, 2, seed])
        self._viewers[user_id] = _draw_viewer(rng, user_id, len(self.topics), (2, seed))
        return self._viewers[user_id]


def build_world(n_users: int = 1_000, n_items: int = 10_000, n_creators: int | None = None,
                n_topics: int = 24, seed: int = 0, start_ts: int = 1_700_000_000_000,
                span_days: float = 30.0, new_creator_share: float = 0.15) -> World:
    """A world whose videos were posted over ``span_days`` before ``start_ts``.

    Creators (``n_items // 25`` by default) mostly post in one or two topics, in their own length
    style; new creators post few videos, all in the last tenth of the span.
    """
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in 1..{len(TOPICS)}, got {n_topics}")
    if n_items < 1 or n_users < 0:
        raise ValueError("n_items must be >= 1 and n_users >= 0")
    n_creators = n_creators or max(1, n_items // 25)
    rng = np.random.default_rng([seed, 0])
    span_ms = int(span_days * DAY_MS)
    cat = _draw_catalog(rng, n_items, n_creators, n_topics, start_ts, span_ms, new_creator_share)
    users = [_draw_viewer(np.random.default_rng([seed, 1, k]), f"u{k}", n_topics, (1, k))
             for k in range(n_users)]
    topics = tuple(t[0] for t in TOPICS[:n_topics])
    return World(seed, start_ts, topics, _make_items(rng, cat, n_topics), users, cat)


def _draw_catalog(rng: np.random.Generator, n: int, C: int, T: int, start_ts: int, span_ms: int,
                  new_share: float) -> _Catalog:
    c_topic = rng.integers(0, T, C)
    c_topic2 = np.where(rng.random(C) < 0.5, rng.integers(0, T, C), T)
    c_log_len = rng.normal(np.log(22_000), 0.6, C)
    c_new = rng.random(C) < new_share
    c_region = rng.choice(len(REGIONS), size=C, p=REGION_WEIGHTS)  # the language follows it
    weight = rng.lognormal(0.0, 1.0, C) * np.where(c_new, 0.15, 1.0)
    creator = rng.choice(C, size=n, p=weight / weight.sum())
    # Mostly the creator's main topic, else their second one, or (without one) anything.
    has2 = c_topic2[creator] < T
    alt = np.where(has2, c_topic2[creator], rng.integers(0, T, n))
    topic = np.where(rng.random(n) < np.where(has2, 0.7, 0.92), c_topic[creator], alt)
    other = (topic + rng.integers(1, max(T, 2), n)) % T
    topic2 = np.where((rng.random(n) < 0.3) & (T > 1), other, T)
    length = np.exp(rng.normal(c_log_len[creator], 0.35))
    age = rng.random(n) * np.where(c_new[creator], 0.1, 1.0) * span_ms
    quality = rng.normal(0.0, 0.3, C)[creator] + rng.normal(0.0, 0.25, n)
    sound, s_trend, s_topic = _draw_sounds(rng, topic, T)
    region_lang = np.array([LANGUAGES.index(REGION_LANGUAGE[g]) for g in REGIONS])
    return _Catalog(
        topic=topic, topic2=topic2, creator=creator,
        duration=np.clip(length, MIN_DURATION_MS, MAX_DURATION_MS).round(),
        created=(start_ts - age).astype(np.int64), quality=quality, sound=sound,
        sound_trend=np.where(sound >= 0, s_trend[sound], 0.0),
        sound_topic=np.where(sound >= 0, s_topic[sound], T),
        region=c_region[creator], language=region_lang[c_region][creator],
        creator_style=rng.normal(0.0, 0.7, (C, STYLE_DIM)),
    )


def _draw_sounds(rng: np.random.Generator, topic: np.ndarray,
                 T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Library sounds, each loosely tied to a topic, a few of them trending; 35% of the videos
    keep their own audio. Returns the sound of each video, and each sound's trend and topic."""
    n = topic.shape[0]
    n_sounds = max(10, n // 40)
    s_topic, s_trend = rng.integers(0, T, n_sounds), rng.beta(0.4, 3.0, n_sounds)
    w = 0.05 + s_trend
    sound = rng.choice(n_sounds, size=n, p=w / w.sum())
    match = rng.random(n) < 0.6  # these pick among the sounds of the video's topic
    for t in range(T):
        pool, rows = np.flatnonzero(s_topic == t), np.flatnonzero(match & (topic == t))
        if pool.size and rows.size:
            sound[rows] = rng.choice(pool, size=rows.size, p=w[pool] / w[pool].sum())
    sound[rng.random(n) < 0.35] = -1
    return sound, s_trend, s_topic


def _make_items(rng: np.random.Generator, cat: _Catalog, T: int) -> list[Item]:
    """Item records; captions are topic words and hashtags. Random draws are made up front."""
    n = cat.topic.shape[0]
    picks = rng.integers(0, 1_000, (n, 4)).tolist()
    opener = rng.integers(0, len(OPENERS), n).tolist()
    generic = np.where(rng.random(n) < 0.3, rng.integers(0, len(GENERIC_TAGS), n), -1).tolist()
    columns = (cat.topic, cat.topic2, cat.creator, cat.duration, cat.created, cat.sound,
               cat.language, cat.region)
    items = []
    for k, (t, t2, c, d, created, s, lang, reg) in enumerate(zip(*(a.tolist() for a in columns))):
        name, tag_pool, words = TOPICS[t]
        a, b, x, y = picks[k]
        first = a % len(words)
        second = (first + 1 + b % (len(words) - 1)) % len(words)
        tags = [tag_pool[x % len(tag_pool)], tag_pool[y % len(tag_pool)]]
        attrs: dict[str, str | float | int] = {"topic": name}
        if t2 < T:
            tags.append(TOPICS[t2][1][0])
            attrs["topic2"] = TOPICS[t2][0]
        if generic[k] >= 0:
            tags.append(GENERIC_TAGS[generic[k]])
        hashtags = tuple(dict.fromkeys(tags))
        text = " ".join(w for w in (OPENERS[opener[k]], words[first], words[second]) if w)
        caption = text + " " + " ".join("#" + h for h in hashtags)
        items.append(Item(f"v{k}", f"c{c}", int(d), created, caption, hashtags,
                          f"s{s}" if s >= 0 else None, LANGUAGES[lang], REGIONS[reg], True, attrs))
    return items
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
