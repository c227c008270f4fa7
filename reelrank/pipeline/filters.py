"""Filters: each returns what it kept and what it removed, with a reason.

The removed lists are where explanations and debugging come from ("why did I not get X?").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from reelrank.pipeline.context import FeedContext
from reelrank.types import Candidate


@dataclass(frozen=True, slots=True)
class Removed:
    item_id: str
    filter: str
    reason: str

    def __reduce__(self) -> tuple:  # pickled with every kept trace: see ``Reason.__reduce__``
        return (Removed, (self.item_id, self.filter, self.reason))


@dataclass
class FilterResult:
    kept: list[Candidate]
    removed: list[Removed] = field(default_factory=list)


class Filter(Protocol):
    name: str

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult: ...


class _PredicateFilter:
    """A filter defined by one function: ``reason_for(ctx, candidate) -> str | None``."""

    name = "filter"

    def reason_for(self, ctx: FeedContext, cand: Candidate) -> str | None:
        raise NotImplementedError

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        kept, removed = [], []
        for c in candidates:
            reason = self.reason_for(ctx, c)
            if reason is None:
                kept.append(c)
            else:
                removed.append(Removed(c.item_id, self.name, reason))
        return FilterResult(kept, removed)


class VisibilityFilter(_PredicateFilter):
    """Drops items that are unknown or marked invisible by the app."""

    name = "visibility"

    def reason_for(self, ctx, cand):
        item = ctx.catalog.get(cand.item_id)
        if item is None:
            return "unknown item"
        return None if item.visible else "invisible"

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        # ``reason_for`` for all of them, the catalog read in one C-level pass.
        kept, removed = [], []
        for c, item in zip(candidates, ctx.catalog.get_many([c.item_id for c in candidates])):
            if item is not None and item.visible:
                kept.append(c)
            else:
                removed.append(Removed(c.item_id, self.name,
                                       "unknown item" if item is None else "invisible"))
        return FilterResult(kept, removed)


class SeenFilter(_PredicateFilter):
    """Drops what the viewer was already shown (impressions) or sent in an earlier page."""

    name = "seen"

    def reason_for(self, ctx, cand):
        if ctx.user is None:
            return None
        if cand.item_id in ctx.user.seen:
            return "seen"
        if cand.item_id in ctx.user.served:
            return "already served"
        return None

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        # ``reason_for`` inlined: two set lookups per candidate and no call.
        if ctx.user is None:
            return FilterResult(list(candidates))
        seen, served = ctx.user.seen, ctx.user.served
        kept, removed = [], []
        for c in candidates:
            i = c.item_id
            if i in seen:
                removed.append(Removed(i, self.name, "seen"))
            elif i in served:
                removed.append(Removed(i, self.name, "already served"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)


class NotInterestedFilter(_PredicateFilter):
    """Drops items the viewer marked not interested (or reported)."""

    name = "not_interested"

    def reason_for(self, ctx, cand):
        if ctx.user is not None and cand.item_id in ctx.user.not_interested:
            return "not interested"
        return None

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        if ctx.user is None or not ctx.user.not_interested:
            return FilterResult(list(candidates))  # nothing to remove: no pass at all
        return super().apply(ctx, candidates)


class HiddenCreatorSoundFilter(_PredicateFilter):
    """Drops videos of creators and sounds the viewer said they are not interested in."""

    name = "not_interested_creator_sound"

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        s = ctx.settings
        if not (s.hidden_creators or s.hidden_sounds):
            return FilterResult(list(candidates))  # nothing hidden: no pass at all
        return super().apply(ctx, candidates)

    def reason_for(self, ctx, cand):
        s = ctx.settings
        if not (s.hidden_creators or s.hidden_sounds):
            return None
        item = ctx.catalog.get(cand.item_id)
        if item is None:
            return None
        if item.creator_id in s.hidden_creators:
            return "not interested in this creator"
        if item.sound_id is not None and item.sound_id in s.hidden_sounds:
            return "not interested in this sound"
        return None


class MutedKeywordFilter(_PredicateFilter):
    """Drops items whose caption words or hashtags include a word the viewer muted.

    Whole words only ("cat" mutes "#cat" and "my cat", not "education"); a muted phrase of
    several words matches that sequence of words."""

    name = "muted_keyword"

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        if not any(_words(w) for w in ctx.settings.muted_keywords):
            return FilterResult(list(candidates))  # nothing muted: no pass at all
        return super().apply(ctx, candidates)

    def reason_for(self, ctx, cand):
        muted = [(w, _words(w)) for w in ctx.settings.muted_keywords]
        muted = [(w, ws) for w, ws in muted if ws]
        if not muted:
            return None
        item = ctx.catalog.get(cand.item_id)
        if item is None:
            return None
        caption = _words(item.caption)
        tags = {t.lower().lstrip("#") for t in item.hashtags}
        for word, parts in muted:
            if len(parts) == 1 and (parts[0] in tags or parts[0] in caption):
                return f"muted keyword '{word}'"
            if _contains_run(caption, parts) or " ".join(parts) in tags:
                return f"muted keyword '{word}'"
        return None


_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _contains_run(words: list[str], run: list[str]) -> bool:
    n = len(run)
    return any(words[i:i + n] == run for i in range(len(words) - n + 1))


def default_filters() -> list[Filter]:
    return [VisibilityFilter(), SeenFilter(), NotInterestedFilter(), HiddenCreatorSoundFilter(),
            MutedKeywordFilter()]
