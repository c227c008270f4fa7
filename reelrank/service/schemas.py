"""Request and response bodies of the HTTP API (shared/API.md) as Pydantic v2 models.

Policy for request bodies, chosen for a contract that integrators code against:

- **Unknown fields are rejected** (``extra="forbid"``): a 422 whose details name the field, e.g.
  ``events[3].watchms``. A misspelt optional field would otherwise be dropped without a word and
  the data lost for good (the event log is the only record of behaviour). The cost is that a
  client must not send fields this server does not know; responses, on the other hand, may gain
  fields at any time, so clients must ignore unknown fields in what they read.
- **Types are strict**: a JSON number is not a string id, ``"1000"`` or ``1000.0`` is not an int,
  ``1`` is not a bool. What the contract says is what is accepted.
- Limits: ids follow ``reelrank.ids`` (1..128 characters of printable text, no control or
  bidi-override characters, no surrounding whitespace); batches 1..10,000 elements; times
  are epoch milliseconds in 0..2**63-1 (what the store's integer columns hold), and an
  event's ``ts`` at most 24 hours ahead of the server's clock (the live state's clock follows
  event time, so one event stamped in microseconds would otherwise age the whole catalog at
  once).
- ``region`` (of an item, an event's context or a feed request) is a coarse code only, such as
  ``US``, ``BR`` or ``CN-BJ``: at most 8 letters/digits with one optional ``-``/``_``. Anything
  finer (an IP address, coordinates, a street) is rejected, never stored.

Responses are the shapes of API.md; fields may be added, never removed or renamed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from reelrank.ids import MAX_ID_LENGTH, id_problem
from reelrank.types import EVENT_TYPES, Event, Item, UserSettings

MAX_BATCH = 10_000
MAX_RANK_ITEMS = 1_000
MAX_INT64 = 2**63 - 1
# How far ahead of the server's wall clock an event time may be (clocks of phones drift).
MAX_CLOCK_SKEW_MS = 24 * 3_600_000



def _valid_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_id", "an id {problem}", {"problem": problem})
    return value


# The lengths are stated for the OpenAPI document; ``reelrank.ids`` holds the whole rule.
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
               AfterValidator(_valid_id)]
Millis = Annotated[int, Field(ge=0, le=MAX_INT64)]
RegionCode = Annotated[
    str,
    StringConstraints(min_length=1, max_length=8, pattern=r"^[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)?$"),
]
ShortText = Annotated[str, StringConstraints(max_length=64)]
EventType = Literal[tuple(sorted(EVENT_TYPES))]  # type: ignore[valid-type]
Mode = Literal["personalized", "non_personalized", "following"]


def _attribute_value(value: Any) -> Any:
    """One clear error instead of one per member of the union (str, int, float)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("attribute_type", "must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("attribute_type", "must be a finite number")
    if isinstance(value, str) and len(value) > 1024:
        raise PydanticCustomError("attribute_type", "a string attribute is at most 1024 characters")
    return value


AttributeValue = Annotated[Union[str, int, float], BeforeValidator(_attribute_value)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- catalog ----------------------------------------------------------------------------------
class ItemIn(_Request):
    """One video of the catalog."""

    model_config = ConfigDict(title="Item")

    item_id: Id
    creator_id: Id
    duration_ms: Annotated[int, Field(gt=0, le=MAX_INT64)]
    created_at: Millis
    caption: Annotated[str, StringConstraints(max_length=10_000)] = ""
    hashtags: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=256)]], Field(max_length=200)
    ] = []
    sound_id: Id | None = None
    language: Annotated[str, StringConstraints(min_length=1, max_length=35)] | None = None
    region: RegionCode | None = None
    visible: bool = True
    attributes: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], AttributeValue],
        Field(max_length=100),
    ] = {}

    def to_domain(self) -> Item:
        return Item(
            item_id=self.item_id, creator_id=self.creator_id, duration_ms=self.duration_ms,
            created_at=self.created_at, caption=self.caption, hashtags=tuple(self.hashtags),
            sound_id=self.sound_id, language=self.language, region=self.region,
            visible=self.visible, attributes=dict(self.attributes),
        )


class ItemBatch(_Request):
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_BATCH)]


class UpsertResponse(BaseModel):
    upserted: int


# -- events -----------------------------------------------------------------------------------
class EventContext(_Request):
    """Where the event happened. ``region`` is a coarse code; precise location is refused."""

    device: ShortText | None = None
    region: RegionCode | None = None
    source: ShortText | None = None
    session_id: Id | None = None


