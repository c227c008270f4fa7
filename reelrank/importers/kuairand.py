"""KuaiRand (Kuaishou short-video watch logs) -> items and events.

Reads a folder laid out like KuaiRand-Pure: one or more standard feed logs
``log_standard_*.csv.gz`` (or plain ``.csv``) and ``video_features_basic_pure.csv``.
The random-exposure logs (``log_random_*``) are not read: they come from a different policy.

Items, one per video of the features file (in file order), then one per video seen only in the log:

- ``item_id`` = ``video_id``, ``creator_id`` = ``author_id`` (``"unknown"`` for a video missing from
  the features file), ``sound_id`` = ``music_id`` (None when empty, nan or 0: ``0`` is the
  dataset's "no music"; those rows also lack a music_type), ``hashtags`` = the tag ids as
  ``"tag:<id>"``, ``created_at`` = ``upload_dt`` at 00:00 UTC in epoch ms (0 when missing);
- ``duration_ms`` = ``video_duration``, else the log's ``duration_ms`` for that video, else
  ``NO_DURATION_MS`` with ``attributes["duration_estimated"] = 1``. The last case is the picture
  posts (upload_type LongPicture / PictureSet): they have no duration anywhere (the log says 0),
  and the API requires a positive one. Their median dwell in the log is about 2 s;
- ``visible`` = ``visible_status == 0``. Every video of KuaiRand-Pure has status 0 and all of them
  are served in the log, so 0 is "public"; the dataset does not define the other codes, so any
  other value is taken as not public (a missing value counts as public);
- ``attributes``: ``video_type``, ``upload_type`` (strings) and ``music_type`` (int), where present.

Events, for each log row at its ``time_ms``, all with ``source = "tab<tab>"``:
an ``impression``, a ``play`` with ``watch_ms = play_time_ms`` (0 when the viewer swiped past), then
one event per flag set, in this order: ``like`` (is_like), ``follow`` (is_follow), ``comment``
(is_comment), ``share`` (is_forward), ``not_interested`` (is_hate), ``profile_visit``
(is_profile_enter). Event ids are ``kr:<user>:<video>:<time_ms>:<type>``: the rows that repeat the
same (user, video, time_ms) are counted as duplicates, and importing a folder twice adds nothing.
Rows are sorted by ``time_ms`` (stable: ties stay in file order); the log is not quite sorted.
"""

from __future__ import annotations

import csv
import gzip
import logging
from datetime import datetime, timezone
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import IO, Iterable, Iterator

from reelrank.importers import Counted, DatasetFormatError, ImportReport, ImportTarget, import_into
from reelrank.types import Event, Item

__all__ = ["read_items", "read_events", "import_kuairand", "NO_DURATION_MS", "UNKNOWN_CREATOR"]

logger = logging.getLogger(__name__)

LOG_GLOB = "log_standard_*.csv*"
FEATURES_FILE = "video_features_basic_pure.csv"
UNKNOWN_CREATOR = "unknown"
NO_DURATION_MS = 10_000
# Log flag column -> the event it becomes, in the order the events are emitted.
FLAG_EVENTS: tuple[tuple[str, str], ...] = (
    ("is_like", "like"),
    ("is_follow", "follow"),
    ("is_comment", "comment"),
    ("is_forward", "share"),
    ("is_hate", "not_interested"),
    ("is_profile_enter", "profile_visit"),
)
_LOG_COLUMNS = ("time_ms", "user_id", "video_id", "play_time_ms", "duration_ms")
_MISSING = frozenset({"", "nan", "NaN", "None", "null"})
_FALSE = frozenset({"", "0", "0.0", "nan", "False", "false"})

# One log row: (time_ms, user, video, play_ms, duration_ms, source, flags) with flags a tuple of
# bools aligned with FLAG_EVENTS.
LogRow = tuple[int, str, str, int, int, str | None, tuple[bool, ...]]


