"""Periodic jobs on an APScheduler 3.11 BackgroundScheduler.

Jobs never act themselves: each one posts a message to the supervisor's inbox and the
monitor loop handles it (a checkpoint is requested as a flag that becomes a `save` command
at the worker's next step boundary, never written from this thread). Every job runs with
coalesce=True (a backlog runs once), max_instances=1, and an explicit misfire_grace_time
(the 1 s default silently skips runs on a starved machine). Errors and misfires are
counted and exported through `counters`.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("rlguard.periodic")

# Messages the jobs post (the loop dispatches on them).
LIVENESS = "check_liveness"
WANT_CHECKPOINT = "want_checkpoint"
WANT_EVAL = "want_eval"
DISK = "disk_free"


def disk_free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9


class PeriodicJobs:
    """Owns the scheduler; `post(kind, payload)` is the supervisor's inbox."""

    def __init__(self, post: Callable[[str, dict], None], *, run_dir: Path, liveness_every_s: float,
                 checkpoint_every_s: float | None, eval_every_s: float | None, disk_every_s: float = 60.0,
                 misfire_grace_s: float = 30.0):
        self.post = post
        self.run_dir = run_dir
        self.counters: Counter[str] = Counter()
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(max(1, misfire_grace_s))},
            daemon=True,
        )
        self._scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        self._add(LIVENESS, liveness_every_s, lambda: self.post(LIVENESS, {}))
        self._add(DISK, disk_every_s, self.check_disk)
        if checkpoint_every_s:
            self._add(WANT_CHECKPOINT, checkpoint_every_s, lambda: self.post(WANT_CHECKPOINT, {}))
        if eval_every_s:
            self._add(WANT_EVAL, eval_every_s, lambda: self.post(WANT_EVAL, {}))

    def _add(self, job_id: str, every_s: float, fn: Callable[[], None]) -> None:
        self._scheduler.add_job(fn, "interval", seconds=every_s, id=job_id, name=job_id)

    def check_disk(self) -> None:
        # checkpoints/ is often a mount of its own (a bigger or faster volume): watch the fuller one
        paths = [p for p in (self.run_dir, self.run_dir / "checkpoints") if p.exists()]
        free = {str(p): disk_free_gb(p) for p in paths}
        where = min(free, key=free.get)
        self.post(DISK, {"free_gb": free[where], "path": where})

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        kind = "error" if event.code == EVENT_JOB_ERROR else "missed"
        self.counters[f"{event.job_id}.{kind}"] += 1
        if event.exception is not None:
            log.warning("periodic job %s failed: %r", event.job_id, event.exception)

    @property
    def job_ids(self) -> list[str]:
        return [j.id for j in self._scheduler.get_jobs()]

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
