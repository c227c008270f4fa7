"""Handing the online trainer's versions to serving: the one place a version leaves training.

A version goes out one way, through the registry (``registry.py``), which serving polls; in a
server running the trainer as a thread, an installer thread also passes it to
``ServingModels.install`` in memory first (``Install``), so that serving has it without
waiting for the file, and writes it to the registry every ``persist_every_s``. Either way the
version's meta (base, retrieval version, the log position it learned through) is the same.

``VersionHandover`` is the publishing half of ``OnlineTrainer`` (``train/trainer.py``): it
works on the trainer's state (learner, row stream, registry, clock) and is not used alone.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Callable

from reelrank.models.bundle import ModelBundle

log = logging.getLogger(__name__)

Install = Callable[..., None]  # (version, bundle, meta, published=registry version or None)


def lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux schedules threads one by one); elsewhere, or
    without the right, nothing changes."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        log.debug("could not lower the trainer's priority")


@dataclass
class _Handover:
    bundle: ModelBundle
    meta: dict
    persist: bool  # write it to the registry too
    ends: list[int]  # view-end times of the rows first learned in it (for the lag figures)
    name: str  # the version's name in serving when it is not written to the registry


class VersionHandover:
    """Publishing, for ``OnlineTrainer``: which weights go out, under which name and meta, to
    the registry and (in process) to serving's ``install``."""

    def publish(self) -> str | None:
        """Hand the current weights to serving (and to the registry when due); None when a
        newer version from elsewhere is in the registry (the trainer starts over from it), or
        when this trainer lost its lease (it stands by)."""
        if not self.still_leading():
            return None
        learner = self.learner
        now = self.clock()
        # "<base>+<steps>"; new retrieval weights with no ranker step since the last version
        # get their own name: "<base>+<steps>r<retrieval steps>".
        name = f"{self.base_version}+{learner.steps}"
        if learner.steps == self._named_steps:
            name += f"r{learner.retrieval_steps}"
        self._named_steps = learner.steps
        if self._retrieval_due(now):
            self._retrieval_module = learner.retrieval_snapshot()
            self._retrieval_version = f"{self.base_version}+r{learner.retrieval_steps}"
            self._retrieval_steps_published = learner.retrieval_steps
            self._last_retrieval = now
        # Serving never changes a module it is handed: one retrieval copy serves every version
        # until the retrieval weights change, and each version gets its own ranker copy.
        bundle = learner.serving_bundle(self._retrieval_module)
        self.through_ts = self._watermark()
        meta = {
            "base_version": self.base_version,
            "retrieval_version": self._retrieval_version,
            "through_seq": self.cursor,
            "through_ts": self.through_ts,
            **learner.serving_meta(self.base_version),
            "online": {
                "steps": learner.steps,
                "rows": learner.rows_trained,
                "retrieval_steps": learner.retrieval_steps,
                "dropped": learner.dropped,
                "join": asdict(self.rows.joiner.stats),
            },
        }
        if self._superseded(self.registry.latest()):
            return None
        persist = now - self._last_persist >= self.cfg.persist_every_s
        ends, self._unpublished_ends = self._unpublished_ends, []
        self._steps_since_publish = 0
        self._last_publish = now
        if persist:
            self._last_persist = now
        if self.install is None:  # a process of its own: the registry is the hand-over
            return self._hand_over(_Handover(bundle, meta, True, ends, name))
        # In process, an installer thread hands versions over, so that preparing one (an
        # index rebuild for new retrieval weights takes seconds) never holds up learning.
        # A version not yet taken is replaced by the newer one, which includes its rows.
        with self._handoff_ready:
            waiting = self._handoff
            if waiting is not None:
                ends = waiting.ends + ends
                persist = persist or waiting.persist
            self._handoff = _Handover(bundle, meta, persist, ends, name)
            self._handoff_ready.notify()
        self._start_installer()
        return "queued"

    def _start_installer(self) -> None:
        if self._installer is None or not self._installer.is_alive():
            self._installer = threading.Thread(
                target=self._install_loop, daemon=True, name="online-installer"
            )
            self._installer.start()

    def _install_loop(self) -> None:
        lower_priority(self.cfg.nice)
        while not self._stop.is_set():
            with self._handoff_ready:
                while self._handoff is None and not self._stop.is_set():
                    self._handoff_ready.wait(0.5)
                job, self._handoff = self._handoff, None
            if job is None:
                continue
            try:
                self._hand_over(job)
            except Exception:  # serving keeps the version it has
                self.install_failures += 1
                log.exception("handing a version to serving failed")

    def _hand_over(self, job: "_Handover") -> str:
        if job.persist:
            # Retrieval weights unchanged since a version in the registry are linked from it,
            # not serialised and written again (two thirds of a version's bytes).
            rv, holder = self._retrieval_file
            if (
                holder is not None
                and rv == job.meta.get("retrieval_version")
                and self.registry.has_part(holder, "retrieval")
            ):
                version = self.registry.publish(
                    job.bundle.state(retrieval=False), job.meta, reuse={"retrieval": holder}
                )
            else:
                version = self.registry.publish(job.bundle.state(), job.meta)
            self._retrieval_file = (job.meta.get("retrieval_version"), version)
            self._published.append(version)
            self.registry.prune(self.cfg.keep_versions)
            self._registry_version = version
        else:
            version = job.name
        if self.install is not None:
            self.install(version, job.bundle, job.meta, published=self._registry_version)
        served = self.clock() * 1000
        # Lags only mean something for events stamped with this clock as they happened (not
        # for an imported or replayed history).
        self.lags_ms.extend(lag for lag in (served - e for e in job.ends) if 0 <= lag < 3_600_000)
        self.serving_version = version
        self.versions_handed += 1
        return version

    def _watermark(self) -> int:
        """Every example whose view ended at or before this time is in the weights published
        now: events up to it were read, and none of them is still settling or waiting."""
        marks = [self._read_ts]
        pending = self.rows.joiner.open_ended_since()
        if pending is not None:
            marks.append(pending - 1)
        waiting = self.learner.oldest_waiting_end()
        if waiting is not None:
            marks.append(waiting - 1)
        return min(marks)