def _id(text: str) -> str:
    """Ids as text: some exports write integer ids as floats ("123.0")."""
    text = text.strip()
    if text.endswith(".0") and text[:-2].isdigit():
        return text[:-2]
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _optional_int(text: str | None) -> int | None:
    if text is None or text.strip() in _MISSING:
        return None
    try:
        return _int(text)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _day_ms(text: str) -> int:
    """``YYYY-MM-DD`` (or ``YYYYMMDD``) at 00:00 UTC in epoch ms; 0 when unparseable."""
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            day = datetime.strptime(text[:10], fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        return int(day.timestamp() * 1000)
    return 0


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def _columns(header: list[str], names: Iterable[str], path: Path) -> dict[str, int]:
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [n for n in names if n not in index]
    if missing:
        raise DatasetFormatError(f"{path}: missing column(s) {', '.join(missing)}")
    return index


def _log_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"KuaiRand folder not found: {folder}")
    files = sorted(p for p in folder.glob(LOG_GLOB) if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise FileNotFoundError(f"no {LOG_GLOB} log in {folder}")
    return files


def _read_log(folder: Path) -> list[LogRow]:
    """Every row of every standard log, sorted by time (stable)."""
    rows: list[LogRow] = []
    sources: dict[str, str | None] = {}
    for path in _log_files(folder):
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                continue
            col = _columns(header, _LOG_COLUMNS, path)
            t, u, v, p, d = (col[n] for n in _LOG_COLUMNS)
            tab = col.get("tab")
            flag_cols = tuple(col.get(name) for name, _ in FLAG_EVENTS)
            append = rows.append
            for rec in reader:
                if not rec:
                    continue
                try:
                    tab_text = rec[tab] if tab is not None else ""
                    if tab_text not in sources:
                        sources[tab_text] = (
                            None if tab_text.strip() in _MISSING else f"tab{_id(tab_text)}")
                    source = sources[tab_text]
                    flags = tuple(c is not None and rec[c] not in _FALSE for c in flag_cols)
                    append((_int(rec[t]), _id(rec[u]), _id(rec[v]), _int(rec[p]),
                            _optional_int(rec[d]) or 0, source, flags))
                except (ValueError, IndexError) as exc:
                    raise DatasetFormatError(
                        f"{path}:{reader.line_num}: cannot read log row: {exc}") from None
    rows.sort(key=itemgetter(0))
    return rows


def _read_features(folder: Path) -> list[dict[str, str]]:
    path = folder / FEATURES_FILE
    if not path.exists():
        logger.warning("%s not found: every video gets creator %r", path, UNKNOWN_CREATOR)
        return []
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        _columns(reader.fieldnames or [], ("video_id",), path)
        rows = []
        for row in reader:
            if (row.get("video_id") or "").strip() in _MISSING:
                raise DatasetFormatError(f"{path}:{reader.line_num}: no video_id")
            rows.append(row)
        return rows


def _feature_item(row: dict[str, str], log_durations: dict[str, int]) -> Item:
    video = _id(row.get("video_id") or "")
    attributes: dict[str, str | float | int] = {}
    for name in ("video_type", "upload_type"):
        value = (row.get(name) or "").strip()
        if value not in _MISSING:
            attributes[name] = value
    music_type = _optional_int(row.get("music_type"))
    if music_type is not None:
        attributes["music_type"] = music_type
    duration = _optional_int(row.get("video_duration")) or log_durations.get(video)
    if not duration or duration <= 0:
        duration = NO_DURATION_MS
        attributes["duration_estimated"] = 1
    creator = _id(row.get("author_id") or "")
    sound = _id(row.get("music_id") or "")
    visible = _optional_int(row.get("visible_status"))
    tags = (_id(t) for t in (row.get("tag") or "").split(","))
    return Item(
        item_id=video,
        creator_id=UNKNOWN_CREATOR if creator in _MISSING else creator,
        duration_ms=duration,
        created_at=_day_ms(row.get("upload_dt") or ""),
        hashtags=tuple(dict.fromkeys(f"tag:{t}" for t in tags if t not in _MISSING)),
        sound_id=None if sound in _MISSING or sound == "0" else sound,
        visible=visible is None or visible == 0,
        attributes=attributes,
    )


def _items(features: list[dict[str, str]], log: list[LogRow]) -> list[Item]:
    log_durations: dict[str, int] = {}
    for row in log:
        if row[4] > 0:
            log_durations.setdefault(row[2], row[4])
    items: dict[str, Item] = {}
    for row in features:
        item = _feature_item(row, log_durations)
        items[item.item_id] = item
    for row in log:
        video = row[2]
        if video not in items:
            duration = log_durations.get(video)
            items[video] = Item(
                item_id=video, creator_id=UNKNOWN_CREATOR,
                duration_ms=duration or NO_DURATION_MS, created_at=0,
                attributes={} if duration else {"duration_estimated": 1},
            )
    return list(items.values())


def _events(log: list[LogRow]) -> Iterator[Event]:
    types = tuple(name for _, name in FLAG_EVENTS)
    for ts, user, video, play_ms, _duration, source, flags in log:
        prefix = f"kr:{user}:{video}:{ts}:"
        yield Event(event_id=prefix + "impression", user_id=user, item_id=video, ts=ts,
                    type="impression", source=source)
        yield Event(event_id=prefix + "play", user_id=user, item_id=video, ts=ts, type="play",
                    watch_ms=play_ms, source=source)
        if any(flags):
            for flag, kind in zip(flags, types):
                if flag:
                    yield Event(event_id=prefix + kind, user_id=user, item_id=video, ts=ts,
                                type=kind, source=source)


def _n_events(log: list[LogRow]) -> int:
    return 2 * len(log) + sum(sum(row[6]) for row in log)


def read_items(path: str | Path) -> Iterator[Item]:
    """The catalog of a KuaiRand folder (reads the log too, for durations and unknown videos)."""
    folder = Path(path)
    yield from _items(_read_features(folder), _read_log(folder))


def read_events(path: str | Path) -> Iterator[Event]:
    """The events of a KuaiRand folder, in time order (ties in file order)."""
    yield from _events(_read_log(Path(path)))


def import_kuairand(
    path: str | Path, store: ImportTarget, *, progress: bool = True
) -> ImportReport:
    """Import a KuaiRand folder into ``store``; safe to run again (adds nothing new)."""
    folder = Path(path)
    log = _read_log(folder)
    items = _items(_read_features(folder), log)
    events = Counted(_events(log), _n_events(log))
    return import_into(store, items, events, progress=progress, desc="kuairand")
