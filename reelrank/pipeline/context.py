"""What every stage of the pipeline sees about one feed request."""

from __future__ import annotations

from dataclasses import dataclass, field

from reelrank.store.memory import Catalog, LiveState, UserState
from reelrank.types import UserSettings

MODES = ("personalized", "non_personalized", "following")


@dataclass(frozen=True)
class FeedRequest:
    user_id: str
    n: int = 10
    mode: str = "personalized"
    region: str | None = None
    device: str | None = None
    source: str | None = None
    session_id: str | None = None
    language: str | None = None


@dataclass
class FeedContext:
    request: FeedRequest
    settings: UserSettings
    catalog: Catalog
    live: LiveState
    user: UserState | None  # None for a viewer never seen before
    mode: str  # the mode actually served (settings can force non_personalized)
    now: int  # event-time clock, ms
    # Per-request values that several stages derive from the viewer (computed once).
    cache: dict = field(default_factory=dict)

    @property
    def region(self) -> str | None:
        if self.request.region:
            return self.request.region
        return self.user.region if self.user else None

    @property
    def personalized(self) -> bool:
        return self.mode == "personalized"
