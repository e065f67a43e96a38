"""Monitor settings: one typed, validated config; the defaults are the shipped profile.

Every threshold is scale-free (robust z-scores against the run's own baseline, ratios of a
metric's level to its own established level, or a target false-alarm rate), so the same
profile works for any reward-model units, KL convention (per-token mean or summed) and
length cap. `rlguard monitors --print-config` lists every field with its default and meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CORE_METRICS = ["reward", "kl", "perplexity", "response_length"]
TRACKED_METRICS = CORE_METRICS + [
    "kl_seq", "entropy", "ref_perplexity", "distinct_2", "truncated_fraction", "reward_std",
]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key is an error naming it, never silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class TrackConfig(_Strict):
    """How each metric's rolling baseline is kept (shared by all detectors)."""

    baseline_window_steps: int = Field(60, ge=8)
    """Values in the rolling baseline that the median/MAD (level and scale) come from."""
    baseline_lag_steps: int = Field(8, ge=0)
    """The baseline ends this many steps before now, so a fresh change is not absorbed before it is
    detected (detection must happen within this lag of onset to see the full shift)."""
    recent_window_steps: int = Field(3, ge=1)
    """The current level of a metric is the median of its last this-many values (robust to one-step outliers)."""
    warmup_steps: int = Field(30, ge=4)
    """Values a metric needs in the current run before its detectors may fire (early training moves fast)."""
    refresh_every_steps: int = Field(8, ge=1)
    """Recompute the baseline median/MAD every this-many values (they move slowly; this keeps updates cheap)."""


class NonFiniteConfig(_Strict):
    enabled: bool = True
    """NaN or +-Infinity in any metric (or in the listed ones) is a critical alert at once."""
    metrics: list[str] | None = None
    """Metrics to check; None = every metric in the event."""


class BoundRule(_Strict):
    metric: str
    """Metric the bound applies to."""
    upper: float | None = None
    """Alert when the value is above this (None: no upper bound)."""
    lower: float | None = None
    """Alert when the value is below this (None: no lower bound)."""
    patience_steps: int = Field(3, ge=1)
    """Consecutive out-of-bound steps before alerting (one noisy step is not an incident)."""
    severity: Literal["warning", "critical"] = "warning"
    """Severity of the alert."""
    only_if_established_inside: bool = False
    """Alert only when the metric's established level (after warm-up) was inside the bound: a run that
    always sits outside it (a tiny length cap truncating most answers) is normal for that run."""

    @model_validator(mode="after")
    def _has_a_bound(self):
        if self.upper is None and self.lower is None:
            raise ValueError(f"bound on {self.metric!r} needs 'upper' or 'lower'")
        return self


class BoundsConfig(_Strict):
    enabled: bool = True
    """Fixed bounds with patience. A KL budget is a rule here, e.g. {metric: kl, upper: 0.2, severity: critical}."""
    rules: list[BoundRule] = Field(default_factory=lambda: [
        BoundRule(metric="truncated_fraction", upper=0.5, patience_steps=5, severity="warning",
                  only_if_established_inside=True),
        BoundRule(metric="truncated_fraction", upper=0.9, patience_steps=5, severity="critical",
                  only_if_established_inside=True),
    ])
    """The bound rules (truncated_fraction is a share, and judged against the run's own established level,
    so these defaults hold for any length cap)."""


class SpikeConfig(_Strict):
    enabled: bool = True
    """One-step outliers: |x - rolling median| in robust standard deviations (1.4826 * MAD)."""
    metrics: list[str] = Field(default_factory=lambda: ["grad_norm", "policy_loss", "value_loss", "approx_kl"])
    """Metrics to watch. Default: the optimization-health metrics (loss spikes, trl #101). One-step outliers
    of reward/KL/length are benign and the change-point and pattern detectors cover their real shifts."""
    threshold_sigma: float = Field(12.0, gt=0)
    """Robust z above which a value is a spike (high: RLHF metrics are heavy-tailed)."""


