"""The rolling statistics of one metric, computed once per value and shared by all detectors.

Why a lagged, robust baseline: RLHF metrics are heavy-tailed and on arbitrary scales, so the
level is a median and the scale a MAD (robust standard deviation = 1.4826 * MAD) of a window
that ends `baseline_lag_steps` before now: a change that starts now is not absorbed into the
baseline before the detectors had a chance to see it.

Why prewhitening and a self-calibrated variance: per-step RLHF metrics are autocorrelated
(the policy moves slowly) and a baseline estimated from a few dozen values adds its own error,
so residuals standardized by the window MAD alone are neither unit-variance nor independent,
and a CUSUM on them alarms far more often than its design rate. The residual r_t is therefore
whitened with long-run statistics of the (clipped) residuals themselves: v = E[r^2] and
phi = E[r_t r_{t-1}] / v over the last ~200 in-control steps (frozen while the CUSUM is in an
excursion, so a real shift does not teach the detector that shifts are normal), and the
innovation e_t = (r_t - phi r_{t-1}) / sqrt(v (1 - phi^2)), ~N(0, 1) in control, is clipped to
+-clip before it enters the CUSUM (one outlier adds at most `clip`; a sustained shift keeps
adding even when phi is high). What remains of the baseline-estimation error is measured and
corrected in monitors/calibration.py.

On a new segment (after a rollback) the windows, the baseline and the CUSUM restart, while the
run's established level/scale are kept (they floor the new scale), so a recurrence is judged
after a short re-warm-up (half the warm-up).
"""

from __future__ import annotations

import math
from collections import deque

from rlguard.monitors.config import TrackConfig

_MAD_TO_SIGMA = 1.4826
_MIN_BASELINE_VALUES = 8
_PHI_MAX = 0.9
_PRIOR_N, _PRIOR_VAR, _PRIOR_COV = 20.0, 1.2, 0.3
_RES_HORIZON = 200.0
SHARE_METRICS = frozenset({"truncated_fraction", "distinct_2", "clipfrac", "eval_distinct_2"})
_SHARE_SCALE_FLOOR = 0.005


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else 0.5 * (sorted_values[mid - 1] + sorted_values[mid])


