"""Compound detectors for the failure patterns of the PPO paper and of users' bug reports.

The paper ("Secrets of RLHF I", Fig. 4) saw reward and loss look healthy while the policy
collapsed; the action-space metrics moving TOGETHER reveal it. A single metric moving alone
(a prompt-mix change shifting length) is never critical here. A metric "moves" when its
current level (median of the recent window) is at least `shift_z` robust sigmas from its
lagged baseline AND has changed by a relative amount (so on any units or KL convention,
neither noise nor a negligible absolute change counts). Each pattern must hold for
`confirm_steps` consecutive steps; the two KL-only patterns (negative_kl, kl_runaway) for
`single_metric_confirm_steps`, still moving away at the end.

Patterns (code: severity):
  pattern_collapse: reward not falling, KL up sharply, length toward the cap (or
      truncated_fraction up) and perplexity / entropy / distinct_2 down -> critical;
      KL up with only one of the two action-space groups -> warning.
  empty_answers: response length collapses to ~nothing -> critical.
  gibberish: entropy / ref_perplexity / perplexity exploding while reward falls -> critical;
      perplexity x`gibberish_extreme_ratio` with entropy up -> critical whatever the reward.
  negative_kl: KL far below zero relative to its established magnitude -> critical.
  kl_runaway: KL a large multiple of its baseline and still rising -> critical.

Onset: the earliest CUSUM excursion start among the metrics that moved.

Early life (before a metric's track is armed, `track.warmup_steps`, and right after a rollback),
pattern_collapse and gibberish are judged by ratios against each metric's early reference
instead (monitors/early.py), in the same incident book, so a collapse from step 2 of a run is
critical by step ~6 and the armed detectors do not alert on it a second time.
"""

from __future__ import annotations

from rlguard.monitors.alerts import AlertCode, Severity
from rlguard.monitors.config import PatternConfig
from rlguard.monitors.detectors import Detector, fmt
from rlguard.monitors.early import answers_too_short, early_patterns
from rlguard.monitors.track import MetricTrack

DIVERSITY = ("perplexity", "entropy", "distinct_2")
EXPLOSIVE = ("entropy", "ref_perplexity", "perplexity")
SINGLE_METRIC = ("negative_kl", "kl_runaway")
CODES = (AlertCode.PATTERN_COLLAPSE, AlertCode.EMPTY_ANSWERS, AlertCode.GIBBERISH, AlertCode.NEGATIVE_KL,
         AlertCode.KL_RUNAWAY)


def _ready(tracks: dict[str, MetricTrack], name: str, step: int) -> MetricTrack | None:
    t = tracks.get(name)
    return t if t is not None and t.ready and t.last_step == step else None


def _describe(t: MetricTrack) -> str:
    return f"{t.name} {fmt(t.base_level)}->{fmt(t.level)} (x{t.ratio():.3g}, z {t.z:+.1f})"