class ChangePointConfig(_Strict):
    enabled: bool = True
    """Two-sided CUSUM on standardized, prewhitened (AR(1)) residuals against the rolling baseline."""
    metrics: list[str] = Field(default_factory=lambda: [m for m in TRACKED_METRICS if m not in ("kl", "kl_seq")])
    """Metrics to watch. KL is left out by default: it grows many-fold in every healthy run (from ~0 at
    step 1), so its level shifts are the expected course of training, not news; KL is judged by the
    kl_runaway / negative_kl / collapse patterns, the drift budget and any KL bound you configure."""
    target_arl_steps: float = Field(100000.0, ge=100)
    """In-control average run length per metric: the threshold h is derived from it (Siegmund's
    approximation, both sides), i.e. about one false warning per this many healthy steps per metric."""
    shift_sigma: float = Field(2.0, gt=0)
    """Smallest shift (innovation standard deviations) worth detecting fast; the reference value k is half of it."""
    directions: dict[str, Literal["up", "down", "both"]] = Field(default_factory=lambda: {"reward": "down"})
    """Which shifts to report per metric (default both); reward rising is the point of training."""
    min_level_z: float = Field(4.0, ge=0)
    """The shift must also show in the current level: |median of the recent window - baseline| of at least
    this many sigmas (the larger of the window's robust sigma and the long-run residual sigma), which
    CUSUM excursions driven by baseline-estimation error or slow autocorrelated wander rarely reach."""
    min_relative_change: float = Field(0.05, ge=0)
    """Materiality floor: |level - baseline| must also be at least this fraction of |baseline| (5 %), so a
    statistically clear but negligible shift on a very smooth stream (entropy 3.308 -> 3.323, z 9.6) is not
    reported. Metrics whose baseline is ~0 (KL early on) are judged by the z-scores alone."""
    min_share_change: float = Field(0.05, ge=0)
    """Materiality floor for shares in [0, 1] (truncated_fraction, distinct_2, clipfrac): also at least this
    absolute change (5 points), since a share near 0 makes any relative change look large."""
    clip_sigma: float = Field(4.0, gt=0)
    """Residuals are clipped to +-this before accumulating, so heavy tails and single outliers cannot trip it."""


class DriftRule(_Strict):
    metric: str
    """Metric whose level is compared to its established level."""
    max_ratio: float | None = None
    """Alert when level / established level rises above this (positive metrics)."""
    min_ratio: float | None = None
    """Alert when level / established level falls below this (positive metrics)."""


class DriftConfig(_Strict):
    enabled: bool = True
    """Sustained drift beyond a budget relative to the run's own established level (set after warm-up)."""
    establish_steps: int = Field(30, ge=5)
    """Values after warm-up whose median is the established level (kept across rollbacks)."""
    patience_steps: int = Field(5, ge=1)
    """Consecutive steps beyond budget before alerting."""
    rules: list[DriftRule] = Field(default_factory=lambda: [
        DriftRule(metric="kl", max_ratio=10.0),
        DriftRule(metric="kl_seq", max_ratio=10.0),
        DriftRule(metric="response_length", max_ratio=2.5, min_ratio=0.4),
        DriftRule(metric="perplexity", max_ratio=3.0, min_ratio=0.5),
        DriftRule(metric="entropy", max_ratio=3.0, min_ratio=0.2),
        DriftRule(metric="ref_perplexity", max_ratio=3.0),
        DriftRule(metric="distinct_2", min_ratio=0.5),
    ])
    """Budgets (ratios, so unit-free)."""


