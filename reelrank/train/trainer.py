"""The online trainer: tails the event log, learns in small steps, publishes versions.

One loop, run in a background thread of the serving process (the single-process default) or as
its own process (``reelrank trainer``, when several API processes share a store):

1. read the events appended to the store's log since the last read (by sequence number);
2. turn them into training rows with ``features.RowStream`` over the trainer's own live state:
   the ranker's inputs as they were when each impression happened, the labels once the view has
   settled (``OnlineConfig``-independent: ``TrainerConfig.settle_ms``), an impression with no
   outcome a negative when its window closes;
3. ``OnlineLearner.step`` on each full batch (or a partial one that waited ``max_wait_ms``);
4. every ``publish_every_s``, hand the new weights to serving (``train/handover.py``): in
   process, an installer thread passes them to ``ServingModels.install`` (and writes them to
   the registry every ``persist_every_s``), so learning never waits on a hand-over; as a
   separate process, by publishing to the registry, which API processes poll.

The retrieval model's new weights are handed over less often (``retrieval_every_s``): serving
rebuilds its vector index for them. Ranker-only versions keep the index. Weights that come due
when no ranker step follows (a quiet stream) go out in a version of their own.

The trainer starts from the registry's latest version and first replays the log up to the
sequence number that version was trained through, to rebuild its live state; rows after it are
learned. Anything that goes wrong in the loop is logged, counted in ``status()``, and the
trainer starts over from the registry after a back-off: serving never waits on it and never
sees an exception from it. Erasure: ``forget_user`` drops a viewer's pending rows and state
before the next step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from reelrank.features import RowStream
from reelrank.models.bundle import ModelBundle
from reelrank.registry import ModelRegistry
from reelrank.store import new_catalog
from reelrank.errors import StoreError
from reelrank.store.live import Catalog
from reelrank.train.budget import (ViewerBudget, join_memory, release_free_memory,
                                   trainer_live_state, trim_join_memory)
from reelrank.train.handover import Install, VersionHandover, _Handover, lower_priority
from reelrank.train.learner import OnlineConfig, OnlineLearner

if TYPE_CHECKING:
    from reelrank.store.lease import Lease

log = logging.getLogger(__name__)

@dataclass
class TrainerConfig:
    poll_s: float = 0.1  # how often the log is read when idle
    publish_every_s: float = 1.0  # new ranker weights go to serving at most this often
    retrieval_every_s: float = 120.0  # ... and new retrieval weights (an index rebuild) this often
    persist_every_s: float = 60.0  # in process: how often a version is written to the registry
    keep_versions: int = 10  # registry versions kept when pruning after a publish
    settle_ms: int = 1_000  # an example closes this long after its view ended
    window_ms: int = 3_600_000  # an impression with no outcome is a negative after this long
    read_chunk: int = 5_000  # events read from the log per pass
    verify_users: bool = False  # before a step, drop rows of viewers whose events are gone
    torch_threads: int = 1
    nice: int = 10  # the trainer's threads yield the CPU to request threads (Linux)
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    # Memory budgets (``train.budget``): what would otherwise grow for as long as it runs.
    max_viewers: int = 100_000  # viewers in its live state; an evicted one is rebuilt from the log
    late_memory: int = 10_000  # closed examples kept for a late outcome to correct (~1.5 KB each)
    # Event ids the join remembers to drop duplicates: none needed, the log holds each id once
    # (and none of an erased viewer's stays behind in memory).
    dedupe_memory: int = 0
    trim_every_s: float = 10.0  # hand freed heap memory back to the system this often
    lease_poll_s: float = 1.0  # a standby trainer asks for the lease this often
    online: OnlineConfig = field(default_factory=OnlineConfig)


class OnlineTrainer(VersionHandover):
    """The loop above: reads the log, learns, and hands versions over (``VersionHandover``)."""


    def __init__(self, store, registry: ModelRegistry, cfg: TrainerConfig | None = None, *,
                 catalog: Catalog | None = None, install: Install | None = None,
                 clock: Callable[[], float] = time.time, lease: Lease | None = None):
        """``store`` is read only (events, items, and ``count_events`` with ``verify_users``).
        ``catalog``: the serving process' catalog, shared read-only (a separate process loads
        its own). ``install``: hands a version to serving in memory (None: registry only).
        ``lease``: the trainers' leader lease (``store/lease.py``): this trainer learns and
        publishes only while it holds it, and stands by (polling) otherwise, so that of
        several trainers on one deployment exactly one publishes and another takes over when
        it dies."""
        self.store = store
        self.lease = lease
        self.registry = registry
        self.cfg = cfg or TrainerConfig()
        self.install = install
        self.clock = clock
        self._shared_catalog = catalog
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._erase: deque[str] = deque()
        self._resets: deque[str] = deque()
        self._reset_floors: dict[str, int] = {}  # user -> log seq of their last reset
        self._handoff: _Handover | None = None  # the newest version waiting for the installer
        self._handoff_ready = threading.Condition()
        self._installer: threading.Thread | None = None
        self._registry_version: str | None = None  # newest registry version serving holds
        # (retrieval_version, the registry version whose retrieval file holds those weights)
        self._retrieval_file: tuple[str | None, str | None] = (None, None)
        self.install_failures = 0
        # Registry versions this trainer wrote, newest last. Only one still in the registry can
        # be its latest, and pruning keeps ``keep_versions``: a few times that is plenty, where
        # a set would gain a name every publish for as long as the trainer runs.
        self._published: deque[str] = deque(maxlen=max(64, 4 * self.cfg.keep_versions))
        self.learner: OnlineLearner | None = None
        self.rows: RowStream | None = None
        self.viewers: ViewerBudget | None = None
        self.late_dropped = 0  # closed examples let go before their window ended (late_memory)
        self.cursor = 0
        self.state = "stopped"  # stopped | waiting_for_model | catching_up | running | failed
        self.failures = 0
        self.last_error: str | None = None
        self.base_version: str | None = None
        self.serving_version: str | None = None
        self.versions_handed = 0
        self.lags_ms: deque[float] = deque(maxlen=20_000)  # view end -> weights serving
        self.through_ts: int | None = None
        self._last_trim = clock()
        self._reset_publish_state()

    def _reset_publish_state(self) -> None:
        self._last_publish = self._last_persist = self._last_retrieval = self.clock()
        self._retrieval_module = None
        self._retrieval_steps_published = 0
        self._retrieval_version: str | None = None
        self._clock_seen: tuple[int, int] | None = None
        self._trained_through_ts = -1
        self._unpublished_ends: list[int] = []
        self._steps_since_publish = 0
        self._named_steps = -1
        self._read_ts = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "OnlineTrainer":
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="online-trainer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._handoff_ready:
            self._handoff_ready.notify_all()
        for thread in (self._thread, self._installer):
            if thread is not None:
                thread.join(timeout)
        self.state = "stopped"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def forget_user(self, user_id: str) -> None:
        """Erasure step: the trainer thread drops the viewer's pending data before its next
        step (a request never waits on the trainer)."""
        self._erase.append(user_id)

    def held_users(self) -> set[str]:
        """The viewers this trainer holds state or pending examples of (where an erasure
        announced by a digest of the id is looked for)."""
        rows, learner = self.rows, self.learner
        held = set(self._reset_floors)
        if rows is not None:
            held.update(rows.live.user_ids())
        if learner is not None:
            held.update(r[1].example.user_id for r in list(learner.queue))
        return held

    def reset_user(self, user_id: str) -> None:
        """Reset step ("refresh my feed"): the trainer's own live state forgets the
        viewer's inferred interests before its next step, as serving's did."""
        self._resets.append(user_id)

    def run(self) -> None:
        """The loop; returns when ``stop`` is called. Never raises."""
        torch.set_num_threads(self.cfg.torch_threads)
        lower_priority(self.cfg.nice)
        while not self._stop.is_set():
            try:
                if self.learner is None and not self._lead():
                    continue
                if self.learner is None and not self._bootstrap():
                    self._stop.wait(1.0)
                    continue
                if not self.cycle():
                    self._stop.wait(self.cfg.poll_s)
            except Exception as exc:  # the trainer may fail; serving must not notice
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.state = "failed"
                log.exception("online trainer failed (%d so far); starting over", self.failures)
                self.learner = self.rows = self.viewers = None
                delays = self.cfg.backoff_s
                self._stop.wait(delays[min(self.failures, len(delays)) - 1])

    # -- the lease --------------------------------------------------------------------------------
    def _lead(self) -> bool:
        """Take the lease (or hold it still) before learning; False (after a wait) while
        another trainer holds it. Without a lease, always True."""
        if self.lease is None:
            return True
        try:
            got = self.lease.try_acquire()
        except StoreError as exc:  # the database is away: stand by until it is back
            self.last_error = str(exc)
            got = False
        if got:
            log.info("online trainer: holds the %r lease (epoch %s)", self.lease.name,
                     self.lease.epoch)
            return True
        self.state = "standby"
        self._stop.wait(self.cfg.lease_poll_s)
        return False

    def still_leading(self) -> bool:
        """Asked before each publish: a trainer that lost its lease (its database session
        ended) drops what it learned and stands by; the one that took over publishes."""
        if self.lease is None or self.lease.held():
            return True
        log.warning("online trainer: lost the %r lease; standing by", self.lease.name)
        self.learner = self.rows = self.viewers = None
        self.state = "standby"
        return False

    # -- one pass ---------------------------------------------------------------------------------
    def _bootstrap(self) -> bool:
        """Load the latest version and replay the log through it; False if none is published."""
        latest = self.registry.latest()
        if latest is None:
            self.state = "waiting_for_model"
            return False
        self.state = "catching_up"
        artifact = self.registry.load(latest)
        bundle = ModelBundle.from_state(artifact.state)
        catalog = self._shared_catalog
        if catalog is None:
            catalog = new_catalog()
            catalog.upsert(list(self.store.iter_items()))
        online = self.cfg.online
        history = max(online.history_len,
                      bundle.retrieval.users.max_len if bundle.retrieval is not None else 0)
        self.rows = RowStream(trainer_live_state(catalog), history_len=history,
                              window_ms=self.cfg.window_ms, settle_ms=self.cfg.settle_ms)
        self.rows.joiner.dedupe_memory = self.cfg.dedupe_memory
        self.viewers = ViewerBudget(self.rows.live, self.store, self.cfg.max_viewers)
        self.learner = OnlineLearner(bundle, catalog, online)
        # Viewers' "refresh my feed" points: older events rebuild no interests (as in serving's
        # replay, ``store/rebuild.replay``).
        iter_settings = getattr(self.store, "iter_settings", None)
        self._reset_floors = ({st.user_id: st.interests_reset_seq for st in iter_settings()
                               if st.interests_reset_seq} if iter_settings else {})
        self.base_version = self._registry_version = latest
        self.cursor = 0
        self._reset_publish_state()
        # Until new retrieval weights are handed over, every version carries the base's.
        self._retrieval_version = artifact.meta.get("retrieval_version", latest)
        self._retrieval_file = (self._retrieval_version, latest)
        self._retrieval_module = ModelBundle.from_state(artifact.state).retrieval
        self._trained_through = int(artifact.meta.get("through_seq",
                                                      artifact.meta.get("metrics", {})
                                                      .get("last_seq", -1)))
        if self._trained_through < 0:
            # Trained before versions recorded their log position: learn from now on.
            self._trained_through = self.store.last_seq()
        log.info("online trainer: base %s, trained through seq %d", latest,
                 self._trained_through)
        while self._read() == self.cfg.read_chunk and not self._stop.is_set():
            pass
        self.state = "running"
        return True

    def _superseded(self, latest: str | None) -> bool:
        """Someone else published a version (a batch run): start over from it, rather than
        hand serving weights that descend from the version it replaced."""
        if latest is None or latest in self._published or latest == self.base_version:
            return False
        log.info("online trainer: %s was published elsewhere; starting from it", latest)
        self.learner = self.rows = self.viewers = None
        return True

    def cycle(self) -> bool:
        """Read, train, publish once; True if there was anything to do."""
        if self._superseded(self.registry.latest()):
            return True
        self._apply_erasures()
        read = self._read()
        now = self._event_clock()
        closed = self.rows.flush(now)
        self.late_dropped += trim_join_memory(self.rows, self.cfg.late_memory)
        # Closed by the passing of time alone: an impression the base model already saw, with
        # nothing new about it, is not learned twice.
        old = [r for r in closed if r.example.ts <= self._trained_through_ts]
        self.learner.observe(old)
        self.learner.add([r for r in closed if r.example.ts > self._trained_through_ts], now)
        busy = read > 0
        while self.learner.ready(now) and not self._stop.is_set():
            if self.cfg.verify_users:
                self._verify_users()
            report = self.learner.step()
            if report is None:
                break
            self._unpublished_ends += report.ended
            self._steps_since_publish += 1
            busy = True
            self._apply_erasures()
        now = self.clock()
        if (self._steps_since_publish and now - self._last_publish >= self.cfg.publish_every_s
                or self._retrieval_due(now)):
            self.publish()
            busy = True
        if now - self._last_trim >= self.cfg.trim_every_s:
            self._last_trim = now
            release_free_memory()
        return busy

    def _retrieval_due(self, now: float) -> bool:
        """New retrieval weights wait at most ``retrieval_every_s``, also when no ranker step
        follows them (a quiet stream): they go out with the next publish, or by themselves."""
        return (self.learner.retrieval_steps != self._retrieval_steps_published
                and now - self._last_retrieval >= self.cfg.retrieval_every_s)

    def _read(self) -> int:
        learner, rows = self.learner, self.rows
        n = 0
        batch = []
        for seq, event in self.store.iter_events(after_seq=self.cursor):
            batch.append((seq, event))
            n += 1
            if n >= self.cfg.read_chunk:
                break
        if not batch:
            return 0
        missing = {e.item_id for _, e in batch if e.item_id not in rows.live.catalog}
        if missing and self._shared_catalog is None:
            rows.live.catalog.upsert(list(self.store.get_items(missing).values()))
        floors = self._reset_floors
        viewers = self.viewers
        for seq, event in batch:
            viewers.before(seq, event, floors)
            out = rows.add(event, interests=seq > floors.get(event.user_id, 0))
            self._read_ts = max(self._read_ts, event.ts)
            if seq <= self._trained_through:
                self._trained_through_ts = max(self._trained_through_ts, event.ts)
                learner.observe(out)
            else:
                learner.add(out, self._event_clock())
        self.cursor = batch[-1][0]
        self.late_dropped += trim_join_memory(rows, self.cfg.late_memory)
        return n

    def _event_clock(self) -> int:
        """Event time, moving on with the wall clock while no events arrive, so that examples
        settle and windows close on a quiet stream too."""
        joiner = self.rows.joiner
        wall = int(self.clock() * 1000)
        if self._clock_seen is None or self._clock_seen[0] != joiner.clock:
            self._clock_seen = (joiner.clock, wall)
        return joiner.clock + (wall - self._clock_seen[1])

    def _apply_erasures(self) -> None:
        while self._resets:
            user = self._resets.popleft()
            get_settings = getattr(self.store, "get_settings", None)
            if get_settings is not None:  # events of theirs not read yet stay out too
                self._reset_floors[user] = get_settings(user).interests_reset_seq or 0
            if self.rows is not None:
                self.rows.live.reset_interests(user)
        while self._erase:
            user = self._erase.popleft()
            # Their settings went with the erasure: no id of theirs stays behind here either.
            self._reset_floors.pop(user, None)
            if self.rows is not None:
                self.rows.forget_user(user)
            if self.viewers is not None:
                self.viewers.forget(user)
            if self.learner is not None:
                self.learner.forget_user(user)

    def _verify_users(self) -> None:
        """A separate process hears of no erasure: a viewer with no events left in the store was
        erased, so their waiting rows are dropped before they are learned."""
        n = min(self.learner.cfg.batch_size, len(self.learner.queue))
        users = {self.learner.queue[k][1].example.user_id for k in range(n)}
        for u in users:
            if self.store.count_events(u) == 0:
                self.forget_user(u)
        self._apply_erasures()

    def status(self) -> dict:
        lags = np.array(self.lags_ms, dtype=np.float64)
        learner = self.learner
        return {
            "state": self.state, "alive": self.alive, "failures": self.failures,
            "install_failures": self.install_failures,
            "last_error": self.last_error, "base_version": self.base_version,
            "serving_version": self.serving_version, "versions": self.versions_handed,
            "cursor": self.cursor, "through_ts": self.through_ts,
            "steps": learner.steps if learner else 0,
            "rows_trained": learner.rows_trained if learner else 0,
            "rows_waiting": len(learner.queue) if learner else 0,
            "lag_ms": {"n": int(len(lags)),
                       "p50": float(np.percentile(lags, 50)) if len(lags) else None,
                       "p99": float(np.percentile(lags, 99)) if len(lags) else None},
            "memory": self.memory(),
        }

    def memory(self) -> dict:
        """What it holds against each budget of its configuration."""
        cfg, viewers, rows = self.cfg, self.viewers, self.rows
        return {
            "viewers": len(viewers) if viewers is not None else 0,
            "max_viewers": cfg.max_viewers,
            "viewers_evicted": viewers.evicted if viewers is not None else 0,
            "viewers_rebuilt": viewers.rebuilt if viewers is not None else 0,
            **(join_memory(rows) if rows is not None else {}),
            "max_late_examples": cfg.late_memory,
            "late_dropped": self.late_dropped,
            "max_event_ids": cfg.dedupe_memory,
            "rows_waiting": len(self.learner.queue) if self.learner is not None else 0,
            "max_rows_waiting": cfg.online.max_queue,
        }
