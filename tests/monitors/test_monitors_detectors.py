"""Scripted sequences -> expected alert code, severity and step, per detector."""

from __future__ import annotations

import math

import pytest

from rlguard.monitors.alerts import Severity
from rlguard.monitors.config import MonitorConfig, monitor_config_from_dict
from rlguard.monitors.stack import MonitorStack
from tests.monitors.monitor_streams import collapse, events, feed, healthy_stream, ramp


def critical(alerts):
    return [a for a in alerts if a.severity is Severity.CRITICAL]


def test_healthy_stream_raises_no_critical_alert():
    alerts = feed(MonitorStack(), events(healthy_stream(400, seed=1, extra=("entropy", "distinct_2"))))
    assert critical(alerts) == []


def test_nan_is_critical_at_once_and_one_alert_per_incident():
    rows = healthy_stream(80)
    for i in (40, 41, 42):
        rows[i]["reward"] = math.nan
    rows[70]["reward"] = math.inf  # after 10+ finite steps: a new incident
    alerts = [a for a in feed(MonitorStack(), events(rows)) if a.code == "non_finite"]
    assert [(a.step, a.metric, a.severity) for a in alerts] == [
        (41, "reward", Severity.CRITICAL), (71, "reward", Severity.CRITICAL)]
    assert "nan" in alerts[0].message.lower() and alerts[0].onset_step == 41


def test_bound_with_patience_and_user_kl_budget():
    cfg = monitor_config_from_dict({"bounds": {"rules": [
        {"metric": "kl", "upper": 0.1, "patience_steps": 3, "severity": "critical"}]}})
    rows = healthy_stream(60)
    for i in range(30, 40):
        rows[i]["kl"] = 0.2
    rows[20]["kl"] = 0.2  # one step over: patience absorbs it
    alerts = [a for a in feed(MonitorStack(cfg), events(rows)) if a.code == "bound"]
    assert [(a.step, a.onset_step, a.severity) for a in alerts] == [(33, 31, Severity.CRITICAL)]
    assert "0.2 > 0.1 for 3 steps" in alerts[0].message


def test_truncated_fraction_default_bounds_relative_to_the_runs_own_level():
    rows = healthy_stream(120, extra=("truncated_fraction",))
    for i in range(100, 120):
        rows[i]["truncated_fraction"] = 0.95
    alerts = [a for a in feed(MonitorStack(), events(rows)) if a.code == "bound"]
    assert {(a.step, a.severity) for a in alerts} == {(105, Severity.WARNING), (105, Severity.CRITICAL)}
    # A run with a tiny length cap truncates most answers from the start: that is its normal.
    short_cap = [dict(r, truncated_fraction=0.93 + 0.01 * (i % 3)) for i, r in enumerate(healthy_stream(120))]
    assert [a for a in feed(MonitorStack(), events(short_cap)) if a.code == "bound"] == []


def test_spike_on_grad_norm_is_a_warning_and_reward_outlier_is_not_critical():
    rows = healthy_stream(80)
    for i, r in enumerate(rows):
        r["grad_norm"] = 1.0 + 0.05 * math.sin(i * 1.7)
    rows[50]["grad_norm"] = 40.0
    rows[60]["reward"] = 500.0  # a one-step reward outlier: benign
    alerts = feed(MonitorStack(), events(rows))
    spikes = [a for a in alerts if a.code == "spike"]
    assert [(a.step, a.metric, a.severity) for a in spikes] == [(51, "grad_norm", Severity.WARNING)]
    assert critical(alerts) == []


def test_change_point_detects_a_reward_drop_with_onset_and_ignores_a_rise():
    rows = healthy_stream(200, seed=3)
    down = [dict(r, reward=r["reward"] - (1.0 if i >= 120 else 0.0)) for i, r in enumerate(rows)]
    alerts = [a for a in feed(MonitorStack(), events(down)) if a.code == "change_point" and a.metric == "reward"]
    assert alerts, "a 10-sigma reward drop must be a change point"
    assert 121 <= alerts[0].step <= 126
    assert 118 <= alerts[0].onset_step <= 122
    up = [dict(r, reward=r["reward"] + (1.0 if i >= 120 else 0.0)) for i, r in enumerate(rows)]
    rise = [a for a in feed(MonitorStack(), events(up)) if a.code == "change_point" and a.metric == "reward"]
    assert rise == []  # reward rising is the point of training (directions: reward: down)


