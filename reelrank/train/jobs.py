"""Training jobs run in the background of a serving process (``POST /v1/admin/train``).

One job at a time; each has a status, a progress in [0, 1], and the model version it published.
A failing job records its error and never takes serving down with it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class Job:
    job_id: str
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    model_version: str | None = None
    error: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    finished_at: int | None = None
    metrics: dict | None = None

    def view(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, "progress": round(self.progress, 3),
                "model_version": self.model_version, "error": self.error,
                "created_at": self.created_at, "finished_at": self.finished_at,
                "metrics": self.metrics}


class JobRunner:
    def __init__(self, work: Callable[[Callable[[float], None]], tuple[str | None, dict]],
                 on_done: Callable[[str | None], None] | None = None):
        """``work(report_progress) -> (version, metrics)`` does the training;
        ``on_done(version)`` runs after a success (e.g. hot-swap the new model in)."""
        self.work = work
        self.on_done = on_done
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._running: Job | None = None

    def start(self) -> Job:
        """Start a job, or return the one already running."""
        with self._lock:
            if self._running is not None and self._running.status in ("queued", "running"):
                return self._running
            job = Job(uuid.uuid4().hex)
            self.jobs[job.job_id] = job
            self._running = job
        threading.Thread(target=self._run, args=(job,), daemon=True,
                         name=f"train-{job.job_id[:8]}").start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def _run(self, job: Job) -> None:
        job.status = "running"

        def progress(p: float) -> None:
            job.progress = max(job.progress, min(1.0, float(p)))

        try:
            version, metrics = self.work(progress)
            job.model_version, job.metrics = version, metrics
            if self.on_done is not None:
                self.on_done(version)
            job.progress, job.status = 1.0, "done"
        except Exception as exc:  # a failed training run must not take serving down
            log.exception("training job %s failed", job.job_id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = int(time.time() * 1000)
