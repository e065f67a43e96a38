"""RunHistory: segments and rollbacks, min/max-preserving downsampling, bounded memory,
the live update queue, decisions merged across phases, and the sink protocol."""

from __future__ import annotations

import math
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard.dashboards.history import RunHistory, _bucket_minmax
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.sinks import RunSink, SinkFanout
from rlguard.policies.decision import Action, Decision


def _ev(step: int, **metrics) -> MetricEvent:
    return MetricEvent(step=step, metrics=metrics)


def test_it_is_a_run_sink_the_supervisor_fanout_can_call():
    h = RunHistory()
    assert isinstance(h, RunSink)
    fan = SinkFanout([h])
    fan.on_event(_ev(0, reward=1.0))
    fan.on_decision(Decision(Action.NOTIFY, 0, "look"), "decided", "")
    fan.on_checkpoint(0, "/r/c", "pending")
    fan.on_state("running")
    fan.on_restart("worker exited with 137")
    fan.close()
    assert fan.error_total == 0
    assert h.closed and h.restarts[-1]["reason"] == "worker exited with 137"


def test_steps_going_back_start_segments_and_grey_out_what_was_undone():
    h = RunHistory()
    for s in range(0, 50):
        h.on_event(_ev(s, kl=0.01))
    h.on_decision(Decision(Action.ROLLBACK, 49, "kl spike", target_step=30), "decided", "")
    for s in range(31, 60):
        h.on_event(_ev(s, kl=0.02))
    for s in range(21, 40):  # second rollback, further back
        h.on_event(_ev(s, kl=0.03))
    assert [(s.start_step, s.last_step, s.rolled_back_from) for s in h.segments] == \
        [(0, 49, 21), (31, 59, 21), (21, 39, None)]
    assert h.segments[1].reason == "rollback to step 30: kl spike"
    steps, values, rolled = h.series("kl")
    assert not rolled[(steps < 21)].any()
    assert rolled[(values == 0.02)].all()  # the whole second attempt was undone
    assert not rolled[(values == 0.03)].any()
    kept_steps, _, _ = h.series("kl", include_rolled_back=False)
    assert list(kept_steps) == list(range(0, 21)) + list(range(21, 40))


def test_a_new_attempt_at_a_higher_step_is_a_new_segment_without_undoing_anything():
    h = RunHistory()
    h.on_event(MetricEvent(step=0, metrics={"kl": 0.0}, attempt=0))
    h.on_event(MetricEvent(step=1, metrics={"kl": 0.0}, attempt=0))
    h.on_event(MetricEvent(step=5, metrics={"kl": 0.0}, attempt=1))
    assert [(s.index, s.attempt, s.rolled_back_from) for s in h.segments] == [(0, 0, None), (1, 1, None)]


def test_downsample_keeps_extremes_and_non_finite_values_and_stays_bounded():
    h = RunHistory()
    rng = np.random.default_rng(0)
    values = rng.normal(size=20_000)
    values[7_777] = 40.0
    values[12_345] = -40.0
    values[3_000] = math.nan
    values[3_001] = math.inf
    for s, v in enumerate(values):
        h.on_event(_ev(s, reward=float(v)))
    d = h.downsample("reward", 200)
    (series,) = d["series"]
    assert len(series["steps"]) <= 200
    assert series["steps"] == sorted(series["steps"])
    assert max(series["values"]) == 40.0 and min(series["values"]) == -40.0
    assert d["nonfinite"] == [{"step": 3000, "value": "NaN"}, {"step": 3001, "value": "Infinity"}]
    assert d["count"] == 20_000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=400),
       st.integers(4, 64))
def test_bucket_minmax_always_keeps_the_global_extremes(values, max_points):
    arr = np.array(values, dtype=float)
    idx = _bucket_minmax(arr, max_points)
    assert len(idx) <= max(max_points, len(arr)) and list(idx) == sorted(set(idx.tolist()))
    finite = arr[np.isfinite(arr)]
    if len(finite):
        kept = arr[idx]
        assert np.nanmax(kept) == finite.max() and np.nanmin(kept) == finite.min()