class PatternConfig(_Strict):
    """The compound detectors of the paper's failure patterns (collapse, empty answers, gibberish,
    negative-KL explosion, KL runaway). A metric 'moves' when its current level (recent median)
    differs from its lagged baseline by at least `shift_z` robust standard deviations AND by the
    relative amount named per metric, so neither noise nor a tiny absolute change qualifies."""

    enabled: bool = True
    """Turn all compound detectors on or off."""
    shift_z: float = Field(5.0, gt=0)
    """Robust z (current level vs lagged baseline) for a metric to count as moving."""
    kl_up_ratio: float = Field(1.3, gt=1)
    """KL counts as 'up' at this multiple of its baseline level (and `corroborate_z` robust sigmas: KL is
    noisy, and in the collapse pattern it corroborates length and diversity moving)."""
    corroborate_z: float = Field(3.0, gt=0)
    """Robust z for a metric that corroborates a pattern whose other witnesses moved by `shift_z`."""
    strong_length_ratio: float = Field(1.5, gt=1)
    """Without KL moving, collapse needs length at this multiple of baseline..."""
    strong_diversity_ratio: float = Field(0.75, gt=0, lt=1)
    """...and perplexity / entropy / distinct_2 below this multiple (reward not falling)."""
    length_up_ratio: float = Field(1.3, gt=1)
    """Response length counts as 'toward the cap' at this multiple of its baseline level."""
    truncated_up_abs: float = Field(0.2, gt=0)
    """truncated_fraction counts as 'up' when it rose by this much (a share: unit-free)."""
    diversity_down_ratio: float = Field(0.85, gt=0, lt=1)
    """Perplexity / entropy / distinct_2 count as 'down' below this multiple of their baseline."""
    reward_fall_z: float = Field(3.0, gt=0)
    """Reward counts as 'falling' below baseline by this many robust standard deviations."""
    confirm_steps: int = Field(1, ge=1)
    """Consecutive steps a compound pattern must hold before it alerts."""
    single_metric_confirm_steps: int = Field(3, ge=1)
    """Consecutive steps for the KL-only patterns (negative_kl, kl_runaway), which must also still be
    moving away at the end: one metric alone needs more evidence than several agreeing."""
    empty_length_ratio: float = Field(0.25, gt=0, lt=1)
    """Empty/very short answers: response length below this multiple of its baseline (or established) level..."""
    empty_length_tokens: float = Field(2.0, ge=0)
    """...or at most this many tokens (an answer of EOS alone)."""
    gibberish_up_ratio: float = Field(1.5, gt=1)
    """Gibberish: entropy / ref_perplexity / perplexity above this multiple of baseline while reward falls."""
    gibberish_entropy_min_rise_nats: float = Field(2.0, ge=0)
    """Where entropy is the only uncertainty metric that moved, it must also have risen by this many nats per
    token: reasoning runs sit at 0.2-1 nats and swing x2 between steps while a noisy reward dips; random tokens
    are several nats up (the same floor as regimes.entropy_min_rise_nats)."""
    gibberish_extreme_ratio: float = Field(10.0, gt=1)
    """Gibberish whatever the reward does: perplexity at this multiple of its baseline (early life: of its
    early reference) with entropy up too. A reward model can score random tokens as neutral (VADER does:
    a ppo_max_paper run at lr 2e-4 reached perplexity 16 -> 2,600, entropy 8 nats, reward flat), so
    reward falling is not required once the policy is this uncertain."""
    negative_kl_factor: float = Field(2.0, gt=1)
    """Negative-KL explosion: KL below -(this x the established |KL| level)."""
    kl_runaway_ratio: float = Field(3.0, gt=1)
    """KL runaway: KL above this multiple of its (lagged) baseline, i.e. growing fast, and still rising..."""
    kl_runaway_established_ratio: float = Field(5.0, gt=1)
    """...and above this multiple of its established level (KL growing several-fold early in a run is normal)."""

    early_enabled: bool = True
    """Judge pattern_collapse and gibberish in early life too (before `track.warmup_steps`, and right after
    a rollback), by ratios against each metric's early reference (monitors/early.py)."""
    early_min_steps: int = Field(4, ge=2)
    """Values a fresh run needs before the early-life judgement starts."""
    early_reference_steps: int = Field(2, ge=1)
    """The reference is the median of at least the segment's first this-many values... 2, not 3:
    a fast collapse begins with the 2nd update (KL is 0 at step 1 by construction), and a 3-step
    reference then holds the incident's own start (the demo's collapse went unseen). Measured on
    the whole corpus (7,079 streams, issue #17): 4 more collapses caught, 2 earlier, none lost,
    0 new false alarms (BENCHMARKS.md)."""
    early_lag_steps: int = Field(8, ge=0)
    """...and, later, of all values except the last this-many (a robust rolling level that a change
    starting now does not contaminate before it is judged)."""
    early_kl_up_ratio: float = Field(3.0, gt=1)
    """Early life: KL counts as up at this multiple of its reference (floored by its early spread)."""
    early_uncertainty_down_ratio: float = Field(0.5, gt=0, lt=1)
    """Early life: entropy or log-perplexity count as down at or below this multiple of their reference."""
    early_diversity_down_ratio: float = Field(0.8, gt=0, lt=1)
    """Early life: distinct_2 counts as down at or below this multiple of its reference."""
    early_cap_fraction: float = Field(0.95, gt=0, le=1)
    """Early life: truncated_fraction at or above this (from a reference below it) = answers pinned to the cap."""
    early_perplexity_up_ratio: float = Field(2.5, gt=1)
    """Early life gibberish: perplexity at this multiple of its reference..."""
    early_entropy_up_ratio: float = Field(1.4, gt=1)
    """...and entropy at this multiple (entropy ~ log perplexity moves less)."""
    early_reward_fall_fraction: float = Field(0.2, gt=0)
    """Early life: reward counts as falling below its reference by the larger of 2 early sigmas and this
    fraction of |reference|."""


