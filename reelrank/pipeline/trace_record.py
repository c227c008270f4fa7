"""A served page's trace as kept for explanations (``TraceRecord``), one candidate's part of it
(``TraceEntry``, named fields), and the explanation read from it."""

from __future__ import annotations

import pickle
import sys
import zlib
from dataclasses import dataclass
from typing import NamedTuple

# A TraceRecord's own object (6 slots) and the deque slot the engine keeps it in.
_RECORD_OVERHEAD = 120


class TraceEntry(NamedTuple):
    """One candidate of a kept trace, as ``TraceRecord.items`` gives it: strings and numbers."""

    sources: tuple[tuple[str, float], ...]  # (source name, its score), every source proposing it
    reasons: tuple[tuple[str, str], ...]  # (code, text)
    source: str | None  # the source the scored candidate carries
    score: float | None  # None: never scored (removed first)
    predictions: tuple[tuple[str, float], ...] | None  # the ranker's heads
    removed: tuple[str, str] | None  # (filter, reason)
    rerank: tuple[str, ...]  # the re-ranker's notes


_NOT_CONSIDERED = TraceEntry((), (), None, None, None, None, ())


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """A served page's trace as kept for explanations: a few ids and one compressed byte
    string holding, per candidate, its sources' names and scores, its reasons, predictions,
    removal and re-rank notes (``items`` gives them as strings and numbers). Kept as
    ``FeedTrace`` objects
    (five per candidate), 1,600 pages made every full collection a 200 ms pause of the whole
    server (benchmarks/results/realtime.md); kept as tuples, a page of 150-500 candidates still
    held about 96 KB. Packed, it is one untracked ``bytes`` of about 6 KB (zlib level 1 over
    pickle: 0.3 ms per page), and ``nbytes`` is what it holds, so the engine can keep its
    traces within a byte budget. ``explain`` unpacks it (0.3 ms); explanations are rare next to
    feeds. The bytes are made by this process from its own values and never read from outside,
    which is what makes pickle safe here."""

    request_id: str
    user_id: str
    mode: str
    served: tuple[str, ...]
    # zlib(pickle(item -> ([sources' (name, score)], reasons (Reason), scored source, score,
    #                      predictions (dict), removal (Removed), re-rank notes (list))))
    packed: bytes
    nbytes: int  # memory held by this record, its strings and its bytes included

    @classmethod
    def pack(cls, request_id: str, user_id: str, mode: str, served: tuple[str, ...],
             items: dict[str, tuple]) -> "TraceRecord":
        packed = zlib.compress(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL), 1)
        nbytes = (_RECORD_OVERHEAD + sys.getsizeof(packed) + sys.getsizeof(served)
                  + sys.getsizeof(request_id) + sum(sys.getsizeof(i) for i in served))
        return cls(request_id, user_id, mode, served, packed, nbytes)

    @property
    def items(self) -> dict[str, TraceEntry]:
        """The candidates' entries, unpacked into plain values (a new dict on each call)."""
        return {item_id: _plain_entry(*entry)
                for item_id, entry in pickle.loads(zlib.decompress(self.packed)).items()}

    def considered(self, item_id: str) -> bool:
        """Whether a source proposed the item or a filter removed it in this request."""
        entry = self.items.get(item_id)
        return entry is not None and bool(entry.sources or entry.removed)

    def explain(self, item_id: str) -> dict:
        sources, reasons, scored_source, score, predictions, removed, rerank = self.items.get(
            item_id, _NOT_CONSIDERED)
        first: dict[str, str] = {}
        for code, text in reasons:
            first.setdefault(code, text)
        unique = list(first.items())  # each code once, its first text, in first-seen order
        shown = item_id in self.served
        return {
            "user_id": self.user_id, "item_id": item_id, "shown": shown,
            "request_id": self.request_id, "mode": self.mode,
            "source": scored_source or (sources[0][0] if sources else None),
            "sources": [{"source": name, "score": s} for name, s in sources],
            "reasons": [{"code": code, "text": text} for code, text in unique],
            "score": score,
            "predictions": dict(predictions) if predictions else {},
            "filters": [{"filter": removed[0], "reason": removed[1]}] if removed else [],
            "rerank": list(rerank),
            "position": self.served.index(item_id) + 1 if shown else None,
        }


def _plain_entry(sources, reasons, scored_source, score, predictions, removed,
                 notes) -> TraceEntry:
    """One candidate's kept entry (packed as a plain tuple: smaller) as ``TraceRecord.items``
    gives it."""
    return TraceEntry(tuple(sources), tuple((r.code, r.text) for r in reasons), scored_source, score,
            tuple(predictions.items()) if predictions is not None else None,
            (removed.filter, removed.reason) if removed is not None else None,
            tuple(notes) if notes else ())
