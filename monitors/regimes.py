"""Regimes: the failure classes of real trainers' logs, judged on whatever metrics are present.

Why a separate detector: the statistical detectors and the compound patterns need a few dozen
values before they arm (`track.warmup_steps`) and most of them need KL or perplexity as a witness.
Real runs of trl, verl and OpenRLHF log every 5 or 10 steps (20-50 points in a whole run), often
without KL (trl GRPO at beta 0) and never with perplexity, and collapse at their 3rd-5th logged
point. Each class here is judged from the 4th value of a metric on, in LOGGED POINTS (not
optimizer steps), against the metric's own REFERENCE: the median of its values that end
`reference_lag_points` before now (at least the first `reference_points`), so a change starting now
does not contaminate the level it is judged against. After a rollback the healthy values kept by
`MetricTrack.new_segment` are part of that history, so a recurrence is judged at once.

A class fires on what the present metrics make unambiguous; a metric that is not logged never vetoes
it. Where one metric alone would be ambiguous (a healthy run learning to answer concisely also
shortens its answers) a second witness is required when one is logged, and the one-metric form
needs a move so large that no healthy run makes it:

  random_tokens   entropy up x`entropy_up_ratio` (and by `entropy_min_rise_nats`) with a witness:
                  reward falling, length toward the cap, the truncated share pinned, or perplexity up;
                  or up x`entropy_extreme_ratio` alone. (Random tokens: entropy 0.2 -> 5-8 nats.)
                  Without entropy, log-perplexity the same way (`log_perplexity_*_ratio`).
  repetition      distinct_2 down to `distinct_down_ratio`, entropy or log-perplexity down to
                  `entropy_down_ratio`, answers toward the cap, reward not falling (the paper's
                  collapse when KL is not logged).
  length_collapse response length at or below `length_collapse_ratio` of its reference with
                  entropy down or KL up; or at or below `length_collapse_extreme_ratio` alone.
                  (A policy that answers with one token to game a format reward.)
  length_runaway  response length at `length_runaway_ratio` of its reference or more while reward
                  does not rise and entropy (where logged) does not rise either: looping answers that
                  have not reached a large cap yet; for `length_runaway_points` logged points, and
                  only against a reference of at least `reference_lag_points` points that predate the
                  last `reference_lag_points` (the first steps of a run lengthen its answers many-fold).
  pinned_at_cap   the truncated share at `pinned_fraction` or more for `pinned_points` logged points,
                  from a reference below `pinned_reference_max`, while reward does not rise.
  reward_collapse reward's level over the last `min_span_steps` steps (mean, at least three points)
                  down from the best level the run held (the highest its reference has been) by
                  `reward_collapse_fraction` of its magnitude
                  and by `reward_collapse_sigmas` standard errors, for `reward_collapse_points` points,
                  where no action-space metric (entropy, length, KL, perplexity) is logged or one of
                  them moved the failing way (length toward the cap or collapsed, KL or perplexity
                  up, entropy x1/`action_still_ratio` up).
  mode_collapse   entropy at or below `mode_collapse_entropy_ratio` of its reference with the learning
                  signal gone: frac_reward_zero_std at `mode_collapse_zero_std` or more, or a zero
                  grad_norm (GRPO: every group's answers score the same).
  pinned_at_cap, reward_collapse, mode_collapse and length_runaway must also hold over `min_span_steps` optimizer steps: two points
  at logging_steps 10, eight at logging_steps 1 (one noisy batch of 8 rollouts is not a regime).
  kl_explosion    per-token KL (`kl`, nats per token as docs/METRICS.md defines it; never the summed
                  `kl_seq`) at or above `kl_explosion_nats` and x`kl_explosion_ratio` its reference
                  for `kl_explosion_points` logged points (still rising, when more than one).
                  Its level is the median of the last three points: one spike never reaches it. A per-token KL of a nat
                  means the policy's every token is e-fold less likely under the reference: no
                  healthy RLHF run goes there (healthy runs end at 0.01-0.3).

All classes are critical. Onset: per moved metric, the first step of the latest run of values
beyond the midpoint between its reference and its level (monitors/early.py); the earliest of those.
"""

from __future__ import annotations

import math

from rlguard.monitors.alerts import AlertCode, Severity
from rlguard.monitors.config import RegimeConfig
from rlguard.monitors.detectors import Detector
from rlguard.monitors.early import EarlyView
from rlguard.monitors.track import MetricTrack

REGIME_METRICS = ("reward", "kl", "kl_seq", "entropy", "perplexity", "response_length", "truncated_fraction",
                  "distinct_2", "frac_reward_zero_std", "grad_norm")
