"""The metric event of docs/METRICS.md, and parsing one JSON line into it.

Parsing never raises anything but BadEvent, whose message names the line and the reason.
NaN / Infinity / -Infinity are values, not errors; null means "not measured this step".
A step is an integer 0 <= step < 2**53; a metric name holds no control characters.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

# Steps are integers a float represents exactly (sinks, Prometheus and JSON readers hold them
# as floats); beyond 2**53 two steps can read as one.
MAX_STEP = 2**53
# The training knobs a worker reports as metrics (METRICS.md) and a policy decision may set:
# the one list of them in the code base (policies.decision re-exports it).
CONSTRAINT_NAMES = ("kl_coef", "clip_range", "lr")
SHOW_CHARS = 80  # a value quoted in a reason: a 5 MB string must not become a 5 MB journal line
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadEvent(ValueError):
    """A line that is not a valid metric event. `lineno` is 1-based (0 when unknown)."""

    def __init__(self, reason: str, lineno: int = 0):
        self.reason = reason
        self.lineno = lineno
        super().__init__(f"line {lineno}: {reason}" if lineno else reason)


@dataclass
class MetricEvent:
    step: int
    metrics: dict[str, float | None]
    time: float | None = None
    attempt: int | None = None
    extra: dict = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        return self.metrics.get(name)

    def to_dict(self) -> dict:
        d: dict = {"step": self.step}
        if self.time is not None:
            d["time"] = self.time
        d["metrics"] = dict(self.metrics)
        if self.attempt is not None:
            d["attempt"] = self.attempt
        return d

    def to_json(self) -> str:
        # allow_nan: METRICS.md spells non-finite values the Python json way.
        return json.dumps(self.to_dict(), allow_nan=True)


def starts_segment(last_step: int | None, last_attempt: int | None, ev: MetricEvent) -> bool:
    """Whether `ev` starts a new segment (a rollback or restart) after the event at `last_step`.

    A lower step does, and so does a higher `attempt` (a rollback to the step just before the last one
    logs that same step number again). An equal step of the same attempt does NOT: trainers write one
    step as several records (transformers' train and eval records, or a line logged twice), and those
    are merged into one step."""
    if last_step is None:
        return False
    if ev.step < last_step:
        return True
    return ev.attempt is not None and ev.attempt > (last_attempt or 0)


def _show(v) -> str:
    """repr(v), cut to SHOW_CHARS (hostile lines carry megabyte strings and 400-digit integers)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"an integer of {len(str(abs(v)))} digits"
    text = repr(v) if not isinstance(v, (dict, list)) else f"{type(v).__name__} of {len(v)} items"
    return text if len(text) <= SHOW_CHARS else f"{text[:SHOW_CHARS]}... ({len(text)} chars)"


def _number(name: str, v, lineno: int) -> float | None:
    if _CONTROL.search(name):
        raise BadEvent(f"metric name {_show(name)} contains a control character; names are printable text "
                       "(docs/METRICS.md)", lineno)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadEvent(f"metric {_show(name)} is {type(v).__name__} {_show(v)}, expected a number or null", lineno)
    try:
        return float(v)
    except OverflowError:  # a JSON integer beyond the float range (> ~1.8e308)
        raise BadEvent(f"metric {_show(name)} is an integer too large for a float", lineno) from None


def event_from_dict(obj, lineno: int = 0) -> MetricEvent:
    if not isinstance(obj, dict):
        raise BadEvent(f"expected a JSON object, got {type(obj).__name__}", lineno)
    if "step" not in obj:
        raise BadEvent("missing 'step'", lineno)
    step = obj["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        if isinstance(step, float) and step.is_integer() and step >= 0:
            step = int(step)
        else:
            raise BadEvent(f"'step' must be an integer >= 0, got {_show(step)}", lineno)
    if step >= MAX_STEP:
        raise BadEvent(f"'step' must be below 2**53 (exact as a float), got {_show(step)}", lineno)
    metrics = obj.get("metrics", {})
    if not isinstance(metrics, dict):
        raise BadEvent(f"'metrics' must be an object, got {type(metrics).__name__}", lineno)
    values = {str(k): _number(str(k), v, lineno) for k, v in metrics.items()}
    t = obj.get("time")
    if t is not None:
        if isinstance(t, int) and not isinstance(t, bool) and abs(t) > 1e300:
            t = math.inf  # beyond the float range: refused just below, not an OverflowError
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise BadEvent(f"'time' must be a finite number of seconds, got {_show(t)}", lineno)
        t = float(t)
    attempt = obj.get("attempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0):
        raise BadEvent(f"'attempt' must be an integer >= 0, got {_show(attempt)}", lineno)
    extra = {k: v for k, v in obj.items() if k not in ("step", "time", "metrics", "attempt")}
    return MetricEvent(step=step, metrics=values, time=t, attempt=attempt, extra=extra)


def parse_event_line(line: str | bytes, lineno: int = 0) -> MetricEvent:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadEvent(f"not UTF-8 ({e.reason} at byte {e.start})", lineno) from None
    text = line.strip()
    if not text:
        raise BadEvent("empty line", lineno)
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        msg = getattr(e, "msg", str(e))
        raise BadEvent(f"not JSON ({msg})", lineno) from None
    return event_from_dict(obj, lineno)