class RegimeConfig(_Strict):
    """The failure classes of real trainers' logs (monitors/regimes.py), judged from the 4th logged point
    on whatever metrics are present. Counts are LOGGED POINTS: a run logging every 10 steps is judged as
    fast, in points, as one logging every step."""

    enabled: bool = True
    """Turn the regime detector on or off."""
    min_points: int = Field(4, ge=2)
    """Values of a metric in the run before its regimes are judged."""
    reference_points: int = Field(3, ge=1)
    """The reference is the median of at least the first this-many values..."""
    reference_lag_points: int = Field(8, ge=0)
    """...and, later, of the recent history except its last this-many values (a change starting now does not
    contaminate the level it is judged against)."""
    reward_fall_fraction: float = Field(0.2, gt=0)
    """Reward counts as falling (a witness) below its reference by the larger of 2 spreads and this fraction
    of |reference|; rising, likewise above it."""
    kl_up_ratio: float = Field(3.0, gt=1)
    """KL counts as up (a witness) at this multiple of its reference, floored by its spread."""
    length_up_ratio: float = Field(1.3, gt=1)
    """Response length counts as toward the cap (a witness) at this multiple of its reference."""
    entropy_up_ratio: float = Field(3.0, gt=1)
    """random_tokens: entropy at this multiple of its reference, with a witness..."""
    entropy_extreme_ratio: float = Field(6.0, gt=1)
    """...or at this multiple alone."""
    entropy_min_rise_nats: float = Field(2.0, gt=0)
    """random_tokens: entropy must also have risen by this many nats per token (entropy is nats in every
    trainer; a rise from 0.02 to 0.2 is many-fold and means nothing)."""
    log_perplexity_up_ratio: float = Field(2.0, gt=1)
    """random_tokens without entropy logged: log-perplexity at this multiple of its reference, with a witness..."""
    log_perplexity_extreme_ratio: float = Field(3.0, gt=1)
    """...or at this multiple alone (perplexity 13 -> 2,200)."""
    distinct_down_ratio: float = Field(0.8, gt=0, lt=1)
    """repetition: distinct_2 at or below this multiple of its reference."""
    perplexity_up_ratio: float = Field(2.5, gt=1)
    """Perplexity counts as up (a random_tokens witness) at this multiple of its reference."""
    entropy_down_ratio: float = Field(0.5, gt=0, lt=1)
    """Entropy counts as down (a length_collapse witness) at or below this multiple of its reference."""
    length_collapse_ratio: float = Field(0.25, gt=0, lt=1)
    """length_collapse: response length at or below this multiple of its reference, with a witness..."""
    length_collapse_extreme_ratio: float = Field(0.1, gt=0, lt=1)
    """...or at or below this multiple alone (a 10x shrink between logged points)."""
    length_runaway_ratio: float = Field(2.0, gt=1)
    """length_runaway: response length at this multiple of its reference, reward not rising, entropy not rising..."""
    length_runaway_points: int = Field(2, ge=1)
    """...for this many logged points."""
    pinned_fraction: float = Field(0.95, gt=0, le=1)
    """pinned_at_cap: truncated_fraction at or above this..."""
    pinned_reference_max: float = Field(0.5, gt=0, le=1)
    """...from a reference below this (a run that truncates most answers from the start is that run's normal)..."""
    pinned_points: int = Field(2, ge=1)
    """...for this many logged points, while reward does not rise."""
    reward_collapse_fraction: float = Field(0.7, gt=0)
    """reward_collapse: reward below its reference by this fraction of |reference|..."""
    reward_collapse_sigmas: float = Field(3.0, ge=0)
    """...and by this many standard errors of its level (the mean over `min_span_steps` steps)..."""
    reward_collapse_points: int = Field(1, ge=1)
    """...for this many logged points; where action-space metrics are logged, one of them must have moved too..."""
    action_still_ratio: float = Field(0.5, gt=0, lt=1)
    """...the failing way (entropy up to 1/this of its reference, by half `entropy_min_rise_nats`; length, KL and
    perplexity by their witness ratios)."""
    min_span_steps: int = Field(8, ge=1)
    """pinned_at_cap and reward_collapse must also hold over this many optimizer steps (8 points at logging_steps 1,
    2 at logging_steps 10): a few noisy batches are not a regime."""
    mode_collapse_entropy_ratio: float = Field(0.05, gt=0, lt=1)
    """mode_collapse: entropy at or below this multiple of its reference (20x lower; healthy runs fall 5-10x)..."""
    mode_collapse_zero_std: float = Field(0.95, gt=0, le=1)
    """...with frac_reward_zero_std at or above this (no group's rewards differ), or grad_norm exactly 0."""
    kl_explosion_nats: float = Field(1.0, gt=0)
    """kl_explosion: per-token KL (`kl`) at or above this many nats..."""
    kl_explosion_ratio: float = Field(10.0, gt=1)
    """...and at this multiple of its reference (floored by its spread)..."""
    kl_explosion_points: int = Field(1, ge=1)
    """...for this many logged points (still rising, when more than one). The level is already the median of
    the last three values, so one spike never reaches it."""


