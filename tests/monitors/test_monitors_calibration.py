"""CUSUM threshold from a target false-alarm rate, and the measured in-control rate."""

from __future__ import annotations

import random

import pytest

from rlguard.monitors.calibration import cusum_threshold, expected_delay, pipeline_threshold, siegmund_arl
from rlguard.monitors.config import TrackConfig
from rlguard.monitors.track import MetricTrack


def test_siegmund_matches_the_textbook_figure():
    # k = 0.5, h = 5: ~938 steps one-sided, ~469 two-sided (the "465" every RLHF user meets).
    assert 900 < siegmund_arl(5.0, 0.5) < 980


@pytest.mark.parametrize("arl,k", [(500, 0.5), (20000, 1.0), (1e6, 1.0)])
def test_threshold_inverts_the_arl(arl, k):
    h = cusum_threshold(arl, k)
    assert siegmund_arl(h, k) == pytest.approx(2 * arl, rel=1e-6)
    assert expected_delay(h, k, 3.0) < expected_delay(h, k, 2.0)


def test_bad_calibration_input_is_a_clear_error():
    with pytest.raises(ValueError, match="target ARL"):
        cusum_threshold(0.5, 1.0)
    with pytest.raises(ValueError, match="k must be"):
        siegmund_arl(4.0, 0.0)


def _false_alarms(values, h, k=1.0):
    t = MetricTrack("x", TrackConfig(), k=k, h=h)
    alarms = 0
    for i, v in enumerate(values):
        t.push(i + 1, v)
        if t.ready and (t.cusum_up > h or t.cusum_down > h):
            alarms += 1
            t.reset_cusum()
    return alarms


def test_measured_false_alarm_rate_is_near_design_on_autocorrelated_noise():
    # AR(1) phi = 0.7 noise: raw CUSUMs alarm constantly; whitening plus the measured estimation
    # inflation should land within a factor ~3 of the design rate (ARL 500 -> ~40 alarms in 20k steps).
    rng = random.Random(0)
    x, values = 0.0, []
    for _ in range(20000):
        x = 0.7 * x + (1 - 0.49) ** 0.5 * rng.gauss(0, 1)
        values.append(10.0 + x)
    h = pipeline_threshold(500, 1.0)
    alarms = _false_alarms(values, h)
    assert 10 <= alarms <= 120, alarms
