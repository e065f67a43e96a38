"""MonitorStack: one metric event in, the alerts of every detector out.

Per event: (1) a step lower than the last one, or a higher `attempt`, starts a new segment (a
rollback or restart; `events.starts_segment`); a record of the SAME step and attempt is more of
that step (train + eval records, a line logged twice): only its metrics not yet seen at this step
are taken, and a record with none is ignored, so a stream whose every line appears twice gives
the alerts of the original. A new segment: rolling windows and open incidents restart; the run's established scale stays, and
so do the values recorded before both the new first step and the onset of any incident open at
the rollback (the healthy history the rollback target shares), so a recurrence is judged at once;
(2) each finite value of a tracked metric updates its shared MetricTrack once (non-finite
values never enter a baseline, nor do exact-0.0 entropy / perplexity placeholders); (3) the detectors run in priority order: non-finite, bounds,
spike, change point, drift, compound patterns, eval shape. Stall is checked separately with
`check_stall(now)` because it is about the absence of events.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable

from rlguard.monitors.alerts import Alert
from rlguard.monitors.calibration import pipeline_threshold
from rlguard.monitors.config import MonitorConfig
from rlguard.monitors.detectors import (
    BoundsDetector,
    ChangePointDetector,
    Detector,
    DriftDetector,
    NonFiniteDetector,
    SpikeDetector,
)
from rlguard.monitors.events import MetricEvent, starts_segment
from rlguard.monitors.patterns import DIVERSITY, EXPLOSIVE, EvalShapeDetector, PatternDetector
from rlguard.monitors.regimes import REGIME_METRICS, RegimeDetector
from rlguard.monitors.stall import StallDetector
from rlguard.monitors.track import MetricTrack

STATE_VERSION = 2
PLACEHOLDER_ZERO = frozenset({"entropy", "perplexity", "ref_perplexity", "eval_perplexity"})


class MonitorStack:
    def __init__(self, cfg: MonitorConfig | None = None, clock: Callable[[], float] = _time.time):
        self.cfg = cfg = cfg if cfg is not None else MonitorConfig()
        self.clock = clock
        r = cfg.incident.rearm_steps
        self.detectors: list[Detector] = []
        if cfg.non_finite.enabled:
            self.detectors.append(NonFiniteDetector(cfg.non_finite, r))
        if cfg.bounds.enabled and cfg.bounds.rules:
            self.detectors.append(BoundsDetector(cfg.bounds, r))
        tracked: set[str] = set()
        if cfg.spike.enabled:
            self.detectors.append(SpikeDetector(cfg.spike, r))
            tracked |= set(cfg.spike.metrics)
        if cfg.change_point.enabled:
            self.detectors.append(ChangePointDetector(cfg.change_point, r))
            tracked |= set(cfg.change_point.metrics)
        if cfg.drift.enabled:
            self.detectors.append(DriftDetector(cfg.drift, r))
            tracked |= {rule.metric for rule in cfg.drift.rules}
        if cfg.patterns.enabled:
            self.detectors.append(PatternDetector(cfg.patterns, r))
            tracked |= {"reward", "kl", "kl_seq", "response_length", "truncated_fraction", *DIVERSITY, *EXPLOSIVE}
        if cfg.regimes.enabled:
            self.detectors.append(RegimeDetector(cfg.regimes, r))
            tracked |= set(REGIME_METRICS)
        if cfg.eval_shape.enabled:
            self.detectors.append(EvalShapeDetector(cfg.eval_shape, r))
        self.tracked = tracked
        self.stall = StallDetector(cfg.stall)
        self.tracks: dict[str, MetricTrack] = {}
        self.last_step: int | None = None
        self.last_attempt: int | None = None
        self.step_values: dict[str, float | None] = {}  # the values taken at last_step, all its records
        self.segments = 0
        self.events = 0
        cp = cfg.change_point
        self._track_args = dict(k=cp.shift_sigma / 2.0, clip=cp.clip_sigma, establish_steps=cfg.drift.establish_steps,
                                h=pipeline_threshold(cp.target_arl_steps, cp.shift_sigma / 2.0))

    def _track(self, name: str) -> MetricTrack:
        t = self.tracks.get(name)
        if t is None:
            t = self.tracks[name] = MetricTrack(name, self.cfg.track, **self._track_args)
        return t

    def open_incidents(self) -> dict[str, int]:
        """"detector/metric" -> onset step of every incident raised and not yet recovered (closed
        after `incident.rearm_steps` quiet steps); several incidents on one key: the earliest onset.
        The policy engine escalates a persisting warning only while its incident is open here."""
        out: dict[str, int] = {}
        for d in self.detectors:
            for metric, onset in d.incidents.open().items():
                key = f"{d.name}/{metric}"
                if key not in out or onset < out[key]:
                    out[key] = onset
        return out

    def new_segment(self, first_step: int | None = None) -> None:
        """A rollback or restart to `first_step`: the values recorded before both that step and the
        onset of any open incident are the healthy history the new segment is judged against."""
        self.segments += 1
        healthy_before = first_step
        if first_step is not None:
            onsets = [o for o in self.open_incidents().values() if o >= 0]
            healthy_before = min([first_step, *onsets])
        for t in self.tracks.values():
            t.new_segment(healthy_before)
        for d in self.detectors:
            d.new_segment()

    def update(self, event: MetricEvent) -> list[Alert]:
        """Feed one event (in step order); returns the alerts it raises, highest priority first."""
        step = event.step
        values = event.metrics
        fresh_step = True
        if starts_segment(self.last_step, self.last_attempt, event):
            self.new_segment(step)
        elif step == self.last_step:
            fresh_step = False
            values = {k: v for k, v in values.items() if k not in self.step_values}
            if not values:  # the same record again: nothing new
                return []
        self.step_values = {**self.step_values, **values} if not fresh_step else dict(values)
        self.last_step = step
        if event.attempt is not None:
            self.last_attempt = event.attempt
        self.events += 1
        tracked = self.tracked
        pushed = False
        for name, v in values.items():
            # Exact 0.0 entropy / perplexity are placeholders (step 1 of many trainers' logs), never a
            # measurement: a sampling policy has entropy > 0 and perplexity >= 1.
            if v is not None and v - v == 0.0 and name in tracked and not (v == 0.0 and name in PLACEHOLDER_ZERO):
                t = self.tracks.get(name) or self._track(name)
                t.push(step, v)
                pushed = True
        alerts: list[Alert] = []
        for d in self.detectors:
            if d.per_value:  # judges the record's own values: a later record of the step adds only its new ones
                found = d.update(step, values, self.tracks)
            elif fresh_step or pushed:  # judges the tracks: again only when this record moved one
                found = d.update(step, self.step_values, self.tracks)
            else:
                continue
            if found:
                alerts.extend(found)
        self.stall.observe(step, event.time if event.time is not None else self.clock())
        return alerts

    def check_stall(self, now: float | None = None) -> list[Alert]:
        """Alerts when no event came for too long; `now` is event time in replay, wall clock live."""
        return self.stall.check(self.clock() if now is None else now)

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "last_step": self.last_step,
            "last_attempt": self.last_attempt,
            "step_values": dict(self.step_values),
            "segments": self.segments,
            "events": self.events,
            "tracks": {n: t.state_dict() for n, t in self.tracks.items()},
            "detectors": {d.name: d.state_dict() for d in self.detectors},
            "stall": self.stall.state_dict(),
        }

    def load_state_dict(self, d: dict) -> None:
        if d.get("version") not in (1, STATE_VERSION):  # v1 lacks the steps of the history: derived
            raise ValueError(f"monitor state version {d.get('version')!r} is not {STATE_VERSION}: "
                             "start the monitors fresh (they re-warm in a few dozen steps)")
        self.last_step = d["last_step"]
        self.last_attempt = d.get("last_attempt")
        self.step_values = dict(d.get("step_values", {}))
        self.segments = int(d["segments"])
        self.events = int(d["events"])
        self.tracks = {}
        for name, td in d["tracks"].items():
            self._track(name).load_state_dict(td)
        for det in self.detectors:
            if det.name in d["detectors"]:
                det.load_state_dict(d["detectors"][det.name])
        self.stall.load_state_dict(d["stall"])
