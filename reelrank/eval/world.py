"""The synthetic world of ``eval/simulator.py``: its catalog (creators, topics, sounds, videos
posted over a span of days) and its viewers with hidden tastes, drawn from one seed, with the
ground-truth accessors evaluations read (``World.true_affinity``, ``World.topic_of``).

How viewers behave in it (swipes, sessions) is ``eval/simulator.py``, which re-exports these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelrank.types import DAY_MS, Item

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
