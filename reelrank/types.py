"""Frozen value types shared across the package.

Everything that crosses a module boundary (store <-> pipeline <-> service) is one of these,
so each layer can be tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "impression", "play", "skip", "like", "unlike", "share", "comment", "follow",
        "unfollow", "not_interested", "report", "rewatch", "pause", "profile_visit",
    }
)
# Events with a watch duration attached.
VIEW_TYPES: frozenset[str] = frozenset({"play", "skip", "rewatch"})
# Explicit signals that the viewer wanted more of this.
POSITIVE_TYPES: frozenset[str] = frozenset({"like", "share", "comment", "follow", "rewatch", "profile_visit"})
# Explicit signals that the viewer wanted less of this.
NEGATIVE_TYPES: frozenset[str] = frozenset({"not_interested", "report"})

# What is predicted or labelled per impression, each tuple in the order its users index by: the
# ranker's heads (models/ranker.py), the labels the impression-outcome join gives (join.py:
# the binary ones) and what the heuristic scorer estimates from counters (pipeline/rank.py).
RANKER_TASKS = ("long_view", "watch_time", "like", "share", "comment", "follow", "negative")
LABEL_TASKS = ("long_view", "like", "follow", "comment", "share", "negative")
HEURISTIC_TASKS = ("long_view", "like", "share", "negative")

# Reason codes of the slots that find new videos and new creators their first audiences
# (pipeline/explore.py proposes them, the re-ranker reserves them, exposure figures count them).
NEW_CREATOR = "new_creator"
NEW_VIDEO = "new_video"
EXPLORATION_CODES = frozenset({NEW_CREATOR, NEW_VIDEO})

# Time, in the milliseconds every event time and window is counted in.
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# A view is a "long view" (a positive) once it lasted this long, or the whole video if shorter.
# On KuaiRand this rule reproduces the platform's own long_view label on 98.6% of log rows.
LONG_VIEW_MS = 18_000


def is_long_view(watch_ms: int | None, duration_ms: int) -> bool:
    if watch_ms is None:
        return False
    return watch_ms >= min(LONG_VIEW_MS, duration_ms)


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    creator_id: str
    duration_ms: int
    created_at: int
    caption: str = ""
    hashtags: tuple[str, ...] = ()
    sound_id: str | None = None
    language: str | None = None
    region: str | None = None
    visible: bool = True
    attributes: Mapping[str, str | float | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    ts: int
    type: str
    watch_ms: int | None = None
    request_id: str | None = None
    position: int | None = None
    device: str | None = None
    region: str | None = None
    source: str | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class UserSettings:
    user_id: str
    personalization: bool = True
    muted_keywords: tuple[str, ...] = ()  # words and hashtags
    daily_limit_minutes: int | None = None
    hidden_creators: tuple[str, ...] = ()  # "not interested in this creator"
    hidden_sounds: tuple[str, ...] = ()  # "not interested in this sound"
    # Protective defaults for a young viewer: a daily limit and sensitive topics dampened.
    young_viewer: bool = False
    # Interests inferred from events up to this log position are forgotten ("refresh my feed").
    interests_reset_seq: int = 0


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """Who read or changed a viewer's data, and when (the viewer can see this list)."""

    ts: int
    actor: str  # "user", "admin:<key prefix>", "serve:<key prefix>", "system"
    action: str  # "export", "read_settings", "erase", ...


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    text: str

    def __reduce__(self) -> tuple:
        # Pickled with every kept feed trace (a page's candidates carry a few hundred): the
        # dataclass default reads its fields one by one in Python, about 3x slower.
        return (Reason, (self.code, self.text))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item proposed by a candidate source, with the source's own score and reasons."""

    item_id: str
    source: str
    score: float = 0.0
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedItem:
    item_id: str
    score: float
    source: str
    reasons: tuple[Reason, ...]


# What a feed request may ask for: the personalised feed, one without personalisation (a
# viewer's setting can force it), or only the creators the viewer follows.
MODES = ("personalized", "non_personalized", "following")


@dataclass(frozen=True)
class FeedRequest:
    """One page of a viewer's feed, as asked by a client (``GET /v1/feed``)."""

    user_id: str
    n: int = 10
    mode: str = "personalized"
    region: str | None = None
    device: str | None = None
    source: str | None = None
    session_id: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A credential as stored: only the hash of the token is kept."""

    key_hash: str
    scope: str  # "ingest" | "serve" | "admin" | "user"
    user_id: str | None = None
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class Token:
    """One viewed video in a history, with what the viewer did with it."""

    item_id: str
    ts: int
    event_type: str  # "long_view", "play" (shorter), or "impression" when nothing followed
    watch_ratio: float | None
    like: int = 0
    share: int = 0
    comment: int = 0
    follow: int = 0
    negative: int = 0

    @property
    def positive(self) -> bool:
        """A long view or an explicit positive: what retrieval learns to predict."""
        return bool(self.like or self.share or self.comment or self.follow
                    or self.event_type == "long_view")
