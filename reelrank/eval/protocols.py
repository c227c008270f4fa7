"""Datasets and evaluation splits: what every model is trained on and tested against.

Two protocols, each a plain function from a loaded ``Dataset`` to a split object the harness
scores models on:

**Temporal (short video, KuaiRand)** -- ``temporal_split``. Events are joined into impression
examples with ``reelrank.join.join_events`` (the joiner the trainer uses; 1 h window, the
duration comes from the catalog). Days are local days (KuaiRand: UTC+8, Beijing; its ``date``
column is local). A cut-off day D means: train on every example whose impression time is before
D 00:00 local, test on the ``test_days`` local days from D on. The impression time (``time_ms``)
decides, not the ``date`` column. Checked on KuaiRand-Pure: at UTC+8 the local date of
``time_ms`` equals ``date`` on 99.1% of the 171,671 rows (at UTC+7 or UTC+9 nearly every
``hourmin`` disagrees, so UTC+8 is the log's zone); the 1,539 other rows were all logged late in
the evening (21:00-23:59 local) and carry the next day's ``date`` with ``hourmin`` rounded up to
0. For the cut-off 2022-05-01 that is 192 rows dated 20220501 but logged 23:xx on 04-30: they
train. No row dated 20220430 or earlier falls after the cut-off. In KuaiRand every outcome has its
impression's timestamp, so no outcome crosses the cut-off. The 4,739 rows that repeat an earlier
row's (user, video, time_ms) add nothing (same event ids, dropped by the joiner): 171,671 rows
make 166,932 examples.

- ``train``: the positive examples of the train period (long view, like, follow, comment or
  share, and not marked not-interested) as ``Interactions``;
- ``test``: every test impression with its labels (``ImpressionSet``);
- retrieval: each test user with at least one long view in the test period; their targets are the
  distinct long-viewed videos, minus those they already had an impression of in the train period
  (those are excluded from the ranking, so no model could retrieve them; they are counted in
  ``stats["targets_seen_in_train"]``).

**Leave-one-out (next item)** -- ``leave_one_out_split``. Each user's interactions (every
impression: a purchase/review line of a sequences file, a rating of MovieLens) in time order. For a
user with at least 3 interactions the last one is the test target; the model is fit on everything
else, so the validation item (the second to last) is part of the training data and of the history
used at test time -- what a served model would know when asked for the next item. Users with fewer
than 3 interactions are kept in training only (all their interactions) and are not evaluated.
The target is ranked against every item the user has not interacted with in training; the target
itself is never excluded, even if the user had it before (re-purchase).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from reelrank.eval.data import Interactions
from reelrank.join import TASKS, Example, join_events
from reelrank.types import DAY_MS, Event, Item

logger = logging.getLogger(__name__)

JOIN_WINDOW_MS = 3_600_000
# Dataset name on the command line -> (importer module, protocol, UTC offset of its local days).
DATASET_KINDS: dict[str, tuple[str, str, int]] = {
    "kuairand": ("kuairand", "temporal", 8),
    "beauty": ("sequences", "leave_one_out", 0),
    "sequences": ("sequences", "leave_one_out", 0),
    "movielens": ("movielens", "leave_one_out", 0),
}


@dataclass
class Dataset:
    """A dataset read through its importer: the catalog and the time-ordered events."""

    kind: str
    path: Path
    items: list[Item]
    events: list[Event]
    tz_hours: int = 0

    @property
    def protocol(self) -> str:
        return DATASET_KINDS[self.kind][1]


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"kuairand:/data/kuairand-pure"`` -> ``("kuairand", Path(...))``."""
    kind, sep, path = spec.partition(":")
    if not sep or not path or kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be KIND:PATH with KIND one of {sorted(DATASET_KINDS)}, "
                         f"got {spec!r}")
    return kind, Path(path)


