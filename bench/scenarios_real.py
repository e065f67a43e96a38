"""Synthetic streams shaped like real trl / verl runs: the classes of issue 13, and its hard negatives.

bench/scenarios.py models the PPO paper's figures with our full metric set; real runs look
different (issue 13, "What real runs look like"). Here every stream is one of the metric
SUBSETS that trainers actually log (trl GRPO at beta 0 logs no KL; nobody else logs
perplexity; some scripts log only the reward), and the failure and healthy dynamics are the
ones seen in real runs. A stream is generated at every optimizer step; bench/sparse_logging.py
then subsamples it at logging interval 5 or 10 as trl does (mean of the steps since the last
log), which is why `make_real` takes the interval: the run's length (20-50 logged points at
intervals 5/10) and, in some runs, an onset at the 3rd-5th logged point depend on it.

Randomized, because a detector must not depend on it: reward units and offset (0-1 accuracy
rewards, summed format rewards, RM scores), the length cap (64..4096 tokens), group size,
entropy and KL levels, grad-norm scale, whether clipfrac is identically 0 (trl with one
iteration per batch), the noise (Gaussian, Student-t, AR(1)) and its size.

`onset` is the first optimizer step whose metrics follow the failure dynamics (the kink for
KL runaway); None for healthy streams. Healthy families start with "healthy_".
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from bench.scenarios import Scenario, _noise, _ramp

_TRL = ("reward", "reward_std", "entropy", "response_length", "truncated_fraction", "frac_reward_zero_std",
        "grad_norm", "clipfrac")
_VERL = ("reward", "entropy", "response_length", "truncated_fraction", "grad_norm", "approx_kl")
SUBSETS: dict[str, tuple[str, ...]] = {
    "trl_beta0": _TRL,                       # trl GRPO default: beta = 0, no KL logged
    "trl_beta": _TRL + ("kl",),              # trl GRPO / RLOO with beta > 0
    "verl": _VERL,                           # verl GRPO without use_kl_loss: actor/ppo_kl only
    "verl_kl": _VERL + ("kl",),              # verl with actor/kl_loss (or critic/kl)
    "ppo_full": ("reward", "reward_std", "kl", "perplexity", "ref_perplexity", "response_length", "entropy",
                 "truncated_fraction", "distinct_2", "clipfrac", "approx_kl", "grad_norm"),  # rlguard's PPO worker
    "reward_only": ("reward",),              # a hand-written loop that logs its reward and nothing else
}
_ACTION = [s for s in SUBSETS if s != "reward_only"]
_WITH_KL = [s for s in SUBSETS if "kl" in SUBSETS[s]]

# family -> the subsets it is generated with (a class needs the metrics that show it at all).
REAL_FAILURES: dict[str, list[str]] = {
    "random_tokens": _ACTION,
    "length_collapse": _ACTION,
    "pinned_at_cap": _ACTION,
    "reward_collapse": list(SUBSETS),
    "kl_runaway": _WITH_KL,
}
REAL_HEALTHY: dict[str, list[str]] = {
    "healthy_reasoning": list(SUBSETS),   # entropy / 5-10, KL up to 0.2-0.3, length -1/3, all smooth
    "healthy_flat": list(SUBSETS),        # learns nothing; reward may sit near 0 from the start
    "healthy_spike": list(SUBSETS),       # one-step KL or grad-norm spikes that recover
    "healthy_at_cap": list(SUBSETS),      # most answers at the cap from step 1 while reward climbs
    "healthy_lora": list(SUBSETS),        # LoRA: KL grows several-fold from ~0 early, reward climbs
}
REAL_FAMILIES = {**REAL_FAILURES, **REAL_HEALTHY}

# Logged points after the onset that a family needs to show what it is (pinned: "dozens of points").
_TAIL_POINTS = {"pinned_at_cap": 24, "kl_runaway": 15}


def _run_shape(rng: np.random.Generator, family: str, interval: int) -> tuple[int, int | None]:
    """(n_steps, onset step): 20-50 logged points at intervals 5/10, 150-600 steps at interval 1;
    at intervals 5/10, 40% of the collapses start inside the 3rd-5th logged window."""
    if interval > 1:
        n_points = int(rng.integers(20, 51))
    else:
        n_points = int(rng.integers(150, 601))
    if family in REAL_HEALTHY:
        return n_points * interval, None
    tail = _TAIL_POINTS.get(family, 8) * (1 if interval > 1 else 4)
    n_points = max(n_points, 6 + tail)
    n_steps = n_points * interval
    early = rng.random() < (0.4 if interval > 1 else 0.15)
    if early:
        k = int(rng.integers(3, 6)) if interval > 1 else int(rng.integers(3, 16))
    else:
        lo = 6 if interval > 1 else max(16, n_points // 5)
        k = int(rng.integers(lo, max(lo + 1, n_points - tail)))
    onset = (k - 1) * interval + int(rng.integers(1, interval + 1))  # somewhere inside the k-th window
    return n_steps, onset


def make_real(family: str, seed: int, subset: str, interval: int = 1) -> Scenario:
    """One stream of `family` logging `subset`, at every optimizer step (subsample it afterwards
    with bench.sparse_logging.subsample for intervals > 1)."""
    if family not in REAL_FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {', '.join(REAL_FAMILIES)}")
    if subset not in SUBSETS:
        raise ValueError(f"unknown metric subset {subset!r}: expected one of {', '.join(SUBSETS)}")
    rng = np.random.default_rng([zlib.crc32(f"real/{family}/{subset}".encode()), interval, seed])
    n, onset = _run_shape(rng, family, interval)
    t = np.arange(1, n + 1, dtype=float)
    noise_kind = "gauss" if rng.random() < 0.6 else "t"
    phi = rng.uniform(0.0, 0.6) if rng.random() < 0.5 else 0.0

    def nz(scale: float) -> np.ndarray:
        return scale * _noise(rng, n, noise_kind, phi)

    cap = int(2 ** rng.integers(6, 13))                   # max_completion_length 64 .. 4096
    units = 10 ** rng.uniform(-0.5, 1.5)                 # 0-1 accuracy .. summed rewards .. RM scores
    offset = 0.0 if rng.random() < 0.6 else -rng.uniform(0.0, 1.0)  # e.g. -1 for a wrong format
    group = int(rng.choice([4, 8, 16]))
    batch_groups = int(rng.choice([8, 16, 32, 64]))

    # -- the healthy backbone: success rate q climbs and saturates, entropy declines a little,
    # length plateaus, KL (where the loss has a KL term) grows from 0 and settles.
    # a reward that collapses "to ~0" must have been clearly above 0 first
    q0 = rng.uniform(0.25, 0.6) if family in ("reward_collapse", "random_tokens") else rng.uniform(0.05, 0.5)
    q1 = min(0.95, q0 + rng.uniform(0.1, 0.4))
    tau_q = n * rng.uniform(0.15, 0.5)
    q = q0 + (q1 - q0) * (1 - np.exp(-t / tau_q))
    h0 = rng.uniform(0.15, 1.2)
    entropy = h0 * (1 - rng.uniform(0.0, 0.3) * (1 - np.exp(-t / (n * 0.4))))
    length = cap * rng.uniform(0.15, 0.5) * (1 + rng.uniform(-0.2, 0.3) * (1 - np.exp(-t / (n * 0.3))))
    kl_end = 10 ** rng.uniform(-3, -1.3)                 # 0.001 .. 0.05 nats/token
    kl = kl_end * (1 - np.exp(-t / (n * rng.uniform(0.1, 0.4))))
    grad = 10 ** rng.uniform(-1.5, 0.7) * (1 + rng.uniform(-0.3, 0.3) * t / n)
    clip_zero = rng.random() < 0.5                       # trl num_iterations=1: the ratio is always 1
    clipfrac = np.zeros(n) if clip_zero else np.full(n, rng.uniform(0.001, 0.03))
    approx_kl = np.full(n, 10 ** rng.uniform(-4.5, -2.5))
    distinct = np.full(n, rng.uniform(0.5, 0.9))
    ref_gap = rng.uniform(0.1, 0.4)                      # log(ref_ppl / ppl) of a healthy policy
    trunc = None                                         # from the length unless a family sets it
    notes: dict = {"cap": cap, "units": round(units, 3), "offset": round(offset, 3), "noise": noise_kind,
                   "phi": round(phi, 2), "group": group, "subset": subset, "interval": interval}

    # -- healthy hard negatives
    if family == "healthy_reasoning":
        tau_h, tau_k = n * rng.uniform(0.3, 0.6), n * rng.uniform(0.2, 0.5)
        entropy = h0 * np.exp(-np.log(rng.uniform(5, 10)) * _smooth(t, tau_h))  # / 5-10 by the last step
        kl = rng.uniform(0.2, 0.3) * _smooth(t, tau_k)                             # 0 -> 0.2-0.3, concave
        length = length[0] * (1 - rng.uniform(0.25, 0.4) * t / n)                  # drifts down a third
    elif family == "healthy_flat":
        q = np.full(n, rng.choice([rng.uniform(0.0, 0.03), rng.uniform(0.05, 0.8)]))
        entropy = np.full(n, h0)
        length = np.full(n, length[0])
        kl = kl_end * np.minimum(t / 10, 1) * 0.3
    elif family == "healthy_at_cap":
        length = cap * rng.uniform(0.85, 0.97) * np.ones(n)
        trunc = np.full(n, rng.uniform(0.6, 0.95)) - rng.uniform(0, 0.2) * t / n
        q = q0 * 0.5 + (q1 - q0 * 0.5) * (1 - np.exp(-t / tau_q))
    elif family == "healthy_lora":
        k0 = 10 ** rng.uniform(-5, -3.5)
        kl = k0 * (1 + rng.uniform(3, 10) * (1 - np.exp(-t / (n * rng.uniform(0.05, 0.2)))))
        q = q0 + (q1 - q0) * t / n                       # climbs steadily
        grad = grad * 0.1                                # LoRA adapters: small gradients

    # -- failures
    ramp_steps = None
    if onset is not None:
        few = max(1, int(round(interval * rng.uniform(1, 4)))) if interval > 1 else int(rng.integers(1, 21))
        if family == "random_tokens":  # near-uniform sampling: entropy 5-8 nats, length to the cap
            ramp_steps = few
            g = _ramp(t, onset, few)
            entropy = entropy + (rng.uniform(5, 8) - entropy) * g
            q = q * (1 - g) + rng.uniform(0.0, 0.02) * g
            length = length + (cap * rng.uniform(0.97, 1.0) - length) * g
            trunc = _trunc_of(length, cap) * (1 - g) + rng.uniform(0.95, 1.0) * g
            kl = kl + rng.uniform(3, 12) * g
            grad = grad * np.exp(np.log(rng.uniform(0.3, 5)) * g)
            clipfrac = clipfrac + (0 if clip_zero else rng.uniform(0.05, 0.3)) * g
            distinct = distinct + (0.98 - distinct) * g
            ref_gap = ref_gap + rng.uniform(1, 3) * g
        elif family == "length_collapse":  # tens of tokens -> ~3 between two logged points
            ramp_steps = max(1, int(rng.integers(1, interval + 1)))
            g = _ramp(t, onset, ramp_steps)
            length = length * rng.uniform(25, 70) / length[0]  # short answers before: tens of tokens
            target = length[onset - 1] / rng.uniform(10, 20)     # then 10-20x shorter: ~2-7 tokens
            length = length * np.exp(np.log(target / length) * g)
            entropy = entropy * np.exp(np.log(rng.uniform(0.02, 0.15)) * g)
            # the format / answer-index reward is gamed: it stays flat (half the runs) or rises
            gain = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
            q = q + (min(1.0, q[onset - 1] + gain) - q) * g
            kl = kl * (1 + rng.uniform(3, 30) * g)
            grad = grad * np.exp(np.log(rng.uniform(0.1, 1.0)) * g)
            distinct = distinct * (1 - rng.uniform(0.5, 0.9) * g)
            ref_gap = ref_gap + rng.uniform(0.5, 2) * g
        elif family == "pinned_at_cap":  # every answer at max length: clipped share 1.0, reward stalls
            ramp_steps = few
            g = _ramp(t, onset, few)
            length = length + (cap - length) * g
            trunc = _trunc_of(length, cap) * (1 - g) + g
            q = np.where(t < onset, q, q[onset - 1] * (1 - rng.uniform(0, 0.3) * g))  # stalls, may sag
            entropy = entropy * np.exp(np.log(rng.uniform(0.3, 1.5)) * g)  # loops (down) or rambling (up)
            kl = kl * (1 + rng.uniform(0.5, 3) * g)
            distinct = distinct * (1 - rng.uniform(0.0, 0.7) * g)
        elif family == "reward_collapse":  # reward to ~0 and it stays; nothing else moves
            ramp_steps = few
            g = _ramp(t, onset, few)
            q = q * (1 - g) + rng.uniform(0.0, 0.02) * g
        elif family == "kl_runaway":  # KL doubles every 5-25 steps from the kink, on for hundreds of steps
            t2 = rng.uniform(5, 25)
            k_hi = rng.uniform(1.0, 5.0)
            base = max(kl[onset - 1], 1e-4)
            climb = base * np.exp2(np.maximum(t - onset, 0) / t2)
            t_hi = onset + t2 * math.log2(max(k_hi / base, 1.0))
            slow = k_hi * (1 + 0.5 * np.maximum(t - t_hi, 0) / max(n - t_hi, 1))  # still climbing, slower
            kl = np.where(t < onset, kl, np.where(t < t_hi, climb, slow))
            # the reward keeps rising (over-optimisation), or stays flat (the 0.002 -> 3 nats run)
            gain = q1 - q[onset - 1] + rng.uniform(0, 0.2) if rng.random() < 0.6 else 0.0
            q = np.where(t < onset, q, q[onset - 1] + gain * (1 - np.exp(-(t - onset) / (n * 0.2))))
            entropy = np.where(t < onset, entropy, entropy * np.exp(-0.5 * _ramp(t, onset, int(n - onset))))
            ref_gap = ref_gap + np.log1p(np.maximum(kl - kl[onset - 1], 0))
            notes["doubling_steps"] = round(t2, 1)
        notes["ramp_steps"] = ramp_steps

    # -- what the trainer logs, with noise. Step-level values; the logger averages them later.
    q = np.clip(q, 0.0, 1.0)
    sd_q = np.sqrt(np.maximum(q * (1 - q), 1e-4) / (group * batch_groups))
    q_obs = np.clip(q + sd_q * _noise(rng, n, noise_kind, phi), 0, 1)
    reward = units * q_obs + offset * units
    reward_std = units * np.sqrt(q_obs * (1 - q_obs)) * np.exp(nz(0.05))
    p_same = q ** group + (1 - q) ** group
    frac_zero_std = rng.binomial(batch_groups, np.clip(p_same, 0, 1)) / batch_groups
    length = np.clip(length * np.exp(nz(rng.uniform(0.02, 0.08))), 1.0, cap)
    if trunc is None:
        trunc = _trunc_of(length, cap)
    trunc = np.clip(trunc + nz(0.01), 0, 1)
    entropy = np.maximum(entropy * np.exp(nz(rng.uniform(0.02, 0.08))), 1e-3)
    kl = np.maximum(kl * np.exp(nz(rng.uniform(0.05, 0.25))), 0.0)
    kl[0] = 0.0                                           # step 1: the policy is the reference
    grad = grad * np.exp(nz(rng.uniform(0.1, 0.4)))
    if family == "healthy_spike":
        grad, kl = _spikes(rng, n, grad, kl, notes)
    clipfrac = np.clip(clipfrac * np.exp(nz(0.3)), 0, 1)
    approx_kl = approx_kl * (1 + nz(0.6))                 # k1 over one step: noisy, may be negative
    ppl = np.exp(entropy * rng.uniform(0.9, 1.1))
    ref_ppl = ppl * np.exp(ref_gap + nz(0.03))
    distinct = np.clip(distinct + nz(0.02), 0, 1)
    cols = {"reward": reward, "reward_std": reward_std, "entropy": entropy, "response_length": length,
            "truncated_fraction": trunc, "frac_reward_zero_std": frac_zero_std, "grad_norm": grad,
            "clipfrac": clipfrac, "kl": kl, "approx_kl": approx_kl, "perplexity": ppl, "ref_perplexity": ref_ppl,
            "distinct_2": distinct}
    present = SUBSETS[subset]
    t0 = 1.75e9
    step_s = rng.uniform(5, 60)
    events = [{"step": i + 1, "time": t0 + step_s * i, "metrics": {k: float(cols[k][i]) for k in present}}
              for i in range(n)]
    notes["metrics"] = list(present)
    return Scenario(family=family, seed=seed, onset=onset, events=events, notes=notes)


def _smooth(t: np.ndarray, tau: float) -> np.ndarray:
    """0 at step 0 rising smoothly (concave) to exactly 1 at the last step."""
    return (1 - np.exp(-t / tau)) / (1 - math.exp(-t[-1] / tau))


def _trunc_of(length: np.ndarray, cap: int) -> np.ndarray:
    """Share of answers that hit the cap, from the mean length (answer lengths spread ~ a gamma)."""
    return 1.0 / (1.0 + np.exp(-(length / cap - 0.8) * 12))


def _spikes(rng, n, grad, kl, notes):
    """1-3 single-step spikes (x10-100) in grad norm or KL, the next step back to normal."""
    grad, kl = grad.copy(), kl.copy()
    at = sorted(int(s) for s in rng.choice(np.arange(5, n), size=int(rng.integers(1, 4)), replace=False))
    for s in at:
        if rng.random() < 0.5:
            grad[s] *= rng.uniform(10, 100)
        else:
            kl[s] = max(kl[s], 0.01) * rng.uniform(10, 100)
    notes["spikes_at"] = [s + 1 for s in at]
    return grad, kl


def generate_real(families, subsets, intervals, seeds: int, seed0: int = 0):
    """(family, subset, interval, seed) for every family, each of its subsets in `subsets`, each
    interval and seed: the per-step Scenario (subsample with bench.sparse_logging)."""
    for fam in families:
        for sub in REAL_FAMILIES[fam]:
            if sub not in subsets:
                continue
            for iv in intervals:
                for s in range(seed0, seed0 + seeds):
                    yield make_real(fam, s, sub, iv)