class PatternDetector(Detector):
    """Evaluates every compound pattern on each event; one incident per pattern."""

    name = "patterns"

    def __init__(self, cfg: PatternConfig, rearm_steps: int):
        super().__init__(rearm_steps)
        self.cfg = cfg
        self.streak: dict[str, int] = {}
        self.first_level: dict[str, float] = {}

    # -- movement tests ----------------------------------------------------------------------

    def _up(self, t: MetricTrack | None, ratio: float) -> bool:
        return t is not None and t.z >= self.cfg.shift_z and t.ratio() >= ratio

    def _down(self, t: MetricTrack | None, ratio: float) -> bool:
        return t is not None and t.z <= -self.cfg.shift_z and t.ratio() <= ratio

    # -- the patterns --------------------------------------------------------------------------

    def update(self, step, values, tracks):
        c = self.cfg
        found: dict[str, tuple[Severity, str, list[MetricTrack], str]] = {}
        reward = _ready(tracks, "reward", step)
        kl = _ready(tracks, "kl", step) or _ready(tracks, "kl_seq", step)
        length = _ready(tracks, "response_length", step)
        truncated = _ready(tracks, "truncated_fraction", step)

        reward_falling = reward is not None and reward.z <= -c.reward_fall_z

        # Paper Fig. 4: reward up, KL up, length to the cap, perplexity to its floor.
        if reward is not None and not reward_falling:
            length_up = self._up(length, c.length_up_ratio)
            trunc_up = (truncated is not None and truncated.z >= c.shift_z
                        and truncated.level - truncated.base_level >= c.truncated_up_abs)
            div_tracks = [t for t in (_ready(tracks, n, step) for n in DIVERSITY) if t is not None]
            div_down = [t for t in div_tracks if self._down(t, c.diversity_down_ratio)]
            kl_up = kl is not None and kl.z >= c.corroborate_z and kl.ratio() >= c.kl_up_ratio
            moved = ([kl] if kl_up else []) + ([length] if length_up else []) + ([truncated] if trunc_up else [])
            moved += div_down
            strong = (length is not None and length.ratio() >= c.strong_length_ratio and length_up
                      and any(t.ratio() <= c.strong_diversity_ratio for t in div_down))
            toward_cap = length_up or trunc_up
            if (kl_up and toward_cap and (div_down or not div_tracks)) or strong:
                found["pattern_collapse"] = (Severity.CRITICAL, "kl" if kl_up else "response_length", moved,
                                             "policy collapse pattern")
            elif kl_up and kl.z >= c.shift_z and (toward_cap or div_down):
                found["pattern_collapse"] = (Severity.WARNING, "kl", moved, "partial collapse pattern")

        if length is not None:
            ref = length.base_level
            if length.established_level == length.established_level:
                ref = max(ref, length.established_level)
            if answers_too_short(length.level, ref, c):
                found["empty_answers"] = (Severity.CRITICAL, "response_length", [length],
                                          f"empty/very short answers (reference length {fmt(ref)})")

        if reward_falling:
            present = [t for t in (_ready(tracks, n, step) for n in EXPLOSIVE) if t is not None]
            exploding = [t for t in present if self._up(t, c.gibberish_up_ratio)]
            if [t.name for t in exploding] == ["entropy"] and exploding[0].level - exploding[0].base_level < (
                    c.gibberish_entropy_min_rise_nats):
                # entropy the only witness: x1.5 of a reasoning run's 0.4 nats is noise, not gibberish
                exploding = []
            # Two witnesses when two exist (entropy AND ref_perplexity), else the one there is.
            if exploding and len(exploding) >= min(2, len(present)):
                found["gibberish"] = (Severity.CRITICAL, exploding[0].name, exploding + [reward],
                                      "gibberish: uncertainty exploding while reward falls")
        else:  # a reward that reads random tokens as neutral: judged on the policy's own uncertainty
            ppl, ent = _ready(tracks, "perplexity", step), _ready(tracks, "entropy", step)
            if self._up(ppl, c.gibberish_extreme_ratio) and self._up(ent, c.gibberish_up_ratio):
                found["gibberish"] = (Severity.CRITICAL, "perplexity", [ppl, ent],
                                      "gibberish: perplexity and entropy exploding (the reward does not see it)")

        if kl is not None and kl.level < 0:
            ref = max(abs(kl.established_level) if kl.established_level == kl.established_level else 0.0,
                      abs(kl.base_level), kl.base_scale)
            if kl.z <= -c.shift_z and -kl.level > c.negative_kl_factor * ref:
                found["negative_kl"] = (Severity.CRITICAL, kl.name, [kl],
                                        f"negative-KL explosion (|KL| > {fmt(c.negative_kl_factor)} x {fmt(ref)})")

        # KL runaway: judged only once KL has an established level, because KL starting at ~0
        # (policy = reference) and growing many-fold over the first dozens of steps is normal.
        if (kl is not None and kl.established_level == kl.established_level and kl.last_r > 0
                and self._up(kl, c.kl_runaway_ratio)
                and kl.level >= c.kl_runaway_established_ratio * abs(kl.established_level)):
            found["kl_runaway"] = (Severity.CRITICAL, kl.name, [kl],
                                   f"KL runaway (established level {fmt(kl.established_level)})")

        # A later record of a step already judged (one step split over records) re-judges it with the
        # tracks it moved, but streaks and quiet steps count each step once.
        self._new_point(step, CODES)
        early: dict[str, tuple] = {}
        if c.early_enabled:
            early = {code: hit for code, hit in early_patterns(c, step, tracks).items() if code not in found}
        out = []
        for code in CODES:
            hit = found.get(code)
            if hit is None and code in early:
                out.extend(self._early_alert(code, step, early[code]))
                continue
            if hit is None:
                continue
            n = self.streak[code] = self._hold(code, step)
            severity, metric, moved, what = hit
            if code in SINGLE_METRIC:
                # KL alone: a heavy-tailed burst of a few steps is not a runaway; it must persist
                # and still be moving away (|KL| larger than when the pattern first held).
                if n == 1:
                    self.first_level[code] = abs(moved[0].level)
                if n < c.single_metric_confirm_steps or abs(moved[0].level) <= self.first_level.get(code, 0.0):
                    continue
            elif n < c.confirm_steps:
                continue
            onset = self._onset(step - n + 1, moved)
            if self.incidents.fire(code, severity, metric, onset):
                parts = ", ".join(_describe(t) for t in moved)
                lead = "" if reward is None or code == "gibberish" else f"reward z {reward.z:+.1f}; "
                out.append(self._alert(code, metric, step, severity, onset,
                                       f"{what} for {n} steps: {lead}{parts}"))
        return out

    def _early_alert(self, code: str, step: int, hit: tuple) -> list:
        """An early-life pattern (monitors/early.py): same incident book and confirmation as the rest."""
        severity, metric, onset, parts, what = hit
        n = self.streak[code] = self._hold(code, step)
        if n < self.cfg.confirm_steps or not self.incidents.fire(code, severity, metric, onset):
            return []
        return [self._alert(code, metric, step, severity, onset, f"{what} for {n} steps: {parts}")]

    @staticmethod
    def _onset(confirmed_from: int, moved: list[MetricTrack]) -> int:
        onsets = []
        for t in moved:
            if (t.cusum_up > 0 or t.restarted_up) and t.z > 0 and t.onset_up >= 0:
                onsets.append(t.onset_up)
            elif (t.cusum_down > 0 or t.restarted_down) and t.z < 0 and t.onset_down >= 0:
                onsets.append(t.onset_down)
        return min(onsets + [confirmed_from])

    def new_segment(self):
        super().new_segment()
        self.streak = {}

    def state_dict(self):
        return {**super().state_dict(), "streak": dict(self.streak), "first_level": dict(self.first_level)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.streak = {str(k): int(v) for k, v in d.get("streak", {}).items()}
        self.first_level = {str(k): float(v) for k, v in d.get("first_level", {}).items()}


class EvalShapeDetector(Detector):
    """Paper Appendix A: the held-out eval reward distribution turns long-tailed after collapse.

    Uses eval_reward_skew (unit-free) and, when present, the upper tail width
    eval_reward_p90 - eval_reward relative to its established width. Eval events are sparse:
    patience counts evaluations, not steps. Warning: it corroborates, it does not act alone."""

    name = "eval_shape"
    per_value = True

    def __init__(self, cfg, rearm_steps: int):
        super().__init__(max(1, cfg.patience_evals))
        self.cfg = cfg
        self.first: dict[str, list[float]] = {"skew": [], "tail": []}
        self.streak: dict[str, int] = {"skew": 0, "tail": 0}
        self.onset: dict[str, int] = {"skew": -1, "tail": -1}

    @staticmethod
    def _median(v: list[float]) -> float:
        s = sorted(v)
        n = len(s)
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])

    def update(self, step, values, tracks):
        c = self.cfg
        out = []
        skew = values.get("eval_reward_skew")
        p90, mean = values.get("eval_reward_p90"), values.get("eval_reward")
        obs = {}
        if skew is not None and skew == skew and abs(skew) != float("inf"):
            obs["skew"] = skew
        if p90 is not None and mean is not None and p90 - mean == p90 - mean and abs(p90 - mean) != float("inf"):
            obs["tail"] = p90 - mean
        for kind, v in obs.items():
            hist = self.first[kind]
            if len(hist) < c.establish_evals:
                hist.append(v)
                continue
            est = self._median(hist)
            if kind == "skew":
                beyond = v - est >= c.skew_rise
                msg = f"eval_reward_skew {fmt(v)} vs established {fmt(est)} (rise budget {fmt(c.skew_rise)})"
            else:
                beyond = est > 0 and v >= c.tail_ratio * est
                msg = f"eval reward upper tail (p90 - mean) {fmt(v)} is x{v / est if est > 0 else float('inf'):.3g}" \
                      f" its established {fmt(est)} (budget x{fmt(c.tail_ratio)})"
            metric = "eval_reward_skew" if kind == "skew" else "eval_reward_p90"
            if not beyond:
                self.streak[kind] = 0
                self.incidents.quiet(kind)
                continue
            if self.streak[kind] == 0:
                self.onset[kind] = step
            self.streak[kind] += 1
            if self.streak[kind] >= c.patience_evals and self.incidents.fire(kind, Severity.WARNING):
                out.append(self._alert("eval_long_tail", metric, step, Severity.WARNING, self.onset[kind],
                                       f"held-out reward distribution turning long-tailed: {msg}, "
                                       f"{self.streak[kind]} evaluations"))
        return out

    def new_segment(self):
        super().new_segment()
        self.streak = {"skew": 0, "tail": 0}

    def state_dict(self):
        return {**super().state_dict(), "first": {k: list(v) for k, v in self.first.items()},
                "streak": dict(self.streak), "onset": dict(self.onset)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.first = {k: [float(x) for x in v] for k, v in d["first"].items()}
        self.streak = {k: int(v) for k, v in d["streak"].items()}
        self.onset = {k: int(v) for k, v in d["onset"].items()}