def test_drift_beyond_budget_relative_to_established_level():
    rows = healthy_stream(300, seed=4)
    for i, r in enumerate(rows):
        r["kl"] *= 1 + 14 * ramp(i, 100, 150)  # slow x15 over 150 steps
    alerts = [a for a in feed(MonitorStack(), events(rows)) if a.code == "drift"]
    assert [a.metric for a in alerts] == ["kl"]
    assert alerts[0].severity is Severity.WARNING and "established" in alerts[0].message


@pytest.mark.parametrize("units,offset,kl_summed,cap", [(1.0, 0.0, False, 512), (100.0, -7.0, True, 2048),
                                                        (0.1, 3.0, False, 64)])
def test_pattern_collapse_on_the_four_core_metrics_any_scale(units, offset, kl_summed, cap):
    rows = healthy_stream(300, seed=5, reward_units=units, reward_offset=offset, kl_summed=kl_summed, cap=cap)
    rows = collapse(rows, onset=200, duration=20, cap=cap, kl_summed=kl_summed, reward_units=units)
    alerts = feed(MonitorStack(), events(rows))
    crit = critical(alerts)
    assert crit and crit[0].code == "pattern_collapse", [a.to_dict() for a in alerts]
    assert crit[0].step <= 200 + 10, "detected within 10 steps of onset"
    assert 195 <= crit[0].onset_step <= 203
    assert all(a.step >= 200 for a in crit)
    assert len([a for a in crit if a.code == "pattern_collapse"]) == 1  # one alert per incident


def test_a_single_metric_moving_alone_is_never_critical():
    rows = healthy_stream(300, seed=6, extra=("entropy",))
    for i, r in enumerate(rows):  # a prompt-mix change: length +60% at once
        if i >= 150:
            r["response_length"] *= 1.6
    alerts = feed(MonitorStack(), events(rows))
    assert critical(alerts) == []
    assert any(a.metric == "response_length" for a in alerts)  # but it is noticed


def test_empty_answers():
    rows = healthy_stream(200, seed=7)
    for i, r in enumerate(rows):
        g = ramp(i, 150, 4)
        r["response_length"] = r["response_length"] + (1.0 - r["response_length"]) * g
        r["reward"] -= 2.0 * g
    crit = critical(feed(MonitorStack(), events(rows)))
    assert crit and crit[0].code == "empty_answers" and 150 <= crit[0].step <= 158


def test_gibberish():
    rows = healthy_stream(200, seed=8, extra=("entropy", "ref_perplexity"))
    for i, r in enumerate(rows):
        g = ramp(i, 150, 15)
        boost = math.exp(math.log(6) * g)
        r["perplexity"] *= boost
        r["entropy"] *= 1 + 1.5 * g
        r["ref_perplexity"] *= boost * 2
        r["reward"] -= 2.0 * g
    crit = critical(feed(MonitorStack(), events(rows)))
    assert crit and crit[0].code == "gibberish" and 150 <= crit[0].step <= 165
    assert "reward" in crit[0].message


def _uncertainty_explodes(rows, factor: float):
    for i, r in enumerate(rows):
        g = ramp(i, 150, 15)
        r["perplexity"] *= math.exp(math.log(factor) * g)
        r["entropy"] *= 1 + 1.0 * g
    return rows


