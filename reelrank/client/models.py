"""What the client sends and gets back, as plain dataclasses.

Inputs (``Item``, ``Event``) turn into the API's JSON with ``to_json``; the client also takes
plain dicts of the same shape. Outputs are parsed from the JSON with ``from_json``, which
ignores fields it does not know: the API may add fields to any answer, and an older client must
keep working against a newer server. Answers whose shape is open-ended (explanations, exports,
statistics, creator insights) are returned as dicts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

JSON = dict[str, Any]


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _without_none(data: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in data.items() if v is not None}


# -- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Item:
    """One video of the catalog (``POST /v1/items``)."""

    item_id: str
    creator_id: str
    duration_ms: int
    created_at: int
    caption: str = ""
    hashtags: tuple[str, ...] | list[str] = ()
    sound_id: str | None = None
    language: str | None = None
    region: str | None = None
    visible: bool = True
    attributes: Mapping[str, str | int | float] = field(default_factory=dict)

    def to_json(self) -> JSON:
        data = asdict(self)
        data["hashtags"] = list(self.hashtags)
        data["attributes"] = dict(self.attributes)
        return _without_none(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Item":
        known = _known(cls, data)
        known["hashtags"] = tuple(known.get("hashtags") or ())
        return cls(**known)


@dataclass(frozen=True, kw_only=True)
class EventContext:
    device: str | None = None
    region: str | None = None
    source: str | None = None
    session_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing a viewer did with one video (``POST /v1/events``).

    ``event_id`` is the idempotency key. Leave it out and the client assigns a random one
    before the first attempt, so that a retry re-sends the same id and the server counts the
    event once. ``ts`` left out is the time of sending (epoch milliseconds)."""

    user_id: str
    item_id: str
    type: str
    ts: int | None = None
    event_id: str | None = None
    watch_ms: int | None = None
    request_id: str | None = None
    position: int | None = None
    context: EventContext | None = None

    def to_json(self) -> JSON:
        data = _without_none(asdict(self))
        if self.context is not None:
            data["context"] = _without_none(asdict(self.context))
        return data


def event_json(event: Event | Mapping[str, Any], now_ms: int | None = None) -> JSON:
    """The event as the API's JSON, with an ``event_id`` and a ``ts`` filled in where missing.
    Called once per event before anything is sent: every retry then carries the same id."""
    data = event.to_json() if isinstance(event, Event) else dict(event)
    if not data.get("event_id"):
        data["event_id"] = uuid.uuid4().hex
    if data.get("ts") is None:
        data["ts"] = now_ms if now_ms is not None else int(time.time() * 1000)
    return data


def item_json(item: Item | Mapping[str, Any]) -> JSON:
    return item.to_json() if isinstance(item, Item) else dict(item)


# -- outputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventsResult:
    """The sum over every batch sent: ``accepted`` newly stored, ``duplicates`` already known
    (a retry whose first attempt was stored shows up here, never twice in ``accepted``)."""

    accepted: int
    duplicates: int
    batches: int
    event_ids: list[str]


@dataclass(frozen=True)
class ItemsResult:
    upserted: int
    batches: int


@dataclass(frozen=True)
class Reason:
    code: str
    text: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Reason":
        return cls(code=str(data.get("code", "")), text=str(data.get("text", "")))


@dataclass(frozen=True)
class FeedEntry:
    item_id: str
    score: float
    source: str
    reasons: list[Reason]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeedEntry":
        return cls(item_id=data["item_id"], score=float(data["score"]), source=data["source"],
                   reasons=[Reason.from_json(r) for r in data.get("reasons", [])])


@dataclass(frozen=True)
class FeedPage:
    request_id: str
    user_id: str
    model_version: str
    mode: str
    items: list[FeedEntry]
    notices: list[Reason]

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeedPage":
        return cls(request_id=data["request_id"], user_id=data["user_id"],
                   model_version=data["model_version"], mode=data["mode"],
                   items=[FeedEntry.from_json(i) for i in data.get("items", [])],
                   notices=[Reason.from_json(r) for r in data.get("notices", [])])


@dataclass(frozen=True)
class RankedItem:
    item_id: str
    score: float
    predictions: dict[str, float]


@dataclass(frozen=True)
class RankResult:
    model_version: str
    items: list[RankedItem]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RankResult":
        return cls(model_version=data["model_version"],
                   items=[RankedItem(item_id=i["item_id"], score=float(i["score"]),
                                     predictions=dict(i.get("predictions", {})))
                          for i in data.get("items", [])])


@dataclass(frozen=True)
class Settings:
    personalization: bool
    muted_keywords: list[str]
    daily_limit_minutes: int | None
    hidden_creators: list[str] = field(default_factory=list)
    hidden_sounds: list[str] = field(default_factory=list)
    young_viewer: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Settings":
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class ItemsLookup:
    items: list[Item]
    missing: list[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ItemsLookup":
        return cls(items=[Item.from_json(i) for i in data.get("items", [])],
                   missing=list(data.get("missing", [])))


@dataclass(frozen=True)
class Job:
    """A training run started by ``train()``; ``status`` is queued, running, done or failed."""

    job_id: str
    status: str
    progress: float = 0.0
    model_version: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Job":
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Health:
    status: str
    model_version: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Health":
        return cls(**_known(cls, data))
