"""Rows of the SQL stores (SQLite and PostgreSQL keep the same columns): the column lists and
the conversions between rows and the records of ``reelrank.types``."""

from __future__ import annotations

import json

from reelrank.types import Event, Item, UserSettings

EVENT_FIELDS = ("event_id", "user_id", "item_id", "ts", "type", "watch_ms", "request_id",
                "position", "device", "region", "source", "session_id")
EVENT_COLUMNS = ", ".join(EVENT_FIELDS)
ITEM_COLUMNS = (
    "item_id, creator_id, duration_ms, created_at, caption, hashtags, sound_id, language, region, "
    "visible, attributes"
)


def item_row(item: Item) -> tuple:
    return (
        item.item_id, item.creator_id, item.duration_ms, item.created_at, item.caption,
        json.dumps(list(item.hashtags)), item.sound_id, item.language, item.region,
        bool(item.visible), json.dumps(dict(item.attributes), sort_keys=True),
    )


def item_from_row(row: tuple) -> Item:
    return Item(
        item_id=row[0], creator_id=row[1], duration_ms=row[2], created_at=row[3], caption=row[4],
        hashtags=tuple(json.loads(row[5])), sound_id=row[6], language=row[7], region=row[8],
        visible=bool(row[9]), attributes=json.loads(row[10]),
    )


def event_row(e: Event) -> tuple:
    return (e.event_id, e.user_id, e.item_id, e.ts, e.type, e.watch_ms, e.request_id,
            e.position, e.device, e.region, e.source, e.session_id)


def settings_row(settings: UserSettings) -> tuple:
    """(user_id, personalization, muted_keywords, daily_limit_minutes, extra): the settings
    without columns of their own travel in ``extra``, a JSON object."""
    extra = {
        "hidden_creators": list(settings.hidden_creators),
        "hidden_sounds": list(settings.hidden_sounds),
        "young_viewer": settings.young_viewer,
        "interests_reset_seq": settings.interests_reset_seq,
    }
    return (settings.user_id, bool(settings.personalization),
            json.dumps(list(settings.muted_keywords)), settings.daily_limit_minutes,
            json.dumps(extra, sort_keys=True))


def settings_from_row(user_id: str, row: tuple) -> UserSettings:
    """From (personalization, muted_keywords, daily_limit_minutes, extra)."""
    extra = json.loads(row[3] or "{}")
    return UserSettings(
        user_id=user_id, personalization=bool(row[0]), muted_keywords=tuple(json.loads(row[1])),
        daily_limit_minutes=row[2], hidden_creators=tuple(extra.get("hidden_creators", ())),
        hidden_sounds=tuple(extra.get("hidden_sounds", ())),
        young_viewer=bool(extra.get("young_viewer", False)),
        interests_reset_seq=int(extra.get("interests_reset_seq", 0)),
    )
