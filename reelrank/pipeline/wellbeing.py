"""Wellbeing: daily watch-time limits that put a break notice in the feed, and protective
defaults for young viewers (a limit on by default, sensitive topics dampened).

Watch time is summed from the viewer's own view events (``play``, ``skip``, ``rewatch`` with
``watch_ms``) per UTC day of the event clock; nothing else is needed to enforce a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.rank import Scored
from reelrank.types import DAY_MS, Item, Reason, UserSettings

# Topics that guidance on minors' feeds (appearance, dieting, gambling, alcohol, risky
# challenges) asks platforms to keep from piling up. An app can also mark an item with the
# attribute ``sensitive`` = 1; both count.
SENSITIVE_TAGS: frozenset[str] = frozenset({
    "diet", "dieting", "weightloss", "fasting", "cosmeticsurgery", "gambling", "betting",
    "casino", "alcohol", "drinking", "vaping", "smoking", "challenge", "horror",
})


@dataclass
class WellbeingPolicy:
    sensitive_tags: frozenset[str] = SENSITIVE_TAGS
    young_damp: float = 0.2  # a young viewer's score of a sensitive item is multiplied by this
    young_daily_limit_minutes: int = 60
    # Learned topics an operator marked sensitive (``reelrank.pipeline.topics.LearnedTopics``
    # or anything with ``is_sensitive(item)``); None: tags and the attribute only.
    topics: object | None = None

    def daily_limit_minutes(self, settings: UserSettings) -> int | None:
        if settings.daily_limit_minutes is not None:
            return settings.daily_limit_minutes
        return self.young_daily_limit_minutes if settings.young_viewer else None

    def watched_today_ms(self, ctx: FeedContext) -> int:
        return ctx.user.watch_ms_on(ctx.now // DAY_MS) if ctx.user is not None else 0

    def notices(self, ctx: FeedContext) -> list[Reason]:
        limit = self.daily_limit_minutes(ctx.settings)
        if limit is None:
            return []
        minutes = self.watched_today_ms(ctx) // 60_000
        if minutes < limit:
            return []
        return [Reason("daily_limit_reached",
                       f"You have watched {minutes} minutes today, past your daily limit of "
                       f"{limit} minutes. Time for a break?")]

    def is_sensitive(self, item: Item) -> bool:
        if str(item.attributes.get("sensitive", "0")).lower() in ("1", "true", "yes"):
            return True
        if any(t.lower().lstrip("#") in self.sensitive_tags for t in item.hashtags):
            return True
        return self.topics is not None and self.topics.is_sensitive(item)

    def adjust(self, ctx: FeedContext, scored: list[Scored]) -> dict[str, str]:
        """Dampen sensitive items for a young viewer; returns a note per item touched."""
        if not ctx.settings.young_viewer:
            return {}
        notes = {}
        for s in scored:
            item = ctx.catalog.get(s.item_id)
            if item is not None and self.is_sensitive(item):
                s.score = s.score * self.young_damp if s.score >= 0 else s.score / self.young_damp
                notes[s.item_id] = "sensitive topic dampened (young viewer protections)"
        return notes
