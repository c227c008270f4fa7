"""What every stage of the pipeline sees about one feed request."""

from __future__ import annotations

from dataclasses import dataclass, field

from reelrank.store.live import CatalogView, LiveState, UserState
from reelrank.types import MODES, FeedRequest, UserSettings

__all__ = ["MODES", "FeedContext", "FeedRequest"]  # the request's types live in types.py


@dataclass
class FeedContext:
    request: FeedRequest
    settings: UserSettings
    catalog: CatalogView
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