def test_gibberish_the_reward_does_not_see_is_critical_once_perplexity_explodes():
    # A reward that scores random tokens as neutral (VADER) stays flat while the policy falls apart.
    rows = _uncertainty_explodes(healthy_stream(200, seed=8, extra=("entropy",)), factor=30)
    crit = critical(feed(MonitorStack(), events(rows)))
    assert crit and crit[0].code == "gibberish" and 150 <= crit[0].step <= 165
    assert "reward does not see it" in crit[0].message
    # A perplexity rise short of gibberish_extreme_ratio with a flat reward is not critical.
    milder = _uncertainty_explodes(healthy_stream(200, seed=8, extra=("entropy",)), factor=4)
    assert [a for a in critical(feed(MonitorStack(), events(milder))) if a.code == "gibberish"] == []


def test_negative_kl_explosion():
    rows = healthy_stream(200, seed=9)
    for i, r in enumerate(rows):
        r["kl"] -= 0.6 * ramp(i, 150, 20)
    crit = critical(feed(MonitorStack(), events(rows)))
    assert crit and crit[0].code == "negative_kl" and 150 <= crit[0].step <= 170


def test_kl_runaway():
    rows = healthy_stream(220, seed=10)
    for i, r in enumerate(rows):
        r["kl"] *= math.exp(math.log(30) * ramp(i, 150, 30))
    crit = critical(feed(MonitorStack(), events(rows)))
    assert crit and crit[0].code == "kl_runaway" and 150 <= crit[0].step <= 180


def test_absent_metrics_leave_detectors_idle():
    evs = events([{"reward": 1.0 + 0.01 * (i % 7)} for i in range(100)] + [{"custom/thing": 5.0}] * 5)
    assert feed(MonitorStack(), evs) == []


def test_eval_reward_distribution_turning_long_tailed():
    rows = healthy_stream(200)
    for i, r in enumerate(rows):
        if i % 10 == 9:
            late = i >= 150
            r.update(eval_reward=2.0, eval_reward_skew=2.5 if late else 0.1 + 0.05 * (i % 3),
                     eval_reward_p90=2.0 + (3.0 if late else 0.5))
    alerts = [a for a in feed(MonitorStack(), events(rows)) if a.code == "eval_long_tail"]
    assert {a.metric for a in alerts} == {"eval_reward_skew", "eval_reward_p90"}
    assert all(a.step == 170 and a.onset_step == 160 and a.severity is Severity.WARNING for a in alerts)


def test_stall_uses_the_runs_own_step_interval():
    stack = MonitorStack()
    feed(stack, events(healthy_stream(30), dt=10.0))
    last = 1.7e9 + 10.0 * 29
    assert stack.check_stall(last + 60) == []  # 60 s: below max(120 s, 10 x 10 s)
    warn = stack.check_stall(last + 130)
    assert [(a.code, a.severity, a.step) for a in warn] == [("stall", Severity.WARNING, 30)]
    assert stack.check_stall(last + 200) == []  # same stall: no storm
    assert [a.severity for a in stack.check_stall(last + 400)] == [Severity.CRITICAL]
    feed(stack, events([healthy_stream(1)[0]], start_step=31, t0=last + 410))
    assert stack.check_stall(last + 420) == []


def test_rollback_starts_a_segment_and_a_recurrence_is_caught_again():
    rows = collapse(healthy_stream(260, seed=11), onset=200, duration=20)
    stack = MonitorStack()
    first = critical(feed(stack, events(rows[:230])))
    assert first and first[0].code == "pattern_collapse"
    # roll back to step 180: healthy values again, then the same collapse recurs at 230
    again = collapse(healthy_stream(120, seed=12), onset=50, duration=20)
    after = feed(stack, events(again, start_step=181))
    assert stack.segments == 1
    crit = critical(after)
    assert crit and crit[0].code == "pattern_collapse" and crit[0].step >= 230 and crit[0].onset_step >= 181


def test_disabled_detectors_stay_silent():
    cfg = MonitorConfig()
    cfg.patterns.enabled = False
    cfg.non_finite.enabled = False
    rows = collapse(healthy_stream(260, seed=5), onset=200)
    rows[250]["kl"] = math.nan
    assert critical(feed(MonitorStack(cfg), events(rows))) == []
