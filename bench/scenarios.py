"""Synthetic PPO-RLHF metric streams: failure families and healthy hard negatives.

Families are modelled on the PPO paper's figures ("Secrets of RLHF I": Fig. 4 vanilla
collapse, Fig. 9 PPO-max healthy) and on the failure reports listed in docs/PPO-MAX.md.
Every stream is randomized in what a detector must not depend on: reward-model units
(scale x0.1..x100 and an offset), the KL convention (per-token mean, or summed over tokens
as trl logs it), the length cap (64..2048), the noise (Gaussian, Student-t, AR(1)) and
which optional metrics exist. `onset` is the first step at which the failure dynamics move
the metrics' mean; None for healthy streams.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

FAILURES = ["vanilla_collapse", "repetition_to_cap", "kl_runaway", "negative_kl", "gibberish",
            "nan", "length_blowup", "empty_answers", "early_collapse"]
HEALTHY = ["ppo_max_healthy", "heavy_tailed", "autocorrelated", "outliers", "warmup_transient",
           "slow_drift", "prompt_mix_change"]


@dataclass
class Scenario:
    family: str
    seed: int
    onset: int | None
    events: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.onset is None


def _noise(rng: np.random.Generator, n: int, kind: str, phi: float) -> np.ndarray:
    """Unit-scale noise: gaussian, student-t (df 2.5, rescaled) or AR(1) with coefficient phi."""
    if kind == "t":
        e = rng.standard_t(2.5, n) / math.sqrt(2.5 / 0.5)
    else:
        e = rng.standard_normal(n)
    if phi > 0:
        out = np.empty(n)
        prev = 0.0
        s = math.sqrt(1 - phi * phi)
        for i in range(n):
            prev = phi * prev + s * e[i]
            out[i] = prev
        return out
    return e


def _ramp(steps: np.ndarray, onset: int, duration: int) -> np.ndarray:
    """0 before onset, rising linearly to 1 over `duration` steps."""
    return np.clip((steps - onset) / max(duration, 1), 0.0, 1.0)


def make_scenario(family: str, seed: int, n_steps: int = 600) -> Scenario:
    rng = np.random.default_rng([zlib.crc32(family.encode()), seed])
    t = np.arange(1, n_steps + 1, dtype=float)
    noise_kind = "t" if family == "heavy_tailed" else ("gauss" if rng.random() < 0.6 else "t")
    phi = rng.uniform(0.8, 0.95) if family == "autocorrelated" else rng.uniform(0.0, 0.5)

    def nz(scale: float) -> np.ndarray:
        return scale * _noise(rng, n_steps, noise_kind, phi)

    cap = int(2 ** rng.uniform(6, 11))  # 64 .. 2048 tokens
    units, offset = 10 ** rng.uniform(-1, 2), rng.uniform(-5, 5)
    kl_summed = rng.random() < 0.5

    # -- the healthy PPO-max backbone (Fig. 9): reward rises and plateaus, KL peaks then settles,
    # length plateaus, perplexity drifts slowly down.
    tau_r = rng.uniform(50, 250)
    reward = 3.0 + rng.uniform(0.5, 2.0) * (1 - np.exp(-t / tau_r)) + nz(rng.uniform(0.1, 0.3))
    kl_peak, kl_settle = rng.uniform(0.02, 0.08), rng.uniform(0.5, 0.8)
    t_peak = rng.uniform(60, 200)
    kl_mean = kl_peak * np.where(t < t_peak, t / t_peak, kl_settle + (1 - kl_settle) * np.exp(-(t - t_peak) / 80))
    kl = kl_mean * np.exp(nz(rng.uniform(0.1, 0.3))) - rng.uniform(0, 0.003)
    len0 = cap * rng.uniform(0.15, 0.45)
    length = len0 * (1 + rng.uniform(0.0, 0.3) * (1 - np.exp(-t / 150))) * np.exp(nz(rng.uniform(0.03, 0.1)))
    ppl0 = rng.uniform(2.0, 8.0)
    ppl_floor = rng.uniform(1.02, 1.15)
    ppl = ppl_floor + (ppl0 - ppl_floor) * (1 - 0.2 * (1 - np.exp(-t / 300))) * np.exp(nz(rng.uniform(0.02, 0.06)))
    distinct = np.clip(rng.uniform(0.6, 0.9) + nz(0.02), 0, 1)
    ref_ppl = ppl * rng.uniform(1.1, 1.5) * np.exp(nz(0.03))
    onset = None
    notes: dict = {"cap": cap, "units": round(units, 3), "kl_summed": bool(kl_summed), "noise": noise_kind,
                   "phi": round(phi, 2)}

    # -- healthy hard negatives
    if family == "outliers":
        for arr in (reward, kl, length, ppl):
            idx = rng.random(n_steps) < 0.01
            arr[idx] = arr[idx] + rng.choice([-1, 1], idx.sum()) * rng.uniform(5, 10, idx.sum()) * np.std(arr[50:])
        np.clip(length, 1, cap, out=length)
        np.clip(ppl, 1.0, None, out=ppl)
    elif family == "warmup_transient":
        w = rng.uniform(20, 50)
        bump = np.exp(-t / w)
        kl = kl + kl_peak * rng.uniform(1, 3) * bump
        length = length * (1 + rng.uniform(-0.4, 0.8) * bump)
        ppl = ppl * (1 + rng.uniform(0.2, 1.0) * bump)
        reward = reward - rng.uniform(0.5, 2.0) * bump
    elif family == "slow_drift":
        u = t / n_steps
        length = length * (1 + rng.uniform(0.3, 0.6) * u)
        kl = kl * (1 + rng.uniform(0.5, 1.5) * u)
        ppl = ppl * (1 - rng.uniform(0.1, 0.2) * u)
    elif family == "prompt_mix_change":
        at = int(rng.uniform(150, 450))
        notes["change_at"] = at
        step_ = (t >= at).astype(float)
        length = length * (1 + rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) * step_)
        reward = reward + rng.uniform(-3, 3) * 0.2 * step_
        ppl = ppl * (1 + rng.uniform(-0.1, 0.1) * step_)

    # -- failures: onset, then the paper's / the bug reports' dynamics
    if family in FAILURES:
        onset = int(rng.uniform(150, 450))
        # Ramp from onset to the full failure: the paper's collapse took ~50 steps (420-470);
        # emptying answers is abrupt (EOS probability blows up within a few updates).
        dur = int(rng.uniform(2, 10)) if family == "empty_answers" else int(rng.uniform(15, 50))
        if family == "early_collapse":
            # bench/fixtures/hacking_vanilla_collapse.jsonl: vanilla PPO at a high lr collapses from
            # step 2 to one sentence repeated to the cap within ~5-10 updates.
            onset, dur = int(rng.uniform(2, 12)), int(rng.uniform(3, 10))
        g = _ramp(t, onset, dur)
        if family == "vanilla_collapse":  # Fig. 4: reward accelerates, length to cap, KL x3+, ppl to floor
            reward = reward + rng.uniform(2.0, 6.0) * g ** 1.5
            length = length + (cap * rng.uniform(0.92, 1.0) - length) * g
            kl = kl * (1 + rng.uniform(2.0, 4.0) * g)  # "KL 0.03 -> 0.10+"
            ppl = ppl + (ppl_floor - ppl) * g * rng.uniform(0.7, 1.0)
            distinct = distinct * (1 - 0.6 * g)
        elif family == "repetition_to_cap":  # MOSS-RLHF #2: one sentence repeated to the cap
            reward = reward + rng.uniform(0.3, 1.5) * g
            length = length + (cap * 0.98 - length) * g
            kl = kl * (1 + rng.uniform(1.0, 3.0) * g)
            ppl = ppl + (ppl_floor - ppl) * g
            distinct = distinct * (1 - 0.85 * g)
        elif family == "kl_runaway":  # trl #204: KL grows until every answer is the same
            kl = kl * np.exp(np.log(rng.uniform(8, 30)) * g)
            reward = reward + rng.uniform(0.0, 1.0) * g
        elif family == "negative_kl":  # trl #417: negative-KL explosion
            kl = kl - kl_peak * rng.uniform(5, 40) * g ** 2
        elif family == "gibberish":  # trl #199, verl #2738: entropy rising into gibberish
            boost = np.exp(np.log(rng.uniform(3, 10)) * g)
            ppl, ref_ppl = ppl * boost, ref_ppl * boost * rng.uniform(1.5, 3)
            distinct = np.clip(distinct + (1 - distinct) * 0.8 * g, 0, 1)
            reward = reward - rng.uniform(1.0, 3.0) * g
            kl = kl * (1 + rng.uniform(2, 8) * g)
        elif family == "length_blowup":  # verl #1224: length blow-up
            length = length + (cap * 0.97 - length) * g
            kl = kl * (1 + rng.uniform(1.0, 2.5) * g)
            ppl = ppl + (ppl_floor - ppl) * g * rng.uniform(0.4, 0.8)
            reward = reward + rng.uniform(0.2, 1.0) * g
        elif family == "early_collapse":  # KL ~0 -> far above a healthy peak, ppl to its floor, cap
            reward = reward + rng.uniform(0.5, 2.0) * g
            length = length + (cap * rng.uniform(0.95, 1.0) - length) * g
            kl = kl + kl_peak * rng.uniform(10.0, 40.0) * g
            ppl = ppl + (ppl_floor - ppl) * g * rng.uniform(0.8, 1.0)
            distinct = distinct * (1 - rng.uniform(0.4, 0.8) * g)
        elif family == "empty_answers":  # OpenRLHF #1120: reward 0, output "!!!!" / EOS only
            length = length + (rng.uniform(1.0, 3.0) - length) * g
            reward = reward - rng.uniform(0.5, 2.0) * g
        notes["ramp_steps"] = dur

    length = np.clip(length, 1.0, cap)
    ppl = np.maximum(ppl, 1.0)
    trunc = np.clip((length / cap - 0.5) * 2.0 + nz(0.02), 0, 1)
    entropy = np.log(ppl) * np.exp(nz(0.03))
    reward = reward * units + offset * units
    kl_out = kl * length if kl_summed else kl
    # docs/METRICS.md: `kl` is nats per token; the summed convention (trl's old objective/kl) is `kl_seq`.
    kl_name = "kl_seq" if kl_summed else "kl"

    present = {"reward", kl_name, "perplexity", "response_length"}
    for opt in ("entropy", "distinct_2", "truncated_fraction", "ref_perplexity"):
        if rng.random() < 0.5:
            present.add(opt)
    cols = {"reward": reward, kl_name: kl_out, "perplexity": ppl, "response_length": length,
            "entropy": entropy, "distinct_2": distinct, "truncated_fraction": trunc, "ref_perplexity": ref_ppl}
    nan_at = None
    if family == "nan":
        nan_at = onset
        notes["nan_metric"] = str(rng.choice(["reward", kl_name, "perplexity"]))
    events = []
    t0 = 1.7e9
    for i in range(n_steps):
        m = {k: float(cols[k][i]) for k in present}
        if nan_at is not None and i + 1 >= nan_at:
            m[notes["nan_metric"]] = float("nan")
        events.append({"step": i + 1, "time": t0 + 10.0 * i, "metrics": m})
    notes["metrics"] = sorted(present)
    return Scenario(family=family, seed=seed, onset=onset, events=events, notes=notes)


def generate(families: list[str], seeds: int, n_steps: int = 600, seed0: int = 0):
    for fam in families:
        for s in range(seed0, seed0 + seeds):
            yield make_scenario(fam, s, n_steps)