def load_dataset(spec: str) -> Dataset:
    """Read a dataset through the project's importer (``read_items`` / ``read_events``)."""
    import importlib

    kind, path = parse_spec(spec)
    module = importlib.import_module(f"reelrank.importers.{DATASET_KINDS[kind][0]}")
    items = list(module.read_items(path))
    events = list(module.read_events(path))
    # Importers yield in time order; a stable sort keeps ties in file order and guards the rest.
    if any(events[i].ts > events[i + 1].ts for i in range(len(events) - 1)):
        events.sort(key=lambda e: e.ts)
    logger.info("%s: %d items, %d events", spec, len(items), len(events))
    return Dataset(kind, path, items, events, DATASET_KINDS[kind][2])


# --- days ---------------------------------------------------------------------------------------


def local_day(ts_ms: np.ndarray | int, tz_hours: int) -> np.ndarray:
    """Day number (days since 1970-01-01 local) of epoch-ms times in a fixed UTC offset."""
    return (np.asarray(ts_ms, dtype=np.int64) + tz_hours * 3_600_000) // DAY_MS


def day_start_ms(day: str | date, tz_hours: int) -> int:
    """``"2022-05-01"`` -> epoch ms of 00:00 that day in UTC+``tz_hours``."""
    d = date.fromisoformat(day) if isinstance(day, str) else day
    tz = timezone(timedelta(hours=tz_hours))
    return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)


def day_name(day_number: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=int(day_number))).isoformat()


# --- the shared index ---------------------------------------------------------------------------


