"""What runs beside the serving core in a server process: the model watcher, retention, the
live-state rebuild after an erasure, training jobs (``POST /v1/admin/train``) and the online
trainer, as a supervised child process or a thread.

``Engine`` (``engine.py``) serves and starts no thread; entry points (``reelrank serve``,
``reelrank demo``, tests) assemble a ``Runtime`` around it and hand both to ``create_app``. Only
here, and in ``reelrank trainer``, are trainers started.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager

from reelrank.engine import Engine
from reelrank.pipeline.side_effects import Calls, SideEffect
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.jobs import JobRunner
from reelrank.types import DAY_MS

log = logging.getLogger(__name__)


class Runtime:
    """The background work of one serving process, around its ``engine``.

    ``train_config``: what ``POST /v1/admin/train`` trains with (the same defaults as
    ``reelrank train``). Nothing starts until asked: ``watch_models``, ``start_retention``,
    ``start_trainer`` or ``start_trainer_process``; ``stop`` ends the trainer and the watcher."""

    def __init__(
        self,
        engine: Engine,
        train_config: TrainConfig | None = None,
        rebuild_lock: Callable[[], ContextManager] | None = None,
    ) -> None:
        """``rebuild_lock``: a lock across processes that every live-state rebuild takes (a
        shared live state: one process rebuilds at a time)."""
        self.engine = engine
        self._rebuild_guard = rebuild_lock or contextlib.nullcontext
        self.train_config = train_config or TrainConfig()
        self.training = (
            JobRunner(self._train, on_done=self._swap_in) if engine.registry is not None else None
        )
        self.trainer: Any = None  # OnlineTrainer (thread) or TrainerProcess (child), once started
        self._trainer_step: SideEffect | None = None
        self.retention_days: int | None = None
        self._watch_stop = threading.Event()
        self._rebuild_lock = threading.Lock()
        self._rebuild_wanted = False
        self._rebuild_thread: threading.Thread | None = None

    # -- the viewer's data -------------------------------------------------------------------------
    def erase_user(self, user_id: str) -> int:
        """``Engine.erase_user``, with the live-state rebuild it calls for run in the
        background: the answer does not wait for a replay of the whole log."""
        removed = self.engine.erase_user(user_id, rebuild=False)
        if removed:
            self.schedule_rebuild()
        return removed

    def schedule_rebuild(self) -> threading.Thread:
        """Rebuild live state in the background; requests made while one runs fold into one
        more run after it."""
        with self._rebuild_lock:
            self._rebuild_wanted = True
            if self._rebuild_thread is None or not self._rebuild_thread.is_alive():
                self._rebuild_thread = threading.Thread(
                    target=self._rebuild_loop, name="live-rebuild", daemon=True
                )
                self._rebuild_thread.start()
            return self._rebuild_thread

    def _rebuild_loop(self) -> None:
        while True:
            with self._rebuild_lock:
                if not self._rebuild_wanted:
                    return
                self._rebuild_wanted = False
            try:
                with self._rebuild_guard():
                    self.engine.rebuild_live()
            except Exception:  # the live state stays as it was; the next erasure retries
                log.exception("rebuilding live state failed")

    def start_retention(self, days: int, every_s: float = 3600.0) -> threading.Thread:
        """Purge events older than ``days`` now and then every ``every_s`` seconds, in a
        daemon thread (a failed purge is logged and retried at the next tick)."""
        if days < 1:
            raise ValueError("retention must be at least one day")
        self.retention_days = days

        def loop() -> None:
            while True:
                try:
                    n = self.engine.purge_events_older_than(days * DAY_MS, rebuild=False)
                    if n:
                        log.info("retention: purged %d events older than %d days", n, days)
                        self.schedule_rebuild().join()
                except Exception:
                    log.exception("retention purge failed")
                time.sleep(every_s)

        thread = threading.Thread(target=loop, name="retention", daemon=True)
        thread.start()
        return thread

    # -- models ---------------------------------------------------------------------------------
    def _train(self, progress) -> tuple[str | None, dict]:
        result = train_from_store(
            self.engine.store,
            self.engine.registry,
            self.train_config,
            progress=False,
            on_progress=progress,
        )
        return result.version, result.metrics

    def _swap_in(self, _version: str | None) -> None:
        self.engine.models.refresh()

    def watch_models(self, every_s: float = 0.25) -> threading.Thread:
        """Poll the registry and swap in each newly published version (a trainer in another
        process, or ``reelrank train``). Failures are logged and retried. A poll reads one
        small file; how often versions are swapped in is the publisher's rate, so polling
        often only shortens the wait between a publish and its swap."""
        return self._every(
            every_s,
            "model-watch",
            self.engine.models.refresh,
            "loading the latest model failed; serving keeps its model",
        )

    def _every(
        self, every_s: float, name: str, step: Callable[[], object], failed: str
    ) -> threading.Thread:
        """Run ``step`` every ``every_s`` seconds in a daemon thread until ``stop``; a failure
        is logged (``failed``) and the next tick tries again."""

        def loop() -> None:
            while not self._watch_stop.wait(every_s):
                try:
                    step()
                except Exception:
                    log.exception(failed)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def start_live_catch_up(self, every_s: float = 5.0, grace_s: float = 10.0) -> threading.Thread:
        """With a live state shared by several processes: every ``every_s`` seconds, mark done
        the batches this process folded in and fold in those another process stored but
        never folded in (it died in between), once they are ``grace_s`` old
        (``Engine.catch_up_live``). Every process runs it; a batch folded twice counts once."""
        return self._every(
            every_s,
            "live-catch-up",
            lambda: self.engine.catch_up_live(grace_s),
            "catching the live state up with the log failed; retrying",
        )

    def start_trainer(self, config=None):
        """Run the online trainer (``reelrank.train.trainer``) in a background thread of this
        process: it tails the event log and hands new weights straight to serving. A trainer
        that fails is restarted by itself; serving never waits on it, but its Python work
        competes with requests for the interpreter lock (``start_trainer_process`` does not)."""
        from reelrank.train.trainer import OnlineTrainer

        engine = self.engine
        if engine.registry is None:
            raise ValueError("the online trainer needs a model registry")
        if self.trainer is None:
            self.attach(
                OnlineTrainer(
                    engine.store,
                    engine.registry,
                    config,
                    catalog=engine.catalog,
                    install=engine.models.install,
                )
            )
        return self.trainer.start()

    def start_trainer_process(self, data_dir: Path, **options):
        """Run the online trainer as a supervised child process on ``data_dir`` (the store's
        directory): ``reelrank serve``'s default. It publishes to the registry, which
        ``watch_models`` swaps in; erasures and resets reach it through its standard input;
        it is restarted if it dies and stopped with ``stop``. Options:
        ``reelrank.train.supervisor.TrainerProcess``'s."""
        from reelrank.train.supervisor import TrainerProcess

        if self.trainer is None:
            self.attach(TrainerProcess(data_dir, **options))
        return self.trainer.start()

    def attach(self, trainer) -> None:
        """Use ``trainer`` from now on: erasures and resets reach it (a step of the engine)."""
        if self._trainer_step is not None:
            self.engine.effects.remove(self._trainer_step)
        self.trainer = trainer
        self._trainer_step = self.engine.effects.add(
            Calls(
                "online trainer",
                erase=trainer.forget_user,
                reset=trainer.reset_user,
                held=getattr(trainer, "held_users", None),
            )
        )

    def forget_trainer(self) -> None:
        """Stop using the trainer (already stopped): a later ``start_trainer`` starts anew."""
        if self._trainer_step is not None:
            self.engine.effects.remove(self._trainer_step)
        self.trainer = self._trainer_step = None

    def trainer_status(self) -> dict | None:
        """The online trainer's own report; None when none runs in (or under) this process."""
        return self.trainer.status() if self.trainer is not None else None

    def stop(self) -> None:
        """Stop the online trainer, the model watcher and the live catch-up (before closing
        the store)."""
        self._watch_stop.set()
        if self.trainer is not None:
            self.trainer.stop()
