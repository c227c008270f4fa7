"""Re-ranking: turn a scored list into a feed page under diversity and exploration rules.

Greedy, one slot at a time: take the best remaining item that breaks no rule. The rules:

- **creator run**: at most ``max_creator_run`` consecutive items of one creator (hard: an item
  that can only break it is left for a later page, never forced in);
- **sound run**: at most ``max_sound_run`` consecutive items using one sound;
- **topic share**: within any ``topic_window`` consecutive items, at most ``max_topic_share`` of
  them (rounded down, at least 1) on one topic, as ``topics`` reads it (``reelrank.topics``,
  or the learned topics of ``reelrank.pipeline.topics``);
- **exploration slots**: by slot ``k`` (1-based) at least ``round(k * exploration_share)`` items
  come from exploration (new videos and new creators, marked by the exploration source's reason
  codes), when there are any; of those, at least ``new_creator_share`` go to new creators.

The sound and topic rules are soft: when nothing left satisfies them they are relaxed (topic
first), so a narrow candidate pool gives a full page rather than a short one. The runs and
windows continue across pages: the tail of what the viewer was last served counts as the items
before slot 1. Every move is noted per item in the trace, which ``/v1/explain`` shows.

The following feed is exempt: it is the creators the viewer chose, newest first, by contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.rank import Scored
from reelrank.topics import ATTRIBUTE_TOPICS
# Reason codes of exploration candidates (``reelrank.pipeline.explore``): types.py's vocabulary.
from reelrank.types import EXPLORATION_CODES, NEW_CREATOR, NEW_VIDEO  # noqa: F401


@dataclass
class RerankResult:
    items: list[Scored]
    notes: dict[str, list[str]]  # item_id -> what the re-ranker did to it


@dataclass(slots=True)
class _Row:
    scored: Scored
    explore: bool
    new_creator: bool
    # (creator, sound, topic): read from the catalog when a rule first looks at the item
    # (``DiversityReranker._facts``). A page of 10 looks at a few dozen of ~300 candidates.
    facts: tuple[str | None, str | None, str | None] | None = None


class DiversityReranker:
    """Spacing, topic diversity and guaranteed exploration slots. ``None`` (or 0) switches a rule
    off: ``DiversityReranker(None, None, 0, 1.0, 0.0)`` keeps the scorer's order."""

    def __init__(self, max_creator_run: int | None = 1, max_sound_run: int | None = 1,
                 topic_window: int = 5, max_topic_share: float = 0.6,
                 exploration_share: float = 0.1, new_creator_share: float = 0.5,
                 topics=None):
        for name, value in (("max_creator_run", max_creator_run), ("max_sound_run", max_sound_run)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if topic_window < 0 or not 0.0 < max_topic_share <= 1.0:
            raise ValueError("topic_window must be >= 0 and max_topic_share in (0, 1]")
        if not 0.0 <= exploration_share <= 1.0 or not 0.0 <= new_creator_share <= 1.0:
            raise ValueError("exploration_share and new_creator_share must be in [0, 1]")
        self.max_creator_run = max_creator_run
        self.max_sound_run = max_sound_run
        self.topic_window = topic_window
        self.max_topic_share = max_topic_share
        self.exploration_share = exploration_share
        self.new_creator_share = new_creator_share
        # What the topic rule reads: ``of(item)`` and ``label(topic)``.
        self.topics = topics or ATTRIBUTE_TOPICS

    @property
    def max_per_topic(self) -> int | None:
        """Items of one topic allowed in any ``topic_window`` consecutive items."""
        if self.topic_window <= 1 or self.max_topic_share >= 1.0:
            return None
        return max(1, math.floor(self.max_topic_share * self.topic_window + 1e-9))

    def settings(self) -> dict:
        return {"max_creator_run": self.max_creator_run, "max_sound_run": self.max_sound_run,
                "topic_window": self.topic_window, "max_topic_share": self.max_topic_share,
                "exploration_share": self.exploration_share,
                "new_creator_share": self.new_creator_share}

    # -- the page ---------------------------------------------------------------------------------
    def rerank(self, ctx: FeedContext, scored: list[Scored], n: int,
               rows: dict | None = None) -> RerankResult:
        """``rows``: the per-item facts of earlier calls over the same items (a feed plan's
        pages, ``pipeline/plans.py``), reused and filled in; they depend only on the item and
        its scored reasons."""
        ordered = sorted(scored, key=lambda s: (-s.score, s.item_id))
        if rows is None:
            pool = [_row(s) for s in ordered]
        else:
            pool = []
            for s in ordered:
                row = rows.get(s.item_id)
                if row is None or row.scored is not s:
                    row = rows[s.item_id] = _row(s)
                pool.append(row)
        notes: dict[str, list[str]] = {}
        if ctx.mode == "following":
            return RerankResult([r.scored for r in pool[:n]], notes)
        before = self._served_tail(ctx)
        out: list[_Row] = []
        explored = new_creators = 0
        while pool and len(out) < n:
            slot = len(out) + 1
            want_explore = explored < round(slot * self.exploration_share + 1e-9)
            want_new = new_creators < round((explored + 1) * self.new_creator_share + 1e-9)
            idx = self._pick(ctx, pool, before + out, notes, want_explore, want_new)
            if idx is None:
                break
            row = pool.pop(idx)
            if row.explore:
                explored += 1
                new_creators += row.new_creator
            out.append(row)
        for left in pool:
            if left.scored.item_id in notes:
                notes[left.scored.item_id].append("left for a later page")
        return RerankResult([r.scored for r in out], notes)

    def _pick(self, ctx: FeedContext, pool: list[_Row], placed: list[_Row],
              notes: dict[str, list[str]], want_explore: bool, want_new: bool) -> int | None:
        """Index in ``pool`` of the item for the next slot, noting why better-scored items
        were passed over."""
        if want_explore:
            groups = ([r for r in pool if r.explore and r.new_creator], [r for r in pool if r.explore])
            for group in groups if want_new else groups[1:]:
                for relax in range(3):
                    for row in group:
                        if not self._blocked(ctx, row, placed, relax):
                            idx = pool.index(row)
                            if idx > 0:
                                _note(notes, row, "moved up: an exploration slot "
                                      f"({_explore_text(row)})")
                            return idx
        for relax in range(3):
            for idx, row in enumerate(pool):
                why = self._blocked(ctx, row, placed, relax)
                if why is None:
                    if relax:
                        _note(notes, row, "placed although "
                              + ("its topic" if relax == 1 else "its topic or sound")
                              + " repeats: nothing else fit")
                    return idx
                if relax == 0:
                    _note(notes, row, f"moved down: {why}")
        return None

    def _blocked(self, ctx: FeedContext, row: _Row, placed: list[_Row],
                 relax: int) -> str | None:
        """Why ``row`` may not come next (``None``: it may). ``relax`` 1 drops the topic rule,
        2 the sound rule too; the creator rule always holds. Rows in ``placed`` passed here
        before, so their facts are read already."""
        creator, sound, topic = row.facts or self._facts(ctx, row)
        k = self.max_creator_run
        if k is not None and creator is not None and len(placed) >= k and all(
                p.facts[0] == creator for p in placed[-k:]):  # type: ignore[index]
            return f"same creator as the {k} item(s) before it"
        k = self.max_sound_run
        if relax < 2 and k is not None and sound is not None and len(placed) >= k and all(
                p.facts[1] == sound for p in placed[-k:]):  # type: ignore[index]
            return f"same sound as the {k} item(s) before it"
        cap = self.max_per_topic
        if relax < 1 and cap is not None and topic is not None:
            recent = placed[-(self.topic_window - 1):]
            if sum(p.facts[2] == topic for p in recent) >= cap:  # type: ignore[index]
                return (f"{self.topics.label(topic)} already fills {cap} of the last "
                        f"{self.topic_window} slots")
        return None

    # -- per-item facts ---------------------------------------------------------------------------
    def _facts(self, ctx: FeedContext, row: _Row) -> tuple[str | None, str | None, str | None]:
        item = ctx.catalog.get(row.scored.item_id)
        row.facts = (item.creator_id if item else None, item.sound_id if item else None,
                     self.topics.of(item))
        return row.facts

    def _served_tail(self, ctx: FeedContext) -> list[_Row]:
        """The last items sent to this viewer: the runs and the topic window continue from
        them, so page 2 does not open with the creator that closed page 1."""
        if ctx.user is None or not ctx.user.served:
            return []
        keep = max(self.max_creator_run or 0, self.max_sound_run or 0, self.topic_window - 1)
        if keep <= 0:
            return []
        tail = list(ctx.user.served)[-keep:]
        rows = []
        for item_id in tail:
            item = ctx.catalog.get(item_id)
            rows.append(_Row(None, False, False,  # type: ignore[arg-type]
                             (item.creator_id if item else None,
                              item.sound_id if item else None, self.topics.of(item))))
        return rows


class SpacingReranker(DiversityReranker):
    """The v0 re-ranker: never the same creator twice in a row (configurable run length), no
    other rule."""

    def __init__(self, max_creator_run: int = 1):
        super().__init__(max_creator_run=max_creator_run, max_sound_run=None, topic_window=0,
                         exploration_share=0.0)

    def _served_tail(self, ctx: FeedContext) -> list[_Row]:
        return []  # v0 behaviour: each page on its own


def _row(s: Scored) -> _Row:
    """A scored item's row: whether exploration proposed it (and for a new creator); its
    catalog facts wait until a rule needs them."""
    explore = new_creator = False
    for reasons in ((s.reasons,) if s.reasons is s.candidate.reasons
                    else (s.reasons, s.candidate.reasons)):
        for r in reasons:
            if r.code in EXPLORATION_CODES:
                explore = True
                new_creator = new_creator or r.code == NEW_CREATOR
    return _Row(s, explore, new_creator)


def _note(notes: dict[str, list[str]], row: _Row, text: str) -> None:
    mine = notes.setdefault(row.scored.item_id, [])
    if text not in mine:
        mine.append(text)


def _explore_text(row: _Row) -> str:
    return "a new creator we are trying out" if row.new_creator else "a new video we are trying out"
