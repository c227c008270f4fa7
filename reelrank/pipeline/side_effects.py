"""Side effects of serving, as declared steps beside the pipeline's sources, filters and scorer.

The engine's own work comes first (a page is built and recorded as served; events are durable
and in live state; a viewer's data is gone from the store and live state), then each step the
engine was given runs, in the order it was added. A step that fails is logged and never fails
the request: keeping the trace of a page, the exposure ledger of ``/v1/stats``, insights, and
telling an online trainer that a viewer was erased are all steps.

A step overrides the moments it cares about; ``SideEffect`` does nothing at each.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from reelrank.pipeline.feed import FeedResult
    from reelrank.types import Event

log = logging.getLogger(__name__)


class SideEffect:
    """A step run after the engine's own work. Each method is one moment; the default does
    nothing."""

    def on_feed(self, result: FeedResult) -> None:
        """A page was served (and recorded as served in live state)."""

    def on_events(self, events: Sequence[Event]) -> None:
        """Events were stored durably and applied to live state (only the newly accepted)."""

    def on_erase(self, user_id: str) -> None:
        """Everything about the viewer was erased: drop whatever is held about them."""

    def on_reset(self, user_id: str) -> None:
        """The viewer asked to refresh their feed: forget their inferred interests."""

    def held_users(self) -> Iterable[str]:
        """The viewers this step holds something of: where an erasure or reset announced by
        another process (by a digest of the id, never the id) is looked for."""
        return ()


class Calls(SideEffect):
    """A step made of plain functions, one per moment (None: nothing then)."""

    def __init__(
        self,
        name: str,
        *,
        feed: Callable[[FeedResult], object] | None = None,
        events: Callable[[Sequence[Event]], object] | None = None,
        erase: Callable[[str], object] | None = None,
        reset: Callable[[str], object] | None = None,
        held: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.name = name
        self._feed, self._events, self._erase, self._reset = feed, events, erase, reset
        self._held = held

    def __repr__(self) -> str:
        return f"Calls({self.name!r})"

    def on_feed(self, result: FeedResult) -> None:
        if self._feed is not None:
            self._feed(result)

    def on_events(self, events: Sequence[Event]) -> None:
        if self._events is not None:
            self._events(events)

    def on_erase(self, user_id: str) -> None:
        if self._erase is not None:
            self._erase(user_id)

    def on_reset(self, user_id: str) -> None:
        if self._reset is not None:
            self._reset(user_id)

    def held_users(self) -> Iterable[str]:
        return self._held() if self._held is not None else ()


class SideEffects:
    """The engine's steps, run in the order they were added."""

    def __init__(self, steps: Sequence[SideEffect] = ()) -> None:
        self._steps: list[SideEffect] = list(steps)

    def add(self, step: SideEffect) -> SideEffect:
        self._steps.append(step)
        return step

    def remove(self, step: SideEffect) -> None:
        if step in self._steps:
            self._steps.remove(step)

    def __iter__(self) -> Iterator[SideEffect]:
        return iter(list(self._steps))

    def __len__(self) -> int:
        return len(self._steps)

    def feed(self, result: FeedResult) -> None:
        for step in list(self._steps):
            _run(step.on_feed, result, step, "a served page")

    def events(self, events: Sequence[Event]) -> None:
        for step in list(self._steps):
            _run(step.on_events, events, step, "accepted events")

    def erase(self, user_id: str) -> None:
        for step in list(self._steps):
            _run(step.on_erase, user_id, step, "an erasure")

    def reset(self, user_id: str) -> None:
        for step in list(self._steps):
            _run(step.on_reset, user_id, step, "a reset")

    def held_users(self, matches: Callable[[str], bool]) -> list[str]:
        """The viewers some step holds whose id ``matches`` (a digest's preimage)."""
        found: set[str] = set()
        for step in list(self._steps):
            try:
                found.update(u for u in list(step.held_users()) if matches(u))
            except Exception:  # one step's failure must not hide the others' viewers
                log.exception("listing the viewers held by %r failed", step)
        return sorted(found)


def _run(method: Callable, value: object, step: SideEffect, moment: str) -> None:
    try:
        method(value)
    except Exception:
        log.exception("side effect %r failed on %s", step, moment)
