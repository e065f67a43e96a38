"""Coverage, said where the operator of a run looks: one log line and one journal entry each
time the failure classes the run's metrics arm change (the first event, a metric appearing
later), never per step. Shared by the supervisor (`rlguard run`) and `rlguard watch`; the
report itself is monitors/coverage.py's, and /api/status carries the latest one."""

from __future__ import annotations

import logging

from rlguard.monitors.coverage import CoverageTracker


class CoverageLog:
    """Feeds event metrics to a CoverageTracker; on a change, logs and journals it."""

    def __init__(self, journal, log: logging.Logger):
        self.tracker = CoverageTracker()
        self.journal = journal
        self.log = log

    def observe(self, step: int, metrics: dict) -> dict | None:
        try:
            rep = self.tracker.observe(metrics)
        except Exception:  # a report must never cost the event its detection
            self.log.exception("coverage report failed at step %d; detection goes on", step)
            return None
        if rep is None:
            return None
        # A class that cannot fire is something the user must hear about even with --quiet.
        self.log.log(logging.WARNING if rep["off"] else logging.INFO, "coverage at step %d: %s", step,
                     rep["summary"])
        self.journal.note(f"coverage: {rep['summary']}", event="coverage", step=step, **rep)
        return rep

    @property
    def current(self) -> dict:
        return self.tracker.current
