"""What the engine holds about one viewer, written out for them (GDPR Art. 15 and 20).

``export_user`` gathers every place a viewer's data lives: their events from the log, their
settings, the interests inferred from their behaviour (live state), their recent watch time,
and who has read their data (the access log). Erasure and retention live in ``Engine``
(``erase_user``, ``purge_events_older_than``), because they must keep the store and live state
consistent; this module only reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from reelrank.types import DAY_MS

MODEL_NOTE = (
    "The models keep no parameters for individual viewers: your vector is computed at request "
    "time from the recent history listed under inferred_interests, and erasing your data "
    "removes that history. Models trained before an erasure learned from many viewers' events "
    "together; the next training run does not see yours."
)


def export_user(engine, user_id: str, top: int = 20) -> dict:
    """Everything about ``user_id``, as JSON-ready values."""
    settings = engine.settings(user_id)
    events = [_event_dict(seq, e) for seq, e in engine.store.iter_events(user_id=user_id)]
    user = engine.viewer(user_id)
    return {
        "user_id": user_id,
        "exported_at": int(time.time() * 1000),
        "settings": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in dataclasses.asdict(settings).items() if k != "user_id"},
        "events": events,
        "inferred_interests": _interests(engine, user, top),
        "models": {"serving_version": engine.pipeline.scorer.version, "note": MODEL_NOTE},
        "access_log": [dataclasses.asdict(r) for r in engine.store.access_log(user_id)],
    }


def _event_dict(seq: int, event) -> dict:
    d = {k: v for k, v in dataclasses.asdict(event).items() if v is not None}
    d["seq"] = seq
    return d


def _interests(engine, user, top: int) -> dict:
    if user is None:
        return {"hashtags": [], "creators": [], "topics": [], "following": [],
                "not_interested_items": [],
                "recent_items": [], "watch_minutes_by_day": {}, "region": None, "device": None}

    def strongest(counter) -> list[dict]:
        return [{"id": k, "weight": round(float(v), 3)}
                for k, v in counter.most_common(top) if v > 0]

    return {
        "hashtags": strongest(user.hashtag_affinity),
        "creators": strongest(user.creator_affinity),
        # What the ranker reads as the viewer's topic preference (features.user_topic_lift).
        "topics": [{"id": t, "views": n, "long_views": user.topic_long_views.get(t, 0)}
                   for t, n in user.topic_views.most_common(top)],
        "following": sorted(user.following),
        "not_interested_items": sorted(user.not_interested),
        # What the user tower reads at request time: the recent history, newest last.
        "recent_items": [{"item_id": t.item_id, "ts": t.ts, "what": t.event_type,
                          "watch_ratio": t.watch_ratio} for t in list(user.tokens)[-top:]],
        "watch_minutes_by_day": {
            dt.datetime.fromtimestamp(day * DAY_MS / 1000, dt.timezone.utc).date().isoformat():
                round(ms / 60_000, 1)
            for day, ms in sorted(user.watch_ms_by_day.items())},
        "region": user.region,
        "device": user.device,
    }