class EventIn(_Request):
    """One thing a viewer did with one video; ``event_id`` is the client's idempotency key."""

    model_config = ConfigDict(title="Event")

    event_id: Id
    user_id: Id
    item_id: Id
    ts: Millis
    type: EventType  # type: ignore[valid-type]
    watch_ms: Millis | None = None
    request_id: Id | None = None
    position: Annotated[int, Field(ge=0, le=MAX_INT64)] | None = None
    context: EventContext | None = None

    @field_validator("ts")
    @classmethod
    def _not_in_the_future(cls, ts: int) -> int:
        # The live state's clock is the newest event time: one event stamped in microseconds
        # (or years ahead) would age every video and empty "trending" for everyone.
        ahead = ts - int(time.time() * 1000)
        if ahead > MAX_CLOCK_SKEW_MS:
            raise PydanticCustomError(
                "ts_in_future", "ts is {hours} hours ahead of the server clock; times are "
                "milliseconds since the Unix epoch (not microseconds)",
                {"hours": ahead // 3_600_000})
        return ts

    def to_domain(self) -> Event:
        ctx = self.context or EventContext()
        return Event(
            event_id=self.event_id, user_id=self.user_id, item_id=self.item_id, ts=self.ts,
            type=self.type, watch_ms=self.watch_ms, request_id=self.request_id,
            position=self.position, device=ctx.device, region=ctx.region, source=ctx.source,
            session_id=ctx.session_id,
        )


class EventBatch(_Request):
    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int


# -- feed, rank -------------------------------------------------------------------------------
class ReasonOut(BaseModel):
    code: str
    text: str


class FeedItemOut(BaseModel):
    item_id: str
    score: float
    source: str
    reasons: list[ReasonOut]


class FeedResponse(BaseModel):
    request_id: str
    user_id: str
    model_version: str
    mode: str
    items: list[FeedItemOut]
    notices: list[ReasonOut]


class RankRequest(_Request):
    user_id: Id
    item_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_RANK_ITEMS)]
    context: EventContext | None = None


class RankedItem(BaseModel):
    item_id: str
    score: float
    predictions: dict[str, float]


class RankResponse(BaseModel):
    model_version: str
    items: list[RankedItem]


# -- the viewer's settings --------------------------------------------------------------------
MutedKeyword = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SettingsIn(_Request):
    """``PUT`` body. A field left out keeps its current value (so a client that only knows
    ``muted_keywords`` cannot switch personalization back on by accident); ``null`` for
    ``daily_limit_minutes`` removes the limit."""

    model_config = ConfigDict(title="SettingsUpdate")

    personalization: bool | None = None
    muted_keywords: Annotated[list[MutedKeyword], Field(max_length=100)] | None = None
    daily_limit_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None
    hidden_creators: Annotated[list[Id], Field(max_length=1000)] | None = None
    hidden_sounds: Annotated[list[Id], Field(max_length=1000)] | None = None
    young_viewer: bool | None = None

    @field_validator("personalization", "young_viewer")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool:
        if value is None:
            raise PydanticCustomError("bool_type", "must be true or false")
        return value

    @field_validator("muted_keywords")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str]:
        if value is None:
            raise PydanticCustomError("list_type", "must be a list of strings")
        out: list[str] = []
        for word in value:
            word = word.strip()
            # An empty keyword (or a bare "#") would be found in every caption and mute all.
            if not word.lstrip("#").strip():
                raise PydanticCustomError(
                    "muted_keyword", "a muted keyword needs at least one character besides '#'")
            if word not in out:
                out.append(word)
        return out

    @field_validator("hidden_creators", "hidden_sounds")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str]:
        if value is None:
            raise PydanticCustomError("list_type", "must be a list of ids")
        return list(dict.fromkeys(value))

    def merge(self, current: UserSettings) -> UserSettings:
        """The current settings with the fields this body gives replaced (fields the API does
        not expose, such as the reset marker, are kept)."""
        change: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            change[name] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(current, **change)


class SettingsOut(BaseModel):
    personalization: bool
    muted_keywords: list[str]
    daily_limit_minutes: int | None
    hidden_creators: list[str]
    hidden_sounds: list[str]
    young_viewer: bool

    @classmethod
    def of(cls, s: UserSettings) -> "SettingsOut":
        return cls(personalization=s.personalization, muted_keywords=list(s.muted_keywords),
                   daily_limit_minutes=s.daily_limit_minutes,
                   hidden_creators=list(s.hidden_creators), hidden_sounds=list(s.hidden_sounds),
                   young_viewer=s.young_viewer)


class NotInterestedIn(_Request):
    """``POST /v1/users/{id}/not_interested``: less of this video, its creator or its sound."""

    item_id: Id
    scope: Literal["video", "creator", "sound"] = "video"
    ts: Annotated[int, Field(ge=0)] | None = None


# -- operations -------------------------------------------------------------------------------
class TokenResponse(BaseModel):
    user_id: str
    token: str


class HealthResponse(BaseModel):
    status: str
    model_version: str


class ErrorDetail(BaseModel):
    field: str
    message: str
    index: int | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer."""

    error: ErrorBody


# What the OpenAPI document says about errors (every non-2xx body is an ErrorResponse).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or unknown token"},
    403: {"model": ErrorResponse, "description": "the token's scope does not allow this"},
    422: {"model": ErrorResponse, "description": "invalid input; details name each field"},
}
