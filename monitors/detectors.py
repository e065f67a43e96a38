"""Single-metric detectors: non-finite values, bounds, spikes, change points, drift.

Every detector is a small object with no I/O. `update(step, values, tracks)` sees the event's
metric values and the shared per-metric `MetricTrack`s (already updated with this event) and
returns the alerts to raise; `state_dict()` / `load_state_dict()` persist it.

Checks run in a documented priority (the stack's order): non-finite first (it makes every
other statistic meaningless), then fixed bounds, then the statistical detectors. A single
metric moving alone is a warning at most: only the compound patterns (monitors/patterns.py),
non-finite values and user-configured bounds are critical.
"""

from __future__ import annotations

import math

from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.calibration import pipeline_threshold
from rlguard.monitors.config import BoundsConfig, ChangePointConfig, DriftConfig, NonFiniteConfig, SpikeConfig
from rlguard.monitors.incidents import Incidents
from rlguard.monitors.track import SHARE_METRICS, MetricTrack


def fmt(x: float) -> str:
    """Numbers in messages: 4 significant digits, any scale."""
    return f"{x:.4g}"


class Detector:
    """Base: a name (the config key), an incident book, and state persistence."""

    name = "detector"
    # True: judges the values of the record it is given (the stack gives a step's later records only their
    # new values). False: judges the shared tracks (it may be called again within a step when a later
    # record of that step moved a track: streaks must count each step once, see `_new_point`).
    per_value = False

    def __init__(self, rearm_steps: int):
        self.incidents = Incidents(rearm_steps)
        self.counted_step = -1
        self.prev_point = -1  # the logged step before the current one
        self.held_at: dict[str, int] = {}  # condition -> the last step at which it held
        self.held_streak: dict[str, int] = {}  # condition -> consecutive logged points it has held

    def _new_point(self, step: int, quiet_codes=()) -> bool:
        """True the first time this detector is called for `step` (a logged point to count once). On a
        new point, each of `quiet_codes` that did not hold at the previous point gets its quiet step
        (a later record of that step could still have made it hold, so this is only known now)."""
        fresh = step != self.counted_step
        if fresh:
            self.prev_point = self.counted_step
            for code in quiet_codes:
                if self.held_at.get(code) != self.prev_point and self.prev_point >= 0:
                    self.held_streak[code] = 0
                    self.incidents.quiet(code)
        self.counted_step = step
        return fresh

    def _hold(self, code: str, step: int) -> int:
        """`code` holds at `step`: the number of consecutive logged points it has held, this one included,
        each step counted once however many records it came in."""
        last = self.held_at.get(code)
        if last != step:
            run = self.held_streak.get(code, 0) if last is not None and last == self.prev_point else 0
            self.held_streak[code] = run + 1
            self.held_at[code] = step
        return self.held_streak[code]

    def update(self, step: int, values: dict, tracks: dict[str, MetricTrack]) -> list[Alert]:
        raise NotImplementedError

    def new_segment(self) -> None:
        """A rollback: open incidents belong to the abandoned branch."""
        self.incidents.clear()
        self.counted_step = self.prev_point = -1
        self.held_at, self.held_streak = {}, {}

    def state_dict(self) -> dict:
        return {"incidents": self.incidents.state_dict(), "counted_step": self.counted_step,
                "prev_point": self.prev_point, "held_at": dict(self.held_at), "held_streak": dict(self.held_streak)}

    def load_state_dict(self, d: dict) -> None:
        self.incidents.load_state_dict(d.get("incidents", {}))
        self.counted_step = int(d.get("counted_step", -1))
        self.prev_point = int(d.get("prev_point", -1))
        self.held_at = {str(k): int(v) for k, v in d.get("held_at", {}).items()}
        self.held_streak = {str(k): int(v) for k, v in d.get("held_streak", {}).items()}

    def _alert(self, code: str, metric: str, step: int, severity: Severity, onset: int, message: str) -> Alert:
        return Alert(code=code, detector=self.name, metric=metric, step=step, severity=severity,
                     onset_step=min(onset, step), message=message)