CODES = (AlertCode.RANDOM_TOKENS, AlertCode.REPETITION, AlertCode.MODE_COLLAPSE, AlertCode.LENGTH_COLLAPSE,
         AlertCode.LENGTH_RUNAWAY, AlertCode.PINNED_AT_CAP, AlertCode.REWARD_COLLAPSE, AlertCode.KL_EXPLOSION)
# Classes that must also hold over `min_span_steps` optimizer steps.
_SPAN = ("pinned_at_cap", "reward_collapse", "mode_collapse", "length_runaway")
# The config field giving how many consecutive logged points a class must hold (others: 1).
_CONFIRM = {"length_runaway": "length_runaway_points", "pinned_at_cap": "pinned_points",
            "reward_collapse": "reward_collapse_points", "kl_explosion": "kl_explosion_points"}


def _view(tracks: dict[str, MetricTrack], name: str, step: int, cfg: RegimeConfig) -> EarlyView | None:
    t = tracks.get(name)
    if t is None or t.last_step != step:
        return None
    # A fresh run needs `min_points` values; after a rollback that kept a healthy history, one recent
    # window (the current level) is enough.
    need = cfg.min_points if t.carried == 0 else t.cfg.recent_window_steps
    if t.n_seg < need or len(t.hist) < max(cfg.min_points, cfg.reference_points):
        return None
    return EarlyView(t, cfg.reference_points, cfg.reference_lag_points)


