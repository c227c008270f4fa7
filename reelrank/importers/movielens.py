"""MovieLens (ratings of movies) -> items and events.

Reads a folder laid out like ``ml-latest-small``: ``ratings.csv`` (userId, movieId, rating,
timestamp in seconds), ``movies.csv`` (movieId, title, genres) and, if present, ``tags.csv``
(userId, movieId, tag, timestamp). MovieLens is not short video; these choices make it usable by
the same pipeline and are the only places where the mapping invents something:

- ``creator_id`` = ``"ml:movie:<id>"``: MovieLens names no director or studio, so each movie is its
  own creator (creator-level features and exposure figures then degenerate to item level rather
  than lumping unrelated movies together under a fake creator);
- ``duration_ms`` = ``MOVIE_DURATION_MS`` (100 minutes) for every movie: the files carry none;
- a rating ``r`` (0.5 to 5 stars) becomes a ``play`` with ``watch_ms = round(duration * r / 5)``,
  so the watch ratio is the rating's share of the scale and 5 stars is a completed view; it is
  preceded by an ``impression`` (a rated movie was shown, and "shown" must mean the same in every
  dataset for evaluation), and followed by a ``like`` when ``r >= LIKE_THRESHOLD`` (4.0 stars).
  All three carry the rating's time (``timestamp * 1000``); events are in time order, ties in
  file order. Event ids are ``ml:<user>:<movie>:<ts_ms>:<type>``, so a re-import adds nothing.

Items: ``item_id`` = movieId; ``caption`` = the title as written; ``created_at`` = 1 January of the
release year in the title, 00:00 UTC, in epoch ms (negative before 1970; 0 when the title has no
year), also kept as ``attributes["year"]``; ``hashtags`` = the genres lowercased
("(no genres listed)" dropped), then the movie's free-text tags normalised (lowercased, inner
whitespace collapsed, deduplicated), the ``MAX_TAGS`` most used ones, ties in first-use order.
A movie rated but missing from ``movies.csv`` still becomes an item, with an empty caption.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Iterator

from reelrank.importers import Counted, DatasetFormatError, ImportReport, ImportTarget, import_into
from reelrank.types import Event, Item

__all__ = [
    "read_items", "read_events", "import_movielens", "MOVIE_DURATION_MS", "LIKE_THRESHOLD",
    "MAX_TAGS",
]

MOVIE_DURATION_MS = 100 * 60 * 1000
LIKE_THRESHOLD = 4.0
MAX_TAGS = 10
NO_GENRES = "(no genres listed)"
# "Toy Story (1995)", "Death Note: Desu nôto (2006–2007)", "Fawlty Towers (1975-1979)".
_YEAR = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")

# One rating: (ts_ms, user, movie, stars).
Rating = tuple[int, str, str, float]


def _folder(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / "ratings.csv").exists():
        raise FileNotFoundError(f"no ratings.csv in MovieLens folder {folder}")
    return folder


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, values of columns)`` for each non-empty row of a CSV with a header."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetFormatError(f"{path}: missing column(s) {', '.join(missing)}")
        index = [header.index(c) for c in columns]
        for rec in reader:
            if not rec:
                continue
            try:
                yield reader.line_num, [rec[i] for i in index]
            except IndexError:
                raise DatasetFormatError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(rec)}"
                ) from None


def _read_ratings(folder: Path) -> list[Rating]:
    path = folder / "ratings.csv"
    out: list[Rating] = []
    columns = ("userId", "movieId", "rating", "timestamp")
    for line, (user, movie, rating, ts) in _rows(path, columns):
        try:
            out.append((int(ts) * 1000, user.strip(), movie.strip(), float(rating)))
        except ValueError as exc:
            raise DatasetFormatError(f"{path}:{line}: cannot read rating: {exc}") from None
    out.sort(key=itemgetter(0))
    return out


def _year(title: str) -> int | None:
    match = _YEAR.search(title)
    return int(match.group(1)) if match else None


def _year_ms(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _read_tags(folder: Path) -> dict[str, list[str]]:
    """Movie -> its normalised tags, most used first (ties in first-use order), capped."""
    path = folder / "tags.csv"
    if not path.exists():
        return {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for _line, (movie, tag) in _rows(path, ("movieId", "tag")):
        tag = " ".join(tag.lower().split())
        if tag:
            counts[movie.strip()][tag] += 1
    return {movie: [t for t, _ in c.most_common(MAX_TAGS)] for movie, c in counts.items()}


def _movie_item(movie: str, title: str, genres: list[str], tags: list[str]) -> Item:
    year = _year(title)
    return Item(
        item_id=movie,
        creator_id=f"ml:movie:{movie}",
        duration_ms=MOVIE_DURATION_MS,
        created_at=_year_ms(year) if year else 0,
        caption=title,
        hashtags=tuple(dict.fromkeys([*genres, *tags])),
        attributes={"year": year} if year else {},
    )


def _items(folder: Path, ratings: list[Rating]) -> list[Item]:
    tags = _read_tags(folder)
    items: dict[str, Item] = {}
    path = folder / "movies.csv"
    if path.exists():
        for _line, (movie, title, genres) in _rows(path, ("movieId", "title", "genres")):
            movie = movie.strip()
            names = [g.strip().lower() for g in genres.split("|")]
            names = [g for g in names if g and g != NO_GENRES]
            items[movie] = _movie_item(movie, title.strip(), names, tags.get(movie, []))
    for _ts, _user, movie, _stars in ratings:
        if movie not in items:
            items[movie] = _movie_item(movie, "", [], tags.get(movie, []))
    return list(items.values())


def _events(ratings: list[Rating]) -> Iterator[Event]:
    for ts, user, movie, stars in ratings:
        prefix = f"ml:{user}:{movie}:{ts}:"
        yield Event(event_id=prefix + "impression", user_id=user, item_id=movie, ts=ts,
                    type="impression")
        yield Event(event_id=prefix + "play", user_id=user, item_id=movie, ts=ts, type="play",
                    watch_ms=round(MOVIE_DURATION_MS * stars / 5))
        if stars >= LIKE_THRESHOLD:
            yield Event(event_id=prefix + "like", user_id=user, item_id=movie, ts=ts, type="like")


def read_items(path: str | Path) -> Iterator[Item]:
    """The movies of a MovieLens folder, in ``movies.csv`` order, then any only rated."""
    folder = _folder(path)
    yield from _items(folder, _read_ratings(folder))


def read_events(path: str | Path) -> Iterator[Event]:
    """The ratings of a MovieLens folder as events, in time order (ties in file order)."""
    yield from _events(_read_ratings(_folder(path)))


def import_movielens(
    path: str | Path, store: ImportTarget, *, progress: bool = True
) -> ImportReport:
    """Import a MovieLens folder into ``store``; safe to run again (adds nothing new)."""
    folder = _folder(path)
    ratings = _read_ratings(folder)
    n_events = 2 * len(ratings) + sum(1 for r in ratings if r[3] >= LIKE_THRESHOLD)
    return import_into(store, _items(folder, ratings), Counted(_events(ratings), n_events),
                       progress=progress, desc="movielens")
