"""RunHistory: the run as the live dashboard, W&B and the report display it.

One object records every metric event, alert, decision, checkpoint, state change and
restart of a run, in memory, and answers display queries (`snapshot`, `downsample`)
from any thread. It is a sink of the supervisor (orchestrator/sinks.py: on_event,
on_alert, on_decision, on_checkpoint, on_state, on_restart, close) and can be rebuilt
from a run directory (`RunHistory.from_run_dir`, reading via dashboards/report_run_dir.py).

Storage is columnar: per metric three typed arrays (step int64, segment int32, value
float64), 20 bytes per value and no Python float objects: 100,000 steps x 25 metrics is
~50 MB (bench/bench_dashboard.py measures 22 B per value with the live update buffer).
Points are appended in arrival order, so the points of one segment are contiguous in
every column: slicing a segment is O(1) and downsampling is O(n) numpy.

Segments: a step lower than or equal to the last one (or a new `attempt`) starts a new
segment. The points of earlier segments at steps >= the new segment's first step were
undone by the rollback: they are kept, and shown greyed ("rolled back").

Memory is bounded: metric names, alerts, decisions, states and the live update queue are
capped (the oldest list entries go first and are counted in `dropped`), and a metric
column longer than `max_points_per_metric` is thinned 2:1 in its oldest half with
min/max kept, so spikes survive. The full record stays on disk in metrics.jsonl.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Decision


@dataclass
class Segment:
    """A stretch of steps produced without going back.

    index: 0 for the first segment, +1 for each rollback or restart.
    start_step / last_step: first and latest step seen in it.
    attempt: the events' `attempt` field, when producers send it.
    rolled_back_from: steps >= this in this segment were undone by a later segment
        (None: nothing of it was rolled back).
    reason: why it started (the rollback decision or the restart reason), when known.
    """

    index: int
    start_step: int
    last_step: int
    attempt: int | None = None
    rolled_back_from: int | None = None
    reason: str = ""
    started: float = field(default_factory=time.time)


class MetricColumn:
    """The values of one metric, in arrival order, with where each segment starts."""

    __slots__ = ("steps", "segments", "values", "segment_starts", "last_segment", "nonfinite")

    def __init__(self) -> None:
        self.steps = array("q")
        self.segments = array("i")
        self.values = array("d")
        self.segment_starts: list[tuple[int, int]] = []  # (segment index, first position)
        self.last_segment = -1
        self.nonfinite = 0

    def append(self, step: int, segment: int, value: float) -> None:
        if segment != self.last_segment:
            self.segment_starts.append((segment, len(self.steps)))
            self.last_segment = segment
        self.steps.append(step)
        self.segments.append(segment)
        self.values.append(value)
        if not math.isfinite(value):
            self.nonfinite += 1

    def __len__(self) -> int:
        return len(self.steps)

    def thin_oldest_half(self) -> None:
        """Halve the oldest half of the column keeping each pair's extreme values, so
        memory stays bounded on endless runs while spikes and non-finite values survive."""
        n = len(self.steps)
        half = (n // 2) & ~3
        steps = np.frombuffer(self.steps, dtype=np.int64).copy()
        segs = np.frombuffer(self.segments, dtype=np.int32).copy()
        vals = np.frombuffer(self.values, dtype=np.float64).copy()
        keep_old = _minmax_indices(vals[:half], segs[:half], half // 2)
        keep = np.concatenate([keep_old, np.arange(half, n)])
        self.steps = array("q", steps[keep].tobytes())
        self.segments = array("i", segs[keep].tobytes())
        self.values = array("d", vals[keep].tobytes())
        self.segment_starts = []
        for pos, s in enumerate(self.segments):
            if not self.segment_starts or self.segment_starts[-1][0] != s:
                self.segment_starts.append((s, pos))
        self.last_segment = self.segment_starts[-1][0] if self.segment_starts else -1


def _minmax_indices(values: np.ndarray, segments: np.ndarray, max_points: int) -> np.ndarray:
    """Indices that keep the minimum and maximum of each of ~max_points/2 equal buckets
    (never mixing two segments in one bucket); non-finite points are always kept."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    out = [np.flatnonzero(~np.isfinite(values))]
    bounds = np.flatnonzero(np.diff(segments)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    for a, b in zip(starts, ends):
        budget = max(2, int(max_points * (b - a) / n))
        out.append(a + _bucket_minmax(values[a:b], budget))
    return np.unique(np.concatenate(out))


def _bucket_minmax(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of the first, the last, and the min and max of each bucket (finite values)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    width = math.ceil(n / buckets)
    padded = np.full(buckets * width, np.nan)
    padded[:n] = values
    padded[~np.isfinite(padded)] = np.nan
    grid = padded.reshape(buckets, width)
    has_value = ~np.all(np.isnan(grid), axis=1)
    rows = np.flatnonzero(has_value)
    lo = np.nanargmin(grid[rows], axis=1) + rows * width
    hi = np.nanargmax(grid[rows], axis=1) + rows * width
    return np.unique(np.concatenate([[0, n - 1], lo, hi]))


def json_number(v: float) -> float | str:
    """JSON has no NaN/Infinity: display payloads carry them as strings."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return float(f"{v:.6g}")


def _text(v) -> str:
    """State/health/outcome values may be str Enums, plain strings or dicts."""
    if v is None:
        return ""
    return str(getattr(v, "value", v))


class RunHistory:
    """Everything about one run, for display. Thread-safe; every method is cheap."""

    def __init__(
        self,
        *,
        max_metrics: int = 256,
        max_items: int = 20_000,
        max_points_per_metric: int = 500_000,
        max_updates: int = 5_000,
    ):
        """max_metrics: distinct metric names kept (a stream inventing names is cut off here).
        max_items: alerts, decisions, states, restarts, notes each kept (newest).
        max_points_per_metric: above this a column is thinned 2:1 in its oldest half
            (500,000 x 20 B = 10 MB per metric at most).
        max_updates: live updates buffered for /api/stream clients (a slower client resyncs).
        """
        self.max_metrics = max_metrics
        self.max_points_per_metric = max_points_per_metric
        self._lock = threading.RLock()
        self.columns: dict[str, MetricColumn] = {}
        self.segments: list[Segment] = []
        self.alerts: deque[dict] = deque(maxlen=max_items)
        self.decisions: deque[dict] = deque(maxlen=max_items)
        self.checkpoints: dict[int, dict] = {}
        self.states: deque[dict] = deque(maxlen=max_items)
        self.restarts: deque[dict] = deque(maxlen=max_items)
        self.notes: deque[dict] = deque(maxlen=max_items)
        self.constraint_changes: deque[dict] = deque(maxlen=max_items)
        self.dropped = {"metrics": 0, "alerts": 0, "decisions": 0}
        self.event_count = 0
        self.last_event_time: float | None = None
        self.closed = False
        self.problems: list[str] = []  # unreadable lines of the run directory it was loaded from
        self._pending_segment_reason = ""
        self._updates: deque[tuple[int, str, dict]] = deque(maxlen=max_updates)
        # Wall clock for the rows' "time"; the run-directory loader sets it to each line's time.
        self.clock = time.time
        self._seq = 0

    # ---------------------------------------------------------------- sink methods

    def on_event(self, event: MetricEvent) -> None:
        with self._lock:
            seg = self._segment_for(event)
            self.event_count += 1
            self.last_event_time = event.time if event.time is not None else self.clock()
            shown: dict[str, float] = {}
            columns, step, index, cap = self.columns, event.step, seg.index, self.max_points_per_metric
            for name, value in event.metrics.items():
                if value is None:
                    continue
                col = columns.get(name)
                if col is None:
                    if len(columns) >= self.max_metrics:
                        self.dropped["metrics"] += 1
                        continue
                    col = columns[name] = MetricColumn()
                value = float(value)
                col.append(step, index, value)
                if len(col.steps) > cap:
                    col.thin_oldest_half()
                shown[name] = value  # NaN/inf: the stream's encoder spells them as strings
            self._push("event", {"step": step, "segment": index, "metrics": shown})

    def on_alert(self, alert: Alert) -> None:
        with self._lock:
            row = alert.to_dict() if hasattr(alert, "to_dict") else dict(alert)
            row["segment"] = self._current_segment_index()
            row["time"] = self.clock()
            if len(self.alerts) == self.alerts.maxlen:
                self.dropped["alerts"] += 1
            self.alerts.append(row)
            self._push("alert", row)

    def on_decision(self, decision: Decision, phase: str = "", outcome=None, decision_id: str | None = None) -> None:
        """Record one phase of a decision: "decided", then done/failed/skipped/denied with an
        outcome (orchestrator/sinks.py). Calls for the same decision update one row, so the
        table shows its latest outcome. decision_id: the journal's id, when known."""
        with self._lock:
            d = decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
            key = (d["action"], d["step"], d.get("target_step"), d.get("reason", ""))
            row = next((r for r in reversed(self.decisions)
                        if (decision_id and r["id"] == decision_id) or r["_key"] == key), None)
            is_new = row is None
            if row is None:
                if len(self.decisions) == self.decisions.maxlen:
                    self.dropped["decisions"] += 1
                row = dict(d, _key=key, id=decision_id or self._next_decision_id(),
                           segment=self._current_segment_index(), time=self.clock(), phases=[])
                self.decisions.append(row)
            row["phase"] = _text(phase)
            if isinstance(outcome, dict) and set(outcome) <= {"message"}:
                outcome = outcome.get("message", "")  # the journal wraps a plain outcome as {"message": ...}
            row["outcome"] = outcome if isinstance(outcome, (dict, list)) else _text(outcome)
            row["phases"].append({"phase": row["phase"], "outcome": row["outcome"], "time": self.clock()})
            if d["action"] == "rollback":
                self._pending_segment_reason = f"rollback to step {d.get('target_step')}: {d.get('reason', '')}"
            if is_new and d.get("params") and d["action"] in ("tighten", "relax", "rollback"):
                # The stream's kl_coef/clip_range/lr metrics show what was in force; these
                # change points mark on the constraint chart which decision moved them.
                for name, value in d["params"].items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.constraint_changes.append({"step": d["step"], "name": name, "value": float(value),
                                                        "action": d["action"], "mode": d.get("mode", "auto")})
            self._push("decision", self._public(row))

    def on_checkpoint(self, step: int, path, health) -> None:
        with self._lock:
            row = self.checkpoints.get(step)
            if row is None:
                row = self.checkpoints[step] = {"step": int(step), "path": str(path), "health": "",
                                                "segment": self._current_segment_index(), "time": self.clock()}
            row["path"] = str(path) if path else row["path"]
            row["health"] = _text(health)
            self._push("checkpoint", dict(row))

    def on_state(self, state, reason: str = "") -> None:
        with self._lock:
            row = {"state": _text(state), "reason": reason, "step": self._last_step(), "time": self.clock()}
            self.states.append(row)
            self._push("state", row)

    def on_restart(self, reason) -> None:
        with self._lock:
            row = {"reason": _text(reason), "step": self._last_step(), "time": self.clock()}
            self.restarts.append(row)
            self._pending_segment_reason = f"restart: {row['reason']}"
            self._push("restart", row)

    def on_note(self, kind: str, text: str, step: int | None = None) -> None:
        """Something worth a line in the timeline that is not a sink call: an operator's
        command or a supervisor note, read from the journal."""
        with self._lock:
            row = {"kind": kind, "text": text, "step": step if step is not None else self._last_step(),
                   "time": self.clock()}
            self.notes.append(row)
            self._push("note", row)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._push("closed", {})

    # ---------------------------------------------------------------- segments

    def _segment_for(self, event: MetricEvent) -> Segment:
        cur = self.segments[-1] if self.segments else None
        new_attempt = (cur is not None and event.attempt is not None and cur.attempt is not None
                       and event.attempt != cur.attempt)
        if cur is not None and event.step > cur.last_step and not new_attempt:
            cur.last_step = event.step
            return cur
        seg = Segment(index=len(self.segments), start_step=event.step, last_step=event.step,
                      attempt=event.attempt, reason=self._pending_segment_reason,
                      started=event.time if event.time is not None else self.clock())
        self._pending_segment_reason = ""
        for old in self.segments:
            if old.last_step >= event.step:
                old.rolled_back_from = min(event.step, old.rolled_back_from if old.rolled_back_from
                                           is not None else event.step)
        self.segments.append(seg)
        if cur is not None:
            self._push("segment", asdict(seg))
        return seg

    def _current_segment_index(self) -> int:
        return self.segments[-1].index if self.segments else 0

    def _last_step(self) -> int | None:
        return self.segments[-1].last_step if self.segments else None

    def _next_decision_id(self) -> str:
        return f"d{len(self.decisions) + self.dropped['decisions']}"

    # ---------------------------------------------------------------- live updates

    def _push(self, kind: str, data: dict) -> None:
        self._seq += 1
        self._updates.append((self._seq, kind, data))

    @property
    def seq(self) -> int:
        return self._seq

    def updates_since(self, seq: int) -> tuple[int, list[tuple[int, str, dict]] | None]:
        """(latest seq, updates after `seq`), or (latest seq, None) when the client fell
        behind the buffer, or comes from a previous server, and must reload /api/history."""
        with self._lock:
            if seq > self._seq:  # a client of an earlier server (the supervisor restarted)
                return self._seq, None
            if seq == self._seq:
                return self._seq, []
            if not self._updates or self._updates[0][0] > seq + 1:
                return self._seq, None
            return self._seq, [u for u in self._updates if u[0] > seq]

    # ---------------------------------------------------------------- display queries

    def metric_names(self) -> list[str]:
        with self._lock:
            return list(self.columns)

    def downsample(self, metric: str, max_points: int = 1000) -> dict:
        """The metric for display in <= ~max_points points: per segment, split into the
        kept part and the rolled-back part; bucket min/max so spikes survive; non-finite
        values listed separately (they are the most important points, never thinned)."""
        if max_points < 4:
            raise ValueError(f"max_points must be >= 4, got {max_points}")
        with self._lock:
            col = self.columns.get(metric)
            if col is None:
                raise KeyError(f"no metric {metric!r}; known: {', '.join(self.columns) or 'none yet'}")
            n = len(col)
            steps = np.frombuffer(col.steps, dtype=np.int64, count=n).copy()
            vals = np.frombuffer(col.values, dtype=np.float64, count=n).copy()
            starts = list(col.segment_starts)
            rolled_from = {s.index: s.rolled_back_from for s in self.segments}
        parts = []
        bounds = [pos for _, pos in starts[1:]] + [n]
        for (seg, a), b in zip(starts, bounds):
            cut = rolled_from.get(seg)
            mid = b if cut is None else a + int(np.searchsorted(steps[a:b], cut, side="left"))
            if mid > a:
                parts.append((seg, False, a, mid))
            if b > mid:
                parts.append((seg, True, mid, b))
        series = []
        for seg, rolled, a, b in parts:
            budget = max(4, int(max_points * (b - a) / max(n, 1)))
            v = vals[a:b]
            idx = _bucket_minmax(v, budget)
            idx = idx[np.isfinite(v[idx])]
            series.append({"segment": seg, "rolled_back": rolled,
                           "steps": steps[a:b][idx].tolist(),
                           "values": [float(f"{x:.6g}") for x in v[idx].tolist()]})
        bad = np.flatnonzero(~np.isfinite(vals))
        nonfinite = [{"step": int(steps[i]), "value": json_number(float(vals[i]))} for i in bad[:200]]
        return {"count": n, "series": series, "nonfinite": nonfinite, "nonfinite_count": int(len(bad))}

    def snapshot(self, max_points: int = 1000, max_items: int = 500) -> dict:
        """Everything the dashboard page needs, JSON-safe and bounded in size."""
        with self._lock:
            names = list(self.columns)
            seq = self._seq
            out = {
                "seq": seq,
                "max_points": max_points,
                "run": self.summary(),
                "segments": [asdict(s) for s in self.segments[-max_items:]],
                "alerts": list(self.alerts)[-max_items:],
                "alert_count": len(self.alerts) + self.dropped["alerts"],
                "decisions": [self._public(r) for r in list(self.decisions)[-max_items:]],
                "checkpoints": [dict(r) for r in sorted(self.checkpoints.values(), key=lambda r: r["step"])],
                "states": list(self.states)[-max_items:],
                "restarts": list(self.restarts)[-max_items:],
                "notes": list(self.notes)[-max_items:],
                "constraint_changes": list(self.constraint_changes)[-max_items:],
            }
        out["metrics"] = {name: self.downsample(name, max_points) for name in names}
        return out

    def summary(self) -> dict:
        with self._lock:
            return {
                "state": self.states[-1]["state"] if self.states else ("closed" if self.closed else ""),
                "step": self._last_step(),
                "segment": self._current_segment_index(),
                "events": self.event_count,
                "last_event_time": self.last_event_time,
                "dropped": dict(self.dropped),
                "closed": self.closed,
            }

    @staticmethod
    def _public(row: dict) -> dict:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    def series(self, metric: str, include_rolled_back: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The full column (steps, values, rolled-back mask): for the report's plots."""
        with self._lock:
            col = self.columns[metric]
            n = len(col)
            steps = np.frombuffer(col.steps, dtype=np.int64, count=n).copy()
            segs = np.frombuffer(col.segments, dtype=np.int32, count=n).copy()
            vals = np.frombuffer(col.values, dtype=np.float64, count=n).copy()
            cut = np.array([s.rolled_back_from if s.rolled_back_from is not None else np.iinfo(np.int64).max
                            for s in self.segments] or [0], dtype=np.int64)
        rolled = steps >= cut[segs] if len(self.segments) else np.zeros(n, dtype=bool)
        if not include_rolled_back:
            return steps[~rolled], vals[~rolled], rolled[~rolled]
        return steps, vals, rolled

    # ---------------------------------------------------------------- from disk

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **kwargs) -> RunHistory:
        """Rebuild the history of a finished or running run from its files."""
        from rlguard.dashboards.report_run_dir import load_run_dir  # here: report_run_dir imports this module

        history = cls(**kwargs)
        load_run_dir(history, Path(run_dir))
        return history
