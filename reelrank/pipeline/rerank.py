"""Re-ranking: turn a scored list into a feed page under spacing rules.

Greedy: take the best remaining item that does not break a rule; items that could not be placed
are left for a later page (with a note in the trace), never forced in.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.rank import Scored


@dataclass
class RerankResult:
    items: list[Scored]
    notes: dict[str, list[str]]  # item_id -> what the re-ranker did to it


@dataclass
class SpacingReranker:
    """Never the same creator twice in a row (configurable run length)."""

    max_creator_run: int = 1

    def rerank(self, ctx: FeedContext, scored: list[Scored], n: int) -> RerankResult:
        pool = sorted(scored, key=lambda s: (-s.score, s.item_id))
        out: list[Scored] = []
        notes: dict[str, list[str]] = {}
        while pool and len(out) < n:
            chosen = None
            for idx, cand in enumerate(pool):
                if not self._breaks_run(ctx, out, cand):
                    chosen = idx
                    break
                note = f"moved down: same creator as the {self.max_creator_run} item(s) before it"
                if note not in notes.setdefault(cand.item_id, []):
                    notes[cand.item_id].append(note)
            if chosen is None:
                break
            out.append(pool.pop(chosen))
        for left in pool:
            if left.item_id in notes:
                notes[left.item_id].append("left for a later page")
        return RerankResult(out, notes)

    def _breaks_run(self, ctx: FeedContext, placed: list[Scored], cand: Scored) -> bool:
        if len(placed) < self.max_creator_run:
            return False
        creator = _creator(ctx, cand.item_id)
        return all(_creator(ctx, p.item_id) == creator for p in placed[-self.max_creator_run:])


def _creator(ctx: FeedContext, item_id: str) -> str | None:
    item = ctx.catalog.get(item_id)
    return item.creator_id if item else None