def test_memory_stays_bounded_by_thinning_old_points_but_keeps_spikes():
    h = RunHistory(max_points_per_metric=1000)
    for s in range(10_000):
        h.on_event(_ev(s, kl=100.0 if s == 1234 else 0.1 * math.sin(s), reward=math.nan if s == 2000 else 1.0))
    assert len(h.columns["kl"]) <= 1000
    steps, values, _ = h.series("kl")
    assert 100.0 in values and steps[-1] == 9999
    assert math.isnan(h.series("reward")[1][list(h.series("reward")[0]).index(2000)])
    assert h.downsample("kl", 100)["count"] == len(h.columns["kl"])


def test_metric_names_alerts_and_updates_are_capped_and_counted():
    h = RunHistory(max_metrics=3, max_items=5, max_updates=10)
    h.on_event(_ev(0, a=1.0, b=1.0, c=1.0, d=1.0, e=None))
    assert h.metric_names() == ["a", "b", "c"] and h.dropped["metrics"] == 1
    for i in range(12):
        h.on_alert(Alert("spike", "s", "a", i, Severity.WARNING, i, f"alert {i}"))
    assert len(h.alerts) == 5 and h.dropped["alerts"] == 7
    assert h.snapshot()["alert_count"] == 12
    assert h.updates_since(0)[1] is None  # fell behind the 10-update buffer: reload
    seq, updates = h.updates_since(h.seq - 2)
    assert seq == h.seq and [u[1] for u in updates] == ["alert", "alert"]
    assert h.updates_since(h.seq) == (h.seq, [])
    assert h.updates_since(h.seq + 100)[1] is None  # a client of a previous server: reload


def test_decision_phases_update_one_row_and_tightening_is_a_constraint_change():
    h = RunHistory()
    h.on_event(_ev(10, kl=0.2))
    d = Decision(Action.TIGHTEN, 10, "kl above 0.15", params={"kl_coef": 0.1, "clip_range": 0.1})
    h.on_decision(d, "decided", "")
    h.on_decision(d, "done", "kl_coef=0.1 clip_range=0.1 at step 11")
    (row,) = h.decisions
    assert row["phase"] == "done" and row["outcome"] == "kl_coef=0.1 clip_range=0.1 at step 11"
    assert [p["phase"] for p in row["phases"]] == ["decided", "done"]
    assert [(c["name"], c["value"]) for c in h.constraint_changes] == [("kl_coef", 0.1), ("clip_range", 0.1)]
    h.on_decision(Decision(Action.HALT, 12, "budget"), "decided", "", decision_id="d-000031")
    h.on_decision(Decision(Action.HALT, 12, "budget"), "done", {"message": "worker stopped"},
                  decision_id="d-000031")
    assert h.decisions[-1]["id"] == "d-000031" and h.decisions[-1]["outcome"] == "worker stopped"


def test_checkpoint_health_changes_update_the_same_checkpoint():
    h = RunHistory()
    h.on_checkpoint(100, "/r/checkpoints/step-000100", "pending")
    h.on_checkpoint(100, "/r/checkpoints/step-000100", "healthy")
    assert list(h.checkpoints.values()) == [{"step": 100, "path": "/r/checkpoints/step-000100",
                                             "health": "healthy", "segment": 0,
                                             "time": h.checkpoints[100]["time"]}]


def test_concurrent_writer_and_readers_do_not_break_each_other():
    h = RunHistory()
    errors: list[BaseException] = []

    def write():
        try:
            for s in range(3000):
                h.on_event(_ev(s % 1500, kl=float(s), reward=1.0))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    while t.is_alive():
        snap = h.snapshot(64)
        for m in snap["metrics"].values():
            assert sum(len(s["steps"]) for s in m["series"]) <= 64 + 8
    t.join()
    assert not errors
    assert len(h.segments) == 2 and h.event_count == 3000