class EvalShapeConfig(_Strict):
    enabled: bool = True
    """Paper Appendix A: the held-out eval reward distribution turning long-tailed."""
    skew_rise: float = Field(1.0, gt=0)
    """Alert when eval_reward_skew rises this much above its established level (skewness is unit-free)."""
    tail_ratio: float = Field(2.0, gt=1)
    """Alert when (eval_reward_p90 - eval_reward) grows to this multiple of its established value."""
    establish_evals: int = Field(3, ge=1)
    """Evaluations whose median is the established level."""
    patience_evals: int = Field(2, ge=1)
    """Consecutive evaluations beyond budget before alerting."""


class StallConfig(_Strict):
    enabled: bool = True
    """No event for a while: the worker is hung, deadlocked or dead."""
    min_s: float = Field(120.0, gt=0)
    """Never call a stall before this many seconds without an event."""
    factor: float = Field(10.0, gt=1)
    """...nor before this many times the run's median step interval (slow steps are not stalls)."""
    critical_factor: float = Field(3.0, ge=1)
    """A stall becomes critical at this multiple of the warning threshold."""


class IncidentConfig(_Strict):
    rearm_steps: int = Field(10, ge=1)
    """An incident (one alert per detector and metric) ends after this many steps without the condition;
    only then can the same detector alert again on that metric."""


class MonitorConfig(_Strict):
    """All detector settings. Load from YAML with `load_monitor_config(path)`."""

    track: TrackConfig = Field(default_factory=TrackConfig)
    """Rolling baseline shared by the detectors."""
    incident: IncidentConfig = Field(default_factory=IncidentConfig)
    """Alert-storm control."""
    non_finite: NonFiniteConfig = Field(default_factory=NonFiniteConfig)
    """NaN / Infinity."""
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)
    """Fixed bounds with patience."""
    spike: SpikeConfig = Field(default_factory=SpikeConfig)
    """One-step outliers."""
    change_point: ChangePointConfig = Field(default_factory=ChangePointConfig)
    """Level shifts (CUSUM)."""
    drift: DriftConfig = Field(default_factory=DriftConfig)
    """Slow drift beyond a budget."""
    patterns: PatternConfig = Field(default_factory=PatternConfig)
    """Compound failure patterns (the critical ones)."""
    regimes: RegimeConfig = Field(default_factory=RegimeConfig)
    """Failure classes of real trainers' logs, from the 4th logged point, on any metric subset."""
    eval_shape: EvalShapeConfig = Field(default_factory=EvalShapeConfig)
    """Held-out eval reward distribution shape."""
    stall: StallConfig = Field(default_factory=StallConfig)
    """No events."""


class MonitorConfigError(ValueError):
    """A config file that cannot be used; the message names the field and the fix."""


def _describe(e: ValidationError, source: str) -> str:
    lines = [f"invalid monitor config ({source}):"]
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key; see `rlguard monitors --print-config` for the valid fields")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def monitor_config_from_dict(d: dict | None, source: str = "dict") -> MonitorConfig:
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise MonitorConfigError(f"invalid monitor config ({source}): expected a mapping, got {type(d).__name__}")
    # A run's config.yaml may hold the monitor settings under a `monitors:` key.
    if set(d) == {"monitors"}:
        d = d["monitors"] or {}
    try:
        return MonitorConfig.model_validate(d)
    except ValidationError as e:
        raise MonitorConfigError(_describe(e, source)) from None


def load_monitor_config(path: str | Path | None = None) -> MonitorConfig:
    """The shipped defaults (path None) or a YAML file's overrides of them."""
    if path is None:
        return MonitorConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise MonitorConfigError(f"cannot read monitor config {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MonitorConfigError(f"monitor config {p} is not valid YAML: {e}") from None
    return monitor_config_from_dict(data, source=str(p))
