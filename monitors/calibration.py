"""CUSUM thresholds from a target false-alarm rate.

For a one-sided CUSUM S_t = max(0, S_{t-1} + e_t - k) on N(0, 1) innovations, Siegmund's
approximation of the in-control average run length (steps to a false alarm) at threshold h is

    ARL0(h) = (exp(2 k b) - 2 k b - 1) / (2 k^2),   b = h + 1.166

(k = 0.5, h = 5 gives ~938 one-sided, ~469 two-sided: the "false alarm every few hundred steps"
of a textbook setting). A two-sided CUSUM alarms when either side does, so each side gets twice
the target ARL. The residuals are clipped and prewhitened (see monitors/track.py) so that the
Gaussian figure is a fair guide; bench/detection.py measures the real rate on healthy streams.

Siegmund assumes the in-control mean and variance are known. Here they come from a rolling
window of a few dozen values, whose estimation error is itself autocorrelated, and RLHF noise is
heavy-tailed: measured on this pipeline (bench/calibrate_cusum.py), the real in-control ARL is
~2.5x shorter than Siegmund's on iid Gaussian noise and up to ~10x on AR(0.9) or Student-t
noise. `pipeline_threshold` therefore designs for the target times ESTIMATION_INFLATION; the
benchmark reports the rate achieved on healthy streams.

The out-of-control delay for a shift of delta innovation sigmas is about b / (delta - k) steps.
"""

from __future__ import annotations

import math


def siegmund_arl(h: float, k: float) -> float:
    """In-control average run length of a one-sided CUSUM with reference k and threshold h."""
    if k <= 0:
        raise ValueError(f"reference value k must be > 0, got {k}")
    b = 2.0 * k * (h + 1.166)
    return (math.exp(b) - b - 1.0) / (2.0 * k * k)


def cusum_threshold(target_arl_steps: float, k: float, two_sided: bool = True) -> float:
    """The threshold h whose in-control ARL (per metric, both sides together) is the target."""
    if target_arl_steps <= 1:
        raise ValueError(f"target ARL must be > 1 step, got {target_arl_steps}")
    per_side = target_arl_steps * (2.0 if two_sided else 1.0)
    lo, hi = 0.0, 1.0
    while siegmund_arl(hi, k) < per_side:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if siegmund_arl(mid, k) < per_side:
            lo = mid
        else:
            hi = mid
    return hi


ESTIMATION_INFLATION = 4.0


def pipeline_threshold(target_arl_steps: float, k: float) -> float:
    """The threshold for MetricTrack's CUSUM: Siegmund's, corrected for the measured inflation."""
    return cusum_threshold(target_arl_steps * ESTIMATION_INFLATION, k)


def expected_delay(h: float, k: float, shift_sigma: float) -> float:
    """Approximate detection delay (steps) for a sustained shift of shift_sigma innovation sigmas."""
    if shift_sigma <= k:
        return math.inf
    return (h + 1.166) / (shift_sigma - k)
