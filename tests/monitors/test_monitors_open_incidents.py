"""MonitorStack.open_incidents(), the change-point materiality floor, and placeholder zeros."""

from __future__ import annotations

import random

from rlguard.monitors.config import MonitorConfig
from rlguard.monitors.events import MetricEvent
from rlguard.monitors.stack import MonitorStack


def _smooth_entropy(n: int, shift_at: int, new_level: float, seed: int = 0) -> list[MetricEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        level = 3.308 if i < shift_at else new_level
        out.append(MetricEvent(step=i + 1, metrics={"entropy": level + 0.0005 * rng.gauss(0, 1)}))
    return out


def _codes(stack: MonitorStack, events) -> list[tuple[str, str]]:
    return [(a.code, a.metric) for ev in events for a in stack.update(ev)]


def test_tiny_shift_on_a_smooth_stream_is_not_material():
    events = _smooth_entropy(160, 100, 3.323)  # +0.45 %: z ~ 10 against a sigma of 0.0005
    assert ("change_point", "entropy") not in _codes(MonitorStack(), events)
    cfg = MonitorConfig()
    cfg.change_point.min_relative_change = 0.0  # without the floor the same stream alarms
    assert ("change_point", "entropy") in _codes(MonitorStack(cfg), events)


def test_material_shift_on_a_smooth_stream_is_reported():
    events = _smooth_entropy(160, 100, 3.6)  # +9 %
    assert ("change_point", "entropy") in _codes(MonitorStack(), events)


def test_open_incidents_open_on_alert_and_close_after_rearm_steps():
    stack = MonitorStack()
    rearm = stack.cfg.incident.rearm_steps
    for s in range(1, 6):
        stack.update(MetricEvent(step=s, metrics={"reward": 1.0}))
    assert stack.open_incidents() == {}
    stack.update(MetricEvent(step=6, metrics={"reward": float("nan")}))
    assert stack.open_incidents() == {"non_finite/reward": 6}
    for s in range(7, 7 + rearm - 1):
        stack.update(MetricEvent(step=s, metrics={"reward": 1.0}))
    assert stack.open_incidents() == {"non_finite/reward": 6}, "still open during the quiet countdown"
    stack.update(MetricEvent(step=7 + rearm - 1, metrics={"reward": 1.0}))
    assert stack.open_incidents() == {}


def test_open_incidents_survive_state_round_trip_and_clear_on_rollback():
    stack = MonitorStack()
    stack.update(MetricEvent(step=1, metrics={"kl": float("inf")}))
    restored = MonitorStack()
    restored.load_state_dict(stack.state_dict())
    assert restored.open_incidents() == {"non_finite/kl": 1}
    # The same step again in the same attempt is more of that step (a trainer's second record)...
    restored.update(MetricEvent(step=1, metrics={"kl": 0.0}))
    assert restored.open_incidents() == {"non_finite/kl": 1}
    # ...while a new attempt logging it is a rollback: the branch is abandoned.
    restored.update(MetricEvent(step=1, metrics={"kl": 0.0}, attempt=1))
    assert restored.open_incidents() == {}


def test_zero_entropy_placeholders_never_enter_the_baseline():
    stack = MonitorStack()
    stack.update(MetricEvent(step=1, metrics={"entropy": 0.0, "perplexity": 0.0, "kl": 0.0}))
    assert "entropy" not in stack.tracks and "perplexity" not in stack.tracks
    assert stack.tracks["kl"].n_total == 1  # KL is exactly 0 at step 1 for real


def test_version_1_state_still_loads():
    stack = MonitorStack()
    for s in range(1, 20):
        stack.update(MetricEvent(step=s, metrics={"reward": 1.0 + 0.01 * (s % 3), "kl": float("nan") if s == 19 else 0.1}))
    d = stack.state_dict()
    d["version"] = 1
    for td in d["tracks"].values():
        del td["hist_steps"], td["carried"]
    for det in d["detectors"].values():
        det["incidents"] = {k: v[:2] for k, v in det.get("incidents", {}).items()}
    restored = MonitorStack()
    restored.load_state_dict(d)
    assert restored.tracks["reward"].hist_steps[-1] == 19
    assert list(restored.open_incidents()) == ["non_finite/kl"]
