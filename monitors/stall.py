"""Stall: no event for too long (a hung collective, a deadlocked dataloader, a dead worker).

The threshold adapts to the run: max(min_s, factor x the median interval between events), so
a run with 10-minute steps is not a stall at minute 3 and a run with 1-second steps is at
minute 2. Warning at the threshold, critical at `critical_factor` times it; one alert of each
per stall, and the next event ends the stall. Time is injected: event time in replay, the
wall clock live (`MonitorStack.check_stall(now)`).
"""

from __future__ import annotations

from collections import deque

from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.config import StallConfig


class StallDetector:
    name = "stall"

    def __init__(self, cfg: StallConfig):
        self.cfg = cfg
        self.last_time: float | None = None
        self.last_step = -1
        self.intervals: deque[float] = deque(maxlen=64)
        self.raised = 0  # 0 none, 1 warning raised, 2 critical raised (for the current gap)

    def observe(self, step: int, time: float | None) -> None:
        if time is None:
            return
        if self.last_time is not None and time > self.last_time:
            self.intervals.append(time - self.last_time)
        self.last_time = time
        self.last_step = step
        self.raised = 0

    def threshold_s(self) -> float:
        if not self.intervals:
            return self.cfg.min_s
        s = sorted(self.intervals)
        return max(self.cfg.min_s, self.cfg.factor * s[len(s) // 2])

    def check(self, now: float) -> list[Alert]:
        if not self.cfg.enabled or self.last_time is None:
            return []
        gap = now - self.last_time
        thr = self.threshold_s()
        if gap >= thr * self.cfg.critical_factor:
            severity = Severity.CRITICAL
        elif gap >= thr:
            severity = Severity.WARNING
        else:
            return []
        level = severity.rank + 1
        if level <= self.raised:
            return []
        self.raised = level
        return [Alert(code="stall", detector=self.name, metric="", step=self.last_step, severity=severity,
                      onset_step=self.last_step,
                      message=f"no event for {gap:.0f} s since step {self.last_step} (threshold {thr:.0f} s"
                              f"{', critical' if severity is Severity.CRITICAL else ''}: "
                              f"max({self.cfg.min_s:g} s, {self.cfg.factor:g} x median step interval))")]

    def state_dict(self) -> dict:
        return {"last_time": self.last_time, "last_step": self.last_step,
                "intervals": list(self.intervals), "raised": self.raised}

    def load_state_dict(self, d: dict) -> None:
        self.last_time = d["last_time"]
        self.last_step = int(d["last_step"])
        self.intervals.clear()
        self.intervals.extend(float(x) for x in d["intervals"])
        self.raised = int(d["raised"])