class MetricTrack:
    """Level, scale, robust z and CUSUM of one metric; `push(step, value)` once per finite value.

    Public fields read by detectors (valid once `ready`):
      level: median of the recent window; base_level / base_scale: lagged baseline median and
      robust sigma; z: (level - base_level) / base_scale; z_long: the same against the larger of
      base_scale and the long-run residual sigma; last_r: the latest standardized residual (clipped);
      cusum_up / cusum_down with onset_up / onset_down (first step of the current excursion);
      established_level / established_scale: the run's level after warm-up (kept across rollbacks).
    """

    def __init__(self, name: str, cfg: TrackConfig, k: float = 0.5, clip: float = 4.0, establish_steps: int = 30,
                 h: float = 5.0):
        self.name = name
        self.cfg = cfg
        self.k = k
        self.h = h
        self.clip = clip
        self.establish_steps = establish_steps
        self.hist: deque[float] = deque(maxlen=cfg.baseline_window_steps + cfg.baseline_lag_steps)
        # The step of each value in `hist`: early-life onsets and the healthy prefix kept on a rollback.
        self.hist_steps: deque[int] = deque(maxlen=cfg.baseline_window_steps + cfg.baseline_lag_steps)
        self.carried = 0  # values in `hist` carried over from before a rollback (the healthy prefix)
        self.recent: deque[float] = deque(maxlen=cfg.recent_window_steps)
        self.n_seg = 0  # finite values in this segment
        self.n_total = 0  # finite values in the run
        self.segments = 0
        self.since_refresh = 0
        self.base_level = math.nan
        self.base_scale = math.nan
        self.phi = 0.0
        # Long-run residual statistics, starting from a conservative prior worth _PRIOR_N steps.
        self.res_n = _PRIOR_N
        self.res_var = _PRIOR_VAR
        self.res_cov = _PRIOR_COV
        self.level = math.nan
        self.z = 0.0
        self.z_long = 0.0
        self.last_r = 0.0
        self.cusum_up = 0.0
        self.cusum_down = 0.0
        self.onset_up = -1
        self.onset_down = -1
        self.restarted_up = self.restarted_down = False
        self.last_step = -1
        self.establishing: list[float] = []
        self.established_level = math.nan
        self.established_scale = math.nan
        self.refresh_every = cfg.refresh_every_steps
        # Shares in [0, 1] often sit at exactly 0 (no truncation): half a percent is the least change
        # that means anything, so a move from 0 to 0.05 is z ~ 10, not 10^7.
        self.scale_floor = _SHARE_SCALE_FLOOR if name in SHARE_METRICS else 1e-9
        self.need = cfg.warmup_steps  # values before `ready` (half the warm-up after a rollback)
        self.ready = False

    # -- per value -----------------------------------------------------------------------------

    def push(self, step: int, x: float) -> None:
        """One finite value. Afterwards `ready` says whether detectors may use this track
        (warm-up done, shorter after a rollback, and a baseline exists)."""
        self.hist.append(x)
        self.hist_steps.append(step)
        recent = self.recent
        recent.append(x)
        self.n_seg += 1
        self.n_total += 1
        self.last_step = step
        self.since_refresh += 1
        if self.since_refresh >= self.refresh_every or self.base_scale != self.base_scale:
            self._refresh()
        if len(recent) == 3:  # the default window: median of three without sorting
            a, b, c3 = recent
            if a > b:
                a, b = b, a
            self.level = a if c3 < a else (b if c3 > b else c3)
        else:
            self.level = _median(sorted(recent))
        scale = self.base_scale
        self.ready = ready = self.n_seg >= self.need and scale == scale
        if scale != scale:  # no baseline yet
            return
        base = self.base_level
        self.z = z = (self.level - base) / scale
        # z_long uses the long-run residual variance when it exceeds the window's: in strongly
        # autocorrelated streams a window of a few dozen steps sees less spread than the metric really has.
        # The single-metric change-point test uses it; the compound patterns keep the sharper z.
        rv = self.res_var
        self.z_long = z / math.sqrt(rv) if rv > 1.0 else z
        raw = (x - base) / scale
        if raw != raw:  # only for values near the float limit (inf / inf): keep the state clean
            return
        c = self.clip
        r = c if raw > c else (-c if raw < -c else raw)
        prev = self.last_r
        self.last_r = r
        up, down, h2 = self.cusum_up, self.cusum_down, 0.5 * self.h
        if up < h2 and down < h2:
            n = self.res_n = self.res_n + 1.0
            a = 1.0 / n if n < _RES_HORIZON else 1.0 / _RES_HORIZON
            self.res_var = var = self.res_var + a * (r * r - self.res_var)
            self.res_cov = cov = self.res_cov + a * (r * prev - self.res_cov)
        else:
            var, cov = self.res_var, self.res_cov
        if var < 0.05:
            var = 0.05
        phi = cov / var
        phi = 0.0 if phi < 0.0 else (_PHI_MAX if phi > _PHI_MAX else phi)
        self.phi = phi
        # Whiten the unclipped residual, then clip the innovation: a sustained large shift keeps
        # feeding the CUSUM even when phi is high, while one outlier adds at most `clip`.
        e = (raw - phi * prev) / math.sqrt(var * (1.0 - phi * phi))
        e = c if e > c else (-c if e < -c else e)
        k = self.k
        # onset = first step of the current excursion (the last zero crossing); a restart after an
        # alarm (reset_cusum) continues the same excursion if the shift persists.
        new_up = up + e - k
        if new_up > 0:
            if up == 0.0 and not self.restarted_up:
                self.onset_up = step
            self.cusum_up = new_up
        elif up != 0.0 or self.restarted_up:
            self.cusum_up = 0.0
            self.restarted_up = False
        new_down = down - e - k
        if new_down > 0:
            if down == 0.0 and not self.restarted_down:
                self.onset_down = step
            self.cusum_down = new_down
        elif down != 0.0 or self.restarted_down:
            self.cusum_down = 0.0
            self.restarted_down = False
        if ready and self.established_level != self.established_level and self.n_seg >= self.cfg.warmup_steps:
            self.establishing.append(x)
            if len(self.establishing) >= self.establish_steps:
                self.established_level = _median(sorted(self.establishing))
                self.established_scale = scale
                self.establishing = []

    def _refresh(self) -> None:
        """Baseline from the lagged window: level, local trend, robust scale, autocorrelation.

        The window is split in an older and a newer half; their medians give a robust local
        slope. When that slope is significant (a healthy run's KL warming up, length creeping
        up), the baseline level is the newer half's median (closer to now), so a steady trend is
        not mistaken for a shift. (Extrapolating the slope to now was tried: it overshoots on
        the saturating curves RLHF metrics follow and raised more false alarms.)
        The scale comes from the deviations from the two half medians, not from the trend."""
        self.since_refresh = 0
        # Until the window holds lag + 8 values (a fresh segment), the lag shrinks so that a
        # baseline exists after 8 values.
        lag = max(0, min(self.cfg.baseline_lag_steps, len(self.hist) - _MIN_BASELINE_VALUES))
        n = len(self.hist) - lag
        if n < _MIN_BASELINE_VALUES:
            return
        vals = list(self.hist)[:n]
        half = n // 2
        old, new = vals[:half], vals[half:]
        m_old = _median(sorted(old))
        m_new = _median(sorted(new))
        absdev = [abs(v - m_old) for v in old]
        absdev += [abs(v - m_new) for v in new]
        absdev.sort()
        scale = _MAD_TO_SIGMA * _median(absdev)
        if scale <= 0.0:  # discrete metrics (coarse rewards) can have MAD 0: use the mean deviation
            scale = 1.2533 * sum(absdev) / n
        floor = self.scale_floor + 1e-6 * abs(m_new)
        if self.established_scale == self.established_scale:
            # A stretch of unusually quiet values must not turn ordinary noise into big z-scores.
            floor = max(floor, 0.25 * self.established_scale)
        scale = max(scale, floor)
        # Half medians are ~1.25 sigma / sqrt(half) noisy each: trust the slope beyond 3 such sigmas.
        gap = m_new - m_old
        if abs(gap) > 3.0 * 1.25 * scale * math.sqrt(2.0 / max(half, 1)):
            level = m_new
        else:
            level = 0.5 * (m_old + m_new)  # no significant trend: the midpoint (saves a third sort)
        self.base_level = level
        self.base_scale = scale

    # -- segments and persistence --------------------------------------------------------------

    def reset_cusum(self) -> None:
        """After an alarm: start accumulating afresh (the standard CUSUM restart)."""
        self.restarted_up = self.cusum_up > 0
        self.restarted_down = self.cusum_down > 0
        self.cusum_up = self.cusum_down = 0.0

    def ratio(self) -> float:
        """Current level over baseline level, guarded by the scale (KL can start at ~0)."""
        denom = max(abs(self.base_level), self.base_scale)
        return self.level / denom if denom > 0 else math.nan

    def new_segment(self, healthy_before: int | None = None) -> None:
        """A rollback: restart the windows and CUSUM; keep the established level and scale, and the
        values recorded before `healthy_before` (the onset of the incident that caused the rollback,
        or the step the run went back to), which the rollback target shares.

        Values recorded after that are dropped because by the time a collapse is detected they have
        absorbed part of the bad regime: against them, the healthy values after the rollback would
        look like a shift the other way (perplexity 'exploding' back up, reward 'falling'). With at
        least a warm-up's worth of healthy values kept, the baseline exists at once and the track is
        ready after one recent window; with fewer, the early-life patterns (monitors/early.py) judge
        the new segment against the kept values until the track is ready again. Either way a collapse
        recurring soon after the rollback is judged against the run's healthy level, not re-learnt."""
        kept: list[tuple[int, float]] = []
        if healthy_before is not None:
            kept = [(s, v) for s, v in zip(self.hist_steps, self.hist) if s < healthy_before]
        self.hist.clear()
        self.hist_steps.clear()
        for s, v in kept:
            self.hist_steps.append(s)
            self.hist.append(v)
        self.carried = len(kept)
        self.base_level = self.base_scale = math.nan
        self.recent.clear()
        self.n_seg = 0
        self.segments += 1
        if len(kept) >= max(_MIN_BASELINE_VALUES, self.cfg.warmup_steps):
            # A full warm-up's worth of healthy history: the statistical baseline is trustworthy at once.
            self._refresh()
            self.need = self.cfg.recent_window_steps
        else:
            self.need = max(self.cfg.recent_window_steps, self.cfg.warmup_steps // 2)
        self.ready = False
        self.since_refresh = 0
        self.cusum_up = self.cusum_down = 0.0
        self.restarted_up = self.restarted_down = False
        self.last_r = 0.0
        self.z = 0.0
        self.establishing = [] if self.established_level == self.established_level else self.establishing

    def early_history(self) -> tuple[list[int], list[float]]:
        """(steps, values) of this segment, preceded by the healthy values carried over a rollback."""
        return list(self.hist_steps), list(self.hist)

    _FIELDS = (
        "n_seg", "n_total", "segments", "since_refresh", "base_level", "base_scale", "phi", "level", "z", "z_long",
        "last_r", "res_n", "res_var", "res_cov", "cusum_up", "cusum_down", "onset_up", "onset_down", "restarted_up", "restarted_down", "last_step", "need", "ready", "established_level", "carried",
        "established_scale",
    )

    def state_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self._FIELDS}
        d["hist"] = list(self.hist)
        d["hist_steps"] = list(self.hist_steps)
        d["recent"] = list(self.recent)
        d["establishing"] = list(self.establishing)
        return d

    def load_state_dict(self, d: dict) -> None:
        for f in self._FIELDS:
            if f in d or f != "carried":  # "carried" is new in version 2
                setattr(self, f, type(getattr(self, f))(d[f]))
        self.hist.clear()
        self.hist.extend(float(v) for v in d["hist"])
        self.hist_steps.clear()
        steps = d.get("hist_steps")
        if steps is None:  # a version-1 state: one value per step, the last at last_step
            steps = range(self.last_step - len(self.hist) + 1, self.last_step + 1)
        self.hist_steps.extend(int(v) for v in steps)
        self.recent.clear()
        self.recent.extend(float(v) for v in d["recent"])
        self.establishing = [float(v) for v in d["establishing"]]
