"""Early life: the compound patterns judged from ~step 4 of a run (or of a segment after a rollback).

Why a separate judgement: the statistical tracks need a few dozen values before their robust
sigmas mean anything (`track.warmup_steps`), but a vanilla PPO run on a small model can collapse
from step 2 (kl 0 -> 2.1 nats/token, perplexity 13.5 -> 1.5, distinct_2 0.95 -> 0.48 by step 6:
bench/fixtures/hacking_vanilla_collapse.jsonl). Until a track is ready, each metric is therefore
compared with its own REFERENCE: the median of the segment's values that end `early_lag_steps`
before now (at least the first `early_reference_steps` values, so the run's first steps are the
reference at the very start). After a rollback the healthy values from before the incident's onset
are part of that history (MetricTrack.new_segment), so a recurrence is judged at once.

Only ratios are used (scale-free: any reward units, KL convention or length cap):
  * uncertainty down: entropy or log-perplexity at or below `early_uncertainty_down_ratio`
    of its reference (entropy 0.0 placeholders never reach a track: MonitorStack drops them);
  * diversity down: distinct_2 at or below `early_diversity_down_ratio` of its reference;
  * pinned to the cap: truncated_fraction at or above `early_cap_fraction` having been below it, or
    response length at `length_up_ratio` of its reference;
  * KL up: at least `early_kl_up_ratio` times its reference, the reference floored by its own spread
    (KL is exactly 0 at step 1 and often for several steps: a ratio against 0 must not explode, and
    KL only corroborates here: it never makes an alert on its own).
  pattern_collapse is critical with KL up, reward not falling, uncertainty down AND a second
  action-space witness (diversity down or pinned to the cap); uncertainty down with KL up alone is a
  warning. gibberish (perplexity AND entropy up by `early_perplexity_up_ratio` / `early_entropy_up_ratio`)
  is critical while reward falls or once perplexity reaches `gibberish_extreme_ratio` of its reference,
  a warning ("drifting into incoherence") otherwise.
  empty_answers is critical when response length falls below `empty_length_ratio` of its reference
  (or to `empty_length_tokens`) while KL is up.
Onset: per moved metric, the first step of the latest run of values already beyond the geometric
midpoint between its reference and its current level; the earliest of those.
"""

from __future__ import annotations

import math

from rlguard.monitors.alerts import Severity
from rlguard.monitors.config import PatternConfig
from rlguard.monitors.track import MetricTrack, _median

_MAD_TO_SIGMA = 1.4826


def answers_too_short(level: float, ref: float, cfg: PatternConfig) -> bool:
    """Response length collapsed: down to `empty_length_tokens` from a clearly longer reference, or
    under `empty_length_ratio` of it (the empty_answers judgement, early and statistical alike)."""
    return (level <= cfg.empty_length_tokens and ref > 4 * cfg.empty_length_tokens) or (
        level < cfg.empty_length_ratio * ref)


class EarlyView:
    """One metric in early life: reference, current level and the history behind them."""

    __slots__ = ("track", "name", "ref", "spread", "level", "steps", "values")

    def __init__(self, track: MetricTrack, reference_points: int, lag_points: int):
        self.track = track
        self.name = track.name
        steps, values = track.early_history()
        n_ref = max(reference_points, len(values) - lag_points)
        ref_values = sorted(values[:n_ref])
        self.ref = _median(ref_values)
        self.spread = _MAD_TO_SIGMA * _median(sorted(abs(v - self.ref) for v in ref_values))
        self.level = track.level
        self.steps, self.values = steps, values

    def ratio(self, floor_by_spread: bool = False) -> float:
        denom = abs(self.ref)
        if floor_by_spread:
            denom = max(denom, self.spread, 1e-12)
        return self.level / denom if denom > 0 else math.nan

    def down_ratio(self) -> float:
        """Level over reference for a shrinking metric; perplexity is judged on its log (its floor is 1,
        not 0: 2.3 -> 1.19 is a collapse to the floor although the raw ratio is only 0.52)."""
        if self.name.endswith("perplexity") and self.ref > 1.0:
            return math.log(max(self.level, 1.0)) / math.log(self.ref)
        return self.ratio()

    def onset(self) -> int:
        """First step of the latest run of values beyond the (geometric) midpoint ref -> level."""
        ref, level = self.ref, self.level
        if ref > 0 and level > 0:
            mid = math.sqrt(ref * level)
        else:
            mid = 0.5 * (ref + level)
        rising = level > ref
        onset = self.steps[-1] if self.steps else -1
        for s, v in zip(reversed(self.steps), reversed(self.values)):
            if (v >= mid) if rising else (v <= mid):
                onset = s
            else:
                break
        return onset

    def describe(self) -> str:
        r = self.level / self.ref if self.ref else math.inf
        return f"{self.name} {self.ref:.4g}->{self.level:.4g} (x{r:.3g} of its early reference)"