class RegimeDetector(Detector):
    """The classes above; one incident per class."""

    name = "regimes"

    def __init__(self, cfg: RegimeConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.cfg = cfg
        self.streak: dict[str, int] = {}
        self.first_level: dict[str, float] = {}
        self.held_since: dict[str, int] = {}  # code -> the point before its condition started holding
        self.span_noise = 0.0
        self.reward_peak = -math.inf  # the best reward level the run held (kept across rollbacks)
        self.reward_levels: list[float] = []  # the reward's span level at each logged point (the last 60)
        self.levels_step = -1

    def update(self, step, values, tracks):
        c = self.cfg
        v = {n: _view(tracks, n, step, c) for n in ("reward", "kl", "entropy", "perplexity", "response_length",
                                                      "truncated_fraction")}
        reward, kl, ent, ppl = v["reward"], v["kl"], v["entropy"], v["perplexity"]
        length, trunc = v["response_length"], v["truncated_fraction"]
        reward_falling = reward is not None and reward.level < reward.ref - max(
            2.0 * reward.spread, c.reward_fall_fraction * abs(reward.ref))
        reward_rising = reward is not None and reward.level > reward.ref + max(
            2.0 * reward.spread, c.reward_fall_fraction * abs(reward.ref))
        # KL as a witness is a ratio, so either convention serves; the explosion below needs nats per token.
        kl_any = kl or _view(tracks, "kl_seq", step, c)
        kl_up = kl_any is not None and kl_any.ratio(floor_by_spread=True) >= c.kl_up_ratio
        length_up = length is not None and length.ref > 0 and length.ratio() >= c.length_up_ratio
        pinned = trunc is not None and trunc.level >= c.pinned_fraction and trunc.ref < c.pinned_reference_max
        found: dict[str, tuple[str, list[EarlyView], str]] = {}

        # The policy's uncertainty: entropy (nats per token), else log-perplexity (the same quantity measured
        # on the sampled tokens), judged as a multiple of its reference and a rise in nats.
        ppl_up = ppl is not None and ppl.ref > 0 and ppl.ratio() >= c.perplexity_up_ratio
        if ent is not None and ent.ref > 0:
            unc, unc_rise, unc_ratio = ent, ent.level - ent.ref, ent.ratio()
            up, extreme = c.entropy_up_ratio, c.entropy_extreme_ratio
        elif ppl is not None and ppl.ref > 1.0:
            log_ref, log_level = math.log(ppl.ref), math.log(max(ppl.level, 1.0))
            unc, unc_rise, unc_ratio = ppl, log_level - log_ref, log_level / log_ref
            up, extreme = c.log_perplexity_up_ratio, c.log_perplexity_extreme_ratio
            ppl_up = False  # it is the primary, not a second witness
        else:
            unc = None
        if unc is not None and unc_rise >= c.entropy_min_rise_nats:
            witnesses = ([reward] if reward_falling else []) + ([length] if length_up else []) + (
                [trunc] if pinned else []) + ([ppl] if ppl_up else [])
            if (unc_ratio >= up and witnesses) or unc_ratio >= extreme:
                found["random_tokens"] = (unc.name, [unc, *witnesses], f"random tokens: {unc.name} exploding" + (
                    "" if witnesses else " (no other metric needed at this size)"))

        # Repetition (the paper's collapse without KL): uncertainty and bigram diversity down while answers
        # grow toward the cap. distinct_2 is required: a reasoning run's answers also grow while its entropy
        # falls, but its bigrams stay diverse.
        dist = _view(tracks, "distinct_2", step, c)
        if dist is not None and dist.ref > 0 and dist.ratio() <= c.distinct_down_ratio and (length_up or pinned):
            unc_down = [x for x in (ent, ppl) if x is not None and x.ref > 0 and x.down_ratio() <= c.entropy_down_ratio]
            if unc_down and not reward_falling:
                found["repetition"] = ("distinct_2", [dist, *unc_down] + ([trunc] if pinned else [length]),
                                       "repetition: diversity and uncertainty down, answers toward the cap")

        if length is not None and length.ref > 0:
            r = length.ratio()
            ent_down = ent is not None and ent.ref > 0 and ent.ratio() <= c.entropy_down_ratio
            witnesses = ([ent] if ent_down else []) + ([kl_any] if kl_up else [])
            if (r <= c.length_collapse_ratio and witnesses) or r <= c.length_collapse_extreme_ratio:
                found["length_collapse"] = ("response_length", [length, *witnesses],
                                            "answer length collapsed")

        # Length runaway: answers spiral to several times their length while reward gains nothing and
        # the policy is not exploring (entropy not up): loops that have not reached a large cap yet (verl
        # runs with a 16k cap pin it only at the very end). A reasoning run lengthens its answers too, but
        # slowly and while its reward climbs.
        if (length is not None and length.ref > 0 and length.ratio() >= c.length_runaway_ratio
                and len(length.values) >= 2 * c.reference_lag_points
                and reward is not None and not reward_rising and not (ent is not None and ent.ref > 0
                                                                        and ent.ratio() > 1.0)):
            found["length_runaway"] = ("response_length", [length, reward] + ([ent] if ent is not None else []),
                                       "answers running away in length while reward does not rise")

        if pinned and not reward_rising:
            found["pinned_at_cap"] = ("truncated_fraction", [trunc] + ([reward] if reward is not None else []),
                                      "answers pinned at the length cap" + (
                                          ", reward not rising" if reward is not None else ""))

        # Reward alone is the weakest evidence (a small batch's binary reward dips to 0 for a few points in
        # healthy runs): it is a collapse where no action-space metric is logged to say otherwise (the
        # issue's class of runs that log reward only), or where one of them moved the way a failing policy
        # moves it: answers toward the cap or collapsing, KL or perplexity up, entropy up. (Entropy falling
        # is every healthy RL run's course, so it is no witness.)
        action = [x for x in (ent, length, kl_any, ppl) if x is not None and x.ref > 0]
        if reward is not None:
            level = self._span_level(reward, step, c)
            # Judged against the best level the run held: the highest its rolling reference (a median of up
            # to 60 points) has been. Not the reference now: a decline over dozens of steps drags it down
            # until the collapse is the new normal. Not the best span mean either: over hundreds of steps the
            # maximum of a noisy mean sits several standard errors above the run's true level.
            # A reference of a few points is no level the run "held": the peak counts references of at
            # least `reference_lag_points` values (before that, the reference itself is the bar).
            if len(reward.values) - c.reference_lag_points >= c.reference_lag_points:
                self.reward_peak = max(self.reward_peak, reward.ref)
            peak = max(self.reward_peak, reward.ref) if math.isfinite(self.reward_peak) else reward.ref
            # ...and the fall must exceed the level's own wobble over the run (the spread of its past span
            # levels, the last `reference_lag_points` left out): a reward that sits near 0 (a run that learns
            # nothing, a rare binary success) dips 80% and back without collapsing.
            wobble = self._level_wobble(step, level, c)
            if level < peak - max(c.reward_collapse_sigmas * max(self.span_noise, wobble),
                                  c.reward_collapse_fraction * abs(peak)):
                failing = ([length] if length_up or (length is not None and length.ref > 0
                                                      and length.ratio() <= c.length_collapse_ratio) else [])
                failing += [trunc] if pinned else []
                failing += [kl_any] if kl_up else []
                failing += [ppl] if ppl_up else []
                if ent is not None and ent.ref > 0 and ent.ratio() >= 1.0 / c.action_still_ratio and (
                        ent.level - ent.ref >= 0.5 * c.entropy_min_rise_nats):
                    failing.append(ent)
                if failing or not action:
                    found["reward_collapse"] = ("reward", [reward, *failing], f"reward collapsed from its peak level "
                                                f"{peak:.4g} to {level:.4g}" + ("" if action else
                                                                               " (no action-space metric logged)"))

        # Mode collapse: every answer the same. Entropy near zero, many-fold below its reference, and the
        # learning signal gone with it (GRPO: every group's rewards equal, so zero advantages and a zero
        # gradient). A healthy reasoning run's entropy also falls many-fold, but its groups still disagree.
        zero_std = _view(tracks, "frac_reward_zero_std", step, c)
        grad = _view(tracks, "grad_norm", step, c)
        if ent is not None and ent.ref > 0 and ent.ratio() <= c.mode_collapse_entropy_ratio:
            dead = [x for x in (zero_std,) if x is not None and x.level >= c.mode_collapse_zero_std]
            dead += [x for x in (grad,) if x is not None and x.ref > 0 and x.level <= 1e-9]
            if dead:
                found["mode_collapse"] = ("entropy", [ent, *dead],
                                          "mode collapse: every answer the same, no learning signal left")

        if (kl is not None and kl.level >= c.kl_explosion_nats
                and kl.ratio(floor_by_spread=True) >= c.kl_explosion_ratio):
            found["kl_explosion"] = ("kl", [kl], f"per-token KL to the reference above {c.kl_explosion_nats:g} nats")

        # A step can arrive in several records (train + eval, or its metrics split): each condition counts
        # a step once, whichever record made it hold (Detector._hold).
        self._new_point(step, CODES)
        out = []
        for code in CODES:
            hit = found.get(code)
            if hit is None:
                continue
            metric, moved, what = hit
            n = self._hold(code, step)
            if n == 1 and self.held_at.get(code) == step:
                # the span of a held condition starts at the point before its first holding point: that
                # point's value already averages the steps up to it
                self.held_since[code] = self.prev_point if self.prev_point >= 0 else step
            self.streak[code] = n
            need = getattr(c, _CONFIRM[code]) if code in _CONFIRM else 1
            if code == "kl_explosion":
                # still rising: |KL| above where it stood when the condition first held
                if self.streak[code] == 1:
                    self.first_level[code] = kl.level
                n = self.streak[code]
                if n < need or (n > 1 and kl.level <= self.first_level.get(code, math.inf)):
                    continue
            elif self.streak[code] < need:
                continue
            elif code in _SPAN and step - self.held_since.get(code, step) < c.min_span_steps:
                # the slow classes must also hold over a span of optimizer steps: at logging_steps 1 a few
                # points are a few noisy batches, at logging_steps 10 two points are twenty steps
                continue
            onset = min(m.onset() for m in moved)
            if self.incidents.fire(code, Severity.CRITICAL, metric, onset):
                parts = ", ".join(m.describe() for m in moved)
                out.append(self._alert(code, metric, step, Severity.CRITICAL, onset,
                                       f"{what} for {self.streak[code]} logged points: {parts}"))
        return out

    def _span_level(self, view: EarlyView, step: int, c: RegimeConfig) -> float:
        """The mean of the values over the last `min_span_steps` steps (at least the recent window), and in
        `span_noise` its standard error. At logging_steps 1 the reward of one batch of 8 rollouts jumps
        between 0 and its maximum, bimodally: only the mean over several batches says whether it collapsed
        (a median of such values, and its MAD, can both be 0 while a third of the batches score)."""
        recent = [v for s, v in zip(view.steps, view.values) if s > step - c.min_span_steps]
        k = max(len(recent), view.track.cfg.recent_window_steps)
        values = view.values[-k:]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
        self.span_noise = math.sqrt(var / n)
        return mean

    def _level_wobble(self, step: int, level: float, c: RegimeConfig) -> float:
        """Robust spread of the reward's past span levels (one per logged point, up to 60)."""
        if self.levels_step != step:
            self.levels_step = step
            self.reward_levels.append(level)
            del self.reward_levels[:-60]
        past = sorted(self.reward_levels[:-c.reference_lag_points] if c.reference_lag_points else self.reward_levels)
        if len(past) < 3:
            return 0.0
        mid = past[len(past) // 2]
        devs = sorted(abs(v - mid) for v in past)
        return 1.4826 * devs[len(devs) // 2]

    def new_segment(self):
        super().new_segment()
        self.streak = {}

    def state_dict(self):
        return {**super().state_dict(), "streak": dict(self.streak), "first_level": dict(self.first_level),
                "held_since": dict(self.held_since),
                "reward_peak": self.reward_peak if math.isfinite(self.reward_peak) else None,
                "reward_levels": list(self.reward_levels), "levels_step": self.levels_step}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.streak = {str(k): int(x) for k, x in d.get("streak", {}).items()}
        self.first_level = {str(k): float(x) for k, x in d.get("first_level", {}).items()}
        self.held_since = {str(k): int(x) for k, x in d.get("held_since", {}).items()}
        peak = d.get("reward_peak")
        self.reward_peak = float(peak) if peak is not None else -math.inf
        self.reward_levels = [float(v) for v in d.get("reward_levels", [])]
        self.levels_step = int(d.get("levels_step", -1))