@dataclass
class Index:
    """Dense indices of users and items, plus item side information in index order."""

    user_ids: np.ndarray  # (U,) object
    item_ids: np.ndarray  # (I,) object
    user_of: dict[str, int]
    item_of: dict[str, int]
    item_creator: np.ndarray  # (I,) int32
    creator_ids: np.ndarray  # (C,) object
    item_tags: list[tuple[str, ...]]

    def interactions(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> Interactions:
        return Interactions(self.user_ids, self.item_ids, np.asarray(user, np.int32),
                            np.asarray(item, np.int32), np.asarray(ts, np.int64),
                            item_creator=self.item_creator, item_tags=self.item_tags)


def build_index(items: list[Item], events: list[Event]) -> Index:
    """Items in catalog order; users in order of first appearance in the events."""
    item_ids = np.array([it.item_id for it in items], dtype=object)
    item_of = {it.item_id: i for i, it in enumerate(items)}
    user_of: dict[str, int] = {}
    for e in events:
        if e.user_id not in user_of:
            user_of[e.user_id] = len(user_of)
    creators: dict[str, int] = {}
    item_creator = np.array([creators.setdefault(it.creator_id, len(creators)) for it in items],
                            dtype=np.int32)
    return Index(np.array(list(user_of), dtype=object), item_ids, user_of, item_of, item_creator,
                 np.array(list(creators), dtype=object), [tuple(it.hashtags) for it in items])


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """At most ``max_users`` of ``users`` (seeded, kept in their original order)."""
    if max_users is None or len(users) <= max_users:
        return users
    keep = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
    return users[np.sort(keep)]


# --- temporal protocol --------------------------------------------------------------------------


@dataclass
class ImpressionSet:
    """Test impressions (one per joined example), arrays aligned, sorted by time."""

    user: np.ndarray  # (n,) int32 user index
    item: np.ndarray  # (n,) int32 item index
    ts: np.ndarray  # (n,) int64 impression time, ms
    day: np.ndarray  # (n,) int64 local day number
    position: np.ndarray  # (n,) 1-based order of the impression within its user-day session
    labels: dict[str, np.ndarray]  # task -> (n,) int8, for every task of features.TASKS
    watch_ms: np.ndarray  # (n,) int64
    watch_ratio: np.ndarray  # (n,) float64
    # (n, 3) object: the impression's (device, region, source) as logged, None where absent;
    # what a client replaying the impression would send as ``POST /v1/rank``'s context.
    context: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> "ImpressionSet":
        return ImpressionSet(self.user[mask], self.item[mask], self.ts[mask], self.day[mask],
                             self.position[mask], {k: v[mask] for k, v in self.labels.items()},
                             self.watch_ms[mask], self.watch_ratio[mask],
                             None if self.context is None else self.context[mask])


def is_positive(ex: Example) -> bool:
    """A training positive of the temporal protocol."""
    engaged = ex.long_view or ex.like or ex.follow or ex.comment or ex.share
    return bool(engaged) and not ex.negative


@dataclass
class TemporalSplit:
    dataset: Dataset
    index: Index
    cutoff_ms: int
    end_ms: int
    test_days: int
    train: Interactions
    train_events: list[Event]  # raw events before the cut-off, time order (for the engine)
    test_events: list[Event]  # raw events of the test days, time order (for the replay)
    test: ImpressionSet
    train_seen: list[np.ndarray]  # per user index: items with a train-period impression
    retrieval_users: np.ndarray  # (R,) user indices
    retrieval_targets: list[np.ndarray]  # (R,) arrays of item indices
    stats: dict = field(default_factory=dict)

    def describe(self) -> dict:
        cut = self._cut_day()
        return {
            "protocol": "temporal",
            "tz": f"UTC{self.dataset.tz_hours:+d}",
            "train_days": f"{day_name(self._first_day())}..{day_name(cut - 1)}",
            "test_days": f"{day_name(cut)}..{day_name(cut + self.test_days - 1)}",
            "cutoff_ms": self.cutoff_ms, "end_ms": self.end_ms,
            "join_window_ms": JOIN_WINDOW_MS,
            "train_positive": "long_view or like or follow or comment or share, not negative",
            **self.stats,
        }

    def _cut_day(self) -> int:
        return int(local_day(self.cutoff_ms, self.dataset.tz_hours))

    def _first_day(self) -> int:
        first = self.train_events[0].ts if self.train_events else self.cutoff_ms
        return int(local_day(first, self.dataset.tz_hours))


def default_cutoff(ds: Dataset, test_days: int) -> str:
    """The cut-off that leaves the last ``test_days`` local days of the log for testing."""
    last = int(local_day(ds.events[-1].ts, ds.tz_hours))
    return day_name(last - test_days + 1)


def temporal_split(ds: Dataset, cutoff: str | None = None, test_days: int | None = None,
                   max_users: int | None = None, seed: int = 0,
                   window_ms: int = JOIN_WINDOW_MS) -> TemporalSplit:
    """Split at local midnight of ``cutoff`` (default: 4 test days at the end of the log).

    ``test_days=None`` tests on every day from the cut-off to the end of the log. ``max_users``
    keeps a seeded sample of the test users (their test impressions and retrieval targets); the
    training data is never reduced.
    """
    if not ds.events:
        raise ValueError("the dataset has no events")
    cutoff = cutoff or default_cutoff(ds, test_days or 4)
    cutoff_ms = day_start_ms(cutoff, ds.tz_hours)
    last_day = int(local_day(ds.events[-1].ts, ds.tz_hours))
    cut_day = int(local_day(cutoff_ms, ds.tz_hours))
    if test_days is None:
        test_days = max(last_day - cut_day + 1, 1)
    end_ms = cutoff_ms + test_days * DAY_MS
    index = build_index(ds.items, ds.events)
    durations = {it.item_id: it.duration_ms for it in ds.items}
    examples = list(join_events(ds.events, durations.get, window_ms))
    examples.sort(key=lambda x: x.ts)  # emitted in window-close order; sort by impression time
    train_ex = [x for x in examples if x.ts < cutoff_ms]
    test_ex = [x for x in examples if cutoff_ms <= x.ts < end_ms]
    if not train_ex or not test_ex:
        raise ValueError(f"cut-off {cutoff} leaves {len(train_ex)} train and {len(test_ex)} "
                         f"test examples; pick a day inside the log")

    pos = [x for x in train_ex if is_positive(x)]
    u, i = index.user_of, index.item_of
    train = index.interactions(np.array([u[x.user_id] for x in pos], dtype=np.int32),
                               np.array([i[x.item_id] for x in pos], dtype=np.int32),
                               np.array([x.ts for x in pos], dtype=np.int64))
    seen_pairs = np.array([(u[x.user_id], i[x.item_id]) for x in train_ex], dtype=np.int64)
    train_seen = _group_items(seen_pairs[:, 0], seen_pairs[:, 1], index.user_ids.shape[0])

    test = _impressions(test_ex, index, ds.tz_hours)
    n_all_test_users = len(np.unique(test.user))
    if max_users is not None:
        keep_users = sample_users(np.unique(test.user), max_users, seed)
        test = test.subset(np.isin(test.user, keep_users))
    retrieval_users, targets, dropped = _retrieval_targets(test, train_seen)

    train_events = [e for e in ds.events if e.ts < cutoff_ms]
    test_events = [e for e in ds.events if cutoff_ms <= e.ts < end_ms]
    stats = {
        "train_examples": len(train_ex), "train_positives": len(pos),
        "train_users": int(len(np.unique(train.user))), "test_examples": len(test_ex),
        "test_users": n_all_test_users, "test_impressions_evaluated": len(test),
        "test_users_evaluated": int(len(np.unique(test.user))),
        "test_users_unseen_in_train": int(np.sum([len(train_seen[x]) == 0
                                                  for x in np.unique(test.user)])),
        "retrieval_users": len(retrieval_users),
        "retrieval_targets": int(sum(len(t) for t in targets)),
        "targets_seen_in_train": dropped,
        "train_events": len(train_events), "test_events": len(test_events),
        "max_users": max_users,
    }
    logger.info("temporal split at %s: %s", cutoff, stats)
    return TemporalSplit(ds, index, cutoff_ms, end_ms, test_days, train, train_events,
                         test_events, test, train_seen, retrieval_users, targets, stats)


def _group_items(users: np.ndarray, items: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Per user index, the sorted distinct items."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0) if len(users) else \
        np.zeros((0, 2), dtype=np.int64)
    bounds = np.searchsorted(pairs[:, 0], np.arange(n_users + 1))
    return [pairs[bounds[k]:bounds[k + 1], 1].astype(np.int32) for k in range(n_users)]


def _impressions(examples: list[Example], index: Index, tz_hours: int) -> ImpressionSet:
    user = np.array([index.user_of[x.user_id] for x in examples], dtype=np.int32)
    item = np.array([index.item_of[x.item_id] for x in examples], dtype=np.int32)
    ts = np.array([x.ts for x in examples], dtype=np.int64)
    day = local_day(ts, tz_hours)
    order = np.lexsort((np.arange(len(ts)), ts, day, user))
    position = np.empty(len(ts), dtype=np.int64)
    g = np.stack([user[order], day[order]], axis=1)
    starts = np.ones(len(ts), dtype=bool)
    starts[1:] = np.any(g[1:] != g[:-1], axis=1)
    idx = np.arange(len(ts))
    position[order] = idx - np.maximum.accumulate(np.where(starts, idx, 0)) + 1
    labels = {t: np.array([x.label(t) for x in examples], dtype=np.int8) for t in TASKS}
    context = np.empty((len(examples), 3), dtype=object)
    for k, x in enumerate(examples):
        context[k] = (x.device, x.region, x.source)
    return ImpressionSet(user, item, ts, day, position, labels,
                         np.array([x.watch_ms for x in examples], dtype=np.int64),
                         np.array([x.watch_ratio for x in examples], dtype=np.float64), context)


def _retrieval_targets(test: ImpressionSet, train_seen: list[np.ndarray]
                       ) -> tuple[np.ndarray, list[np.ndarray], int]:
    lv = test.labels["long_view"] == 1
    per_user = _group_items(test.user[lv].astype(np.int64), test.item[lv].astype(np.int64),
                            len(train_seen))
    users, targets, dropped = [], [], 0
    for uid in np.unique(test.user[lv]):
        t = per_user[uid]
        fresh = t[~np.isin(t, train_seen[uid])]
        dropped += len(t) - len(fresh)
        if len(fresh):
            users.append(uid)
            targets.append(fresh)
    return np.array(users, dtype=np.int64), targets, dropped


# --- leave-one-out protocol ---------------------------------------------------------------------


@dataclass
class LeaveOneOutSplit:
    dataset: Dataset
    index: Index
    train: Interactions
    users: np.ndarray  # (E,) evaluated user indices
    targets: np.ndarray  # (E,) their last item
    target_ts: np.ndarray  # (E,) its time
    exclude: list[np.ndarray]  # (E,) each user's training items except the target
    stats: dict = field(default_factory=dict)
    heldout: set[tuple[str, str, int]] = field(default_factory=set)  # (user, item, ts) of targets
    _train_events: list[Event] | None = field(default=None, repr=False, compare=False)

    def train_events(self) -> list[Event]:
        """The raw events minus every held-out interaction (for models that learn from events).
        One list, made on the first call: the engine's views (``eval/neural.py``) recognise one
        training run by it, so they share that run instead of each training its own."""
        if self._train_events is None:
            self._train_events = [e for e in self.dataset.events
                                  if (e.user_id, e.item_id, e.ts) not in self.heldout]
        return self._train_events

    def describe(self) -> dict:
        return {
            "protocol": "leave_one_out",
            "target": "last interaction of each user with >= 3 interactions",
            "fit_on": "all other interactions (validation item included); short users' all",
            "ranking": "full catalog minus the user's training items (target never excluded)",
            **self.stats,
        }


def interaction_events(events: list[Event]) -> Iterator[Event]:
    """The interactions of a next-item dataset: one per impression (a bought, reviewed or rated
    item)."""
    return (e for e in events if e.type == "impression")


def leave_one_out_split(ds: Dataset, max_users: int | None = None, seed: int = 0,
                        min_length: int = 3,
                        select: Callable[[list[Event]], Iterator[Event]] = interaction_events
                        ) -> LeaveOneOutSplit:
    index = build_index(ds.items, ds.events)
    inter = [e for e in select(ds.events) if e.item_id in index.item_of]
    user = np.array([index.user_of[e.user_id] for e in inter], dtype=np.int32)
    item = np.array([index.item_of[e.item_id] for e in inter], dtype=np.int32)
    ts = np.array([e.ts for e in inter], dtype=np.int64)
    order = np.lexsort((np.arange(len(user)), ts, user))  # by user, time, then file order
    counts = np.bincount(user, minlength=index.user_ids.shape[0])
    ends = np.cumsum(counts)  # position after each user's last interaction, in `order`
    eligible = np.flatnonzero(counts >= min_length)
    last = order[ends[eligible] - 1]  # original row of each eligible user's last interaction
    keep = np.ones(len(user), dtype=bool)
    keep[last] = False
    train = index.interactions(user[keep], item[keep], ts[keep])
    eval_users = sample_users(eligible, max_users, seed)
    pick = np.isin(eligible, eval_users)
    targets = item[last[pick]]
    target_ts = ts[last[pick]]
    seqs = train.sequences()
    history = [np.unique(seqs[x]) for x in eval_users]
    repeats = int(sum(bool(np.any(h == t)) for h, t in zip(history, targets)))
    exclude = [h[h != t] for h, t in zip(history, targets)]
    stats = {
        "interactions": len(inter), "users": int(index.user_ids.shape[0]),
        "items": int(index.item_ids.shape[0]), "train_interactions": int(keep.sum()),
        "users_with_targets": len(eligible), "users_evaluated": len(eval_users),
        "users_train_only": int(np.sum((counts > 0) & (counts < min_length))),
        "targets_repeating_history": repeats,
        "max_users": max_users,
    }
    logger.info("leave-one-out split: %s", stats)
    heldout = {(index.user_ids[user[r]], index.item_ids[item[r]], int(ts[r])) for r in last}
    return LeaveOneOutSplit(ds, index, train, eval_users.astype(np.int64), targets, target_ts,
                            exclude, stats, heldout)