class NonFiniteDetector(Detector):
    """NaN or +-Infinity: critical at once (NaN hidden by log filtering is a known trl failure)."""

    name = "non_finite"
    per_value = True

    def __init__(self, cfg: NonFiniteConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.only = set(cfg.metrics) if cfg.metrics is not None else None

    def update(self, step, values, tracks):
        out = []
        for metric, v in values.items():
            if v is None or (self.only is not None and metric not in self.only):
                continue
            if v - v != 0.0:  # true exactly for NaN and +-inf, and cheap
                if self.incidents.fire(metric, Severity.CRITICAL, metric, step):
                    out.append(self._alert("non_finite", metric, step, Severity.CRITICAL, step,
                                           f"{metric} = {v} at step {step}"))
            elif self.incidents.active:
                self.incidents.quiet(metric)
        return out


class BoundsDetector(Detector):
    """Fixed bounds with patience (truncated_fraction, a user's KL budget, ...)."""

    name = "bounds"
    per_value = True

    def __init__(self, cfg: BoundsConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.rules = list(cfg.rules)
        self.streak = [0] * len(self.rules)
        self.first = [-1] * len(self.rules)

    def update(self, step, values, tracks):
        out = []
        for i, rule in enumerate(self.rules):
            v = values.get(rule.metric)
            if v is None or v != v:
                continue
            outside = (rule.upper is not None and v > rule.upper) or (rule.lower is not None and v < rule.lower)
            if outside and rule.only_if_established_inside:
                t = tracks.get(rule.metric)
                est = t.established_level if t is not None else math.nan
                outside = est == est and not ((rule.upper is not None and est > rule.upper)
                                              or (rule.lower is not None and est < rule.lower))
            key = f"{rule.metric}#{i}"
            if not outside:
                self.streak[i] = 0
                self.incidents.quiet(key)
                continue
            if self.streak[i] == 0:
                self.first[i] = step
            self.streak[i] += 1
            if self.streak[i] >= rule.patience_steps:
                sev = Severity(rule.severity)
                if self.incidents.fire(key, sev, rule.metric, self.first[i]):
                    side = f"> {fmt(rule.upper)}" if rule.upper is not None and v > rule.upper else f"< {fmt(rule.lower)}"
                    out.append(self._alert("bound", rule.metric, step, sev, self.first[i],
                                           f"{rule.metric} = {fmt(v)} {side} for {self.streak[i]} steps"))
        return out

    def new_segment(self):
        super().new_segment()
        self.streak = [0] * len(self.rules)

    def state_dict(self):
        return {**super().state_dict(), "streak": list(self.streak), "first": list(self.first)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.streak = [int(x) for x in d["streak"]]
        self.first = [int(x) for x in d["first"]]


class SpikeDetector(Detector):
    """One value far from the rolling median in robust sigmas: a warning (one step is not a regime)."""

    name = "spike"

    def __init__(self, cfg: SpikeConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.metrics = list(cfg.metrics)
        self.threshold = cfg.threshold_sigma

    def update(self, step, values, tracks):
        out = []
        for metric in self.metrics:
            t = tracks.get(metric)
            if t is None or t.last_step != step or not t.ready:
                continue
            x = values[metric]
            r = (x - t.base_level) / t.base_scale
            if r > self.threshold or r < -self.threshold:
                if self.incidents.fire(metric, Severity.WARNING, metric, step):
                    out.append(self._alert(
                        "spike", metric, step, Severity.WARNING, step,
                        f"{metric} = {fmt(x)} is {r:+.1f} robust sigma from its rolling median {fmt(t.base_level)}"
                        f" (sigma {fmt(t.base_scale)}, threshold {fmt(self.threshold)})"))
            elif self.incidents.active:
                self.incidents.quiet(metric)
        return out


class ChangePointDetector(Detector):
    """Two-sided CUSUM on prewhitened robust residuals (kept in MetricTrack); h from the target ARL.

    Onset is the CUSUM's last zero crossing: the first step of the excursion that alarmed."""

    name = "change_point"

    def __init__(self, cfg: ChangePointConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.metrics = list(cfg.metrics)
        self.k = cfg.shift_sigma / 2.0
        self.h = pipeline_threshold(cfg.target_arl_steps, self.k)
        self.min_z = cfg.min_level_z
        self.min_rel = cfg.min_relative_change
        self.min_share = cfg.min_share_change
        self.watch_up = {m: cfg.directions.get(m, "both") != "down" for m in self.metrics}
        self.watch_down = {m: cfg.directions.get(m, "both") != "up" for m in self.metrics}

    def update(self, step, values, tracks):
        out = []
        h = self.h
        for metric in self.metrics:
            t = tracks.get(metric)
            if t is None or t.last_step != step or not t.ready:
                continue
            up = t.cusum_up > h and self.watch_up[metric] and t.z_long >= self.min_z
            down = t.cusum_down > h and self.watch_down[metric] and t.z_long <= -self.min_z
            # Materiality: on a very smooth stream the robust sigma is tiny and a shift of a fraction of
            # a percent (entropy 3.308 -> 3.323) scores z ~ 10; a change must also be a few percent
            # of the metric's level to be worth a person's attention; a share in [0, 1] that sits near 0
            # (truncated_fraction 0.01 -> 0.03) a few points in absolute terms.
            if (up or down) and abs(t.level - t.base_level) < max(
                    self.min_rel * abs(t.base_level), self.min_share if metric in SHARE_METRICS else 0.0):
                up = down = False
            if up or down:
                onset = t.onset_up if up else t.onset_down
                if self.incidents.fire(metric, Severity.WARNING, metric, onset):
                    out.append(self._alert(
                        "change_point", metric, step, Severity.WARNING, onset,
                        f"{metric} shifted {'up' if up else 'down'} since step {onset}: level {fmt(t.level)} vs "
                        f"baseline {fmt(t.base_level)} (z {t.z:+.1f}, CUSUM {fmt(t.cusum_up if up else t.cusum_down)}"
                        f" > h {fmt(h)})"))
                t.reset_cusum()
            elif self.incidents.active:
                self.incidents.quiet(metric)
        return out


class DriftDetector(Detector):
    """The level drifted beyond a ratio budget of the run's established level, for patience steps."""

    name = "drift"

    def __init__(self, cfg: DriftConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.rules = list(cfg.rules)
        self.patience = cfg.patience_steps
        self.streak = [0] * len(self.rules)
        self.judged: dict[int, int] = {}  # rule index -> the step it was last judged at

    def update(self, step, values, tracks):
        out = []
        for i, rule in enumerate(self.rules):
            t = tracks.get(rule.metric)
            if t is None or t.last_step != step or not t.ready or t.established_level != t.established_level:
                continue
            # each rule once per step: its metric may come in any record of the step
            if self.judged.get(i) == step:
                continue
            self.judged[i] = step
            denom = max(abs(t.established_level), t.established_scale)
            if not denom > 0:
                continue
            ratio = t.level / denom
            beyond = (rule.max_ratio is not None and ratio > rule.max_ratio) or (
                rule.min_ratio is not None and ratio < rule.min_ratio)
            key = rule.metric
            if not beyond:
                self.streak[i] = 0
                self.incidents.quiet(key)
                continue
            self.streak[i] += 1
            if self.streak[i] >= self.patience and self.incidents.fire(
                    key, Severity.WARNING, rule.metric, step - self.streak[i] + 1):
                budget = rule.max_ratio if rule.max_ratio is not None and ratio > rule.max_ratio else rule.min_ratio
                out.append(self._alert(
                    "drift", rule.metric, step, Severity.WARNING, step - self.streak[i] + 1,
                    f"{rule.metric} level {fmt(t.level)} is x{ratio:.3g} its established {fmt(t.established_level)}"
                    f" (budget x{fmt(budget)}) for {self.streak[i]} steps"))
        return out

    def new_segment(self):
        super().new_segment()
        self.streak = [0] * len(self.rules)

    def state_dict(self):
        return {**super().state_dict(), "streak": list(self.streak)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.streak = [int(x) for x in d["streak"]]