def _view(tracks: dict[str, MetricTrack], name: str, step: int, cfg: PatternConfig) -> EarlyView | None:
    t = tracks.get(name)
    if t is None or t.last_step != step or t.ready:
        return None
    # A fresh run needs `early_min_steps` values; after a rollback that kept a healthy history, one
    # recent window (the current level) is enough.
    need = cfg.early_min_steps if t.carried == 0 else t.cfg.recent_window_steps
    if t.n_seg < need or len(t.hist) < max(cfg.early_min_steps, cfg.early_reference_steps):
        return None
    return EarlyView(t, cfg.early_reference_steps, cfg.early_lag_steps)


def early_patterns(cfg: PatternConfig, step: int, tracks: dict[str, MetricTrack]) -> dict[str, tuple]:
    """code -> (severity, metric, onset, parts, what) for the patterns that hold this step."""
    found: dict[str, tuple] = {}
    # Both patterns need KL and an uncertainty metric in early life: check those first (cheap exit for
    # the rest of the run, once the tracks are armed).
    kl = _view(tracks, "kl", step, cfg) or _view(tracks, "kl_seq", step, cfg)
    if kl is None:
        return found
    ppl = _view(tracks, "perplexity", step, cfg)
    ent = _view(tracks, "entropy", step, cfg)
    uncertainty = [v for v in (ppl, ent) if v is not None and v.ref > 0]
    if not uncertainty:
        return found
    reward = _view(tracks, "reward", step, cfg)
    dist = _view(tracks, "distinct_2", step, cfg)
    length = _view(tracks, "response_length", step, cfg)
    trunc = _view(tracks, "truncated_fraction", step, cfg)

    reward_falling = reward is not None and reward.level < reward.ref - max(
        2.0 * reward.spread, cfg.early_reward_fall_fraction * abs(reward.ref))
    kl_up = kl.ratio(floor_by_spread=True) >= cfg.early_kl_up_ratio

    # Either uncertainty metric (one witness group): on a model whose perplexity starts near 2, a
    # collapse to the floor only halves perplexity while entropy (its log) falls many-fold.
    unc_down = any(v.down_ratio() <= cfg.early_uncertainty_down_ratio for v in uncertainty)
    div_down = dist is not None and dist.ref > 0 and dist.ratio() <= cfg.early_diversity_down_ratio
    capped = trunc is not None and trunc.level >= cfg.early_cap_fraction > trunc.ref
    length_up = length is not None and length.ref > 0 and length.ratio() >= cfg.length_up_ratio
    cap_views = [v for v, ok in ((trunc, capped), (length, length_up and not capped)) if ok]
    if kl_up and unc_down and not reward_falling:
        witnesses = ([dist] if div_down else []) + cap_views
        moved = [kl, *uncertainty, *witnesses]
        if witnesses:
            found["pattern_collapse"] = (Severity.CRITICAL, kl.name, min(v.onset() for v in moved),
                                         ", ".join(v.describe() for v in moved),
                                         "early-life policy collapse pattern")
        else:
            found["pattern_collapse"] = (Severity.WARNING, kl.name, min(v.onset() for v in moved),
                                         ", ".join(v.describe() for v in moved),
                                         "early-life partial collapse pattern")

    # Answers shrinking to almost nothing while KL climbs (the statistical empty_answers pattern,
    # judged early): a policy that found that short answers pay. KL must corroborate, so that a
    # healthy run learning to be concise (length down, KL flat) is left alone.
    if length is not None and length.ref > 0 and kl_up:
        if answers_too_short(length.level, length.ref, cfg):
            found["empty_answers"] = (Severity.CRITICAL, "response_length", min(length.onset(), kl.onset()),
                                      f"{length.describe()}, {kl.describe()}",
                                      "early-life empty/very short answers while KL climbs")

    # Two witnesses: per-step entropy of a small batch is noisy (x1.5 swings in healthy GRPO runs), so
    # entropy (or perplexity) alone is left to the statistical detectors once they are armed.
    if (ppl is not None and ent is not None and ppl.ratio() >= cfg.early_perplexity_up_ratio
            and ent.ratio() >= cfg.early_entropy_up_ratio):
        extreme = ppl.ratio() >= cfg.gibberish_extreme_ratio
        sev = Severity.CRITICAL if reward_falling or extreme else Severity.WARNING
        moved = uncertainty + ([reward] if reward_falling else [])
        if reward_falling:
            what = "gibberish: uncertainty exploding while reward falls"
        elif extreme:
            what = "gibberish: perplexity and entropy exploding (the reward does not see it)"
        else:
            what = "drifting into incoherence: perplexity and entropy far above their early level"
        found["gibberish"] = (sev, uncertainty[0].name, min(v.onset() for v in moved),
                              ", ".join(v.describe() for v in moved), what)
    return found
