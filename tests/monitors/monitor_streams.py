"""Scripted metric streams for the monitor tests: a healthy PPO-max-like backbone plus named changes."""

from __future__ import annotations

import math
import random

from rlguard.monitors.events import MetricEvent


def healthy_stream(n: int = 300, seed: int = 0, reward_units: float = 1.0, reward_offset: float = 0.0,
                   kl_summed: bool = False, cap: int = 512, extra: tuple[str, ...] = ()) -> list[dict]:
    """Per-step metric dicts: reward rises then plateaus, KL ~0.03, length ~0.3 cap, perplexity ~3."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = i + 1
        length = cap * 0.3 * (1 + 0.03 * rng.gauss(0, 1))
        kl = 0.03 * math.exp(0.1 * rng.gauss(0, 1))
        row = {
            "reward": (3.0 + 1.0 * (1 - math.exp(-t / 100)) + 0.1 * rng.gauss(0, 1) + reward_offset) * reward_units,
            "kl": kl * length if kl_summed else kl,
            "perplexity": 3.0 * math.exp(0.02 * rng.gauss(0, 1)),
            "response_length": length,
        }
        if "entropy" in extra:
            row["entropy"] = math.log(row["perplexity"]) * math.exp(0.02 * rng.gauss(0, 1))
        if "distinct_2" in extra:
            row["distinct_2"] = 0.8 + 0.01 * rng.gauss(0, 1)
        if "truncated_fraction" in extra:
            row["truncated_fraction"] = max(0.0, 0.02 + 0.01 * rng.gauss(0, 1))
        if "ref_perplexity" in extra:
            row["ref_perplexity"] = 4.0 * math.exp(0.02 * rng.gauss(0, 1))
        rows.append(row)
    return rows


def ramp(i: int, onset: int, duration: int) -> float:
    return min(1.0, max(0.0, (i + 1 - onset) / duration))


def collapse(rows: list[dict], onset: int, duration: int = 20, cap: int = 512, kl_summed: bool = False,
             reward_units: float = 1.0) -> list[dict]:
    """The paper's Fig. 4: reward accelerates, length to the cap, KL x3, perplexity to its floor."""
    out = []
    for i, r in enumerate(rows):
        g = ramp(i, onset, duration)
        r = dict(r)
        r["reward"] += 4.0 * g * reward_units
        length = r["response_length"] + (cap * 0.98 - r["response_length"]) * g
        per_token = (r["kl"] / r["response_length"] if kl_summed else r["kl"]) * (1 + 2.5 * g)
        r["response_length"] = length
        r["kl"] = per_token * length if kl_summed else per_token
        r["perplexity"] = r["perplexity"] + (1.05 - r["perplexity"]) * g
        if "entropy" in r:
            r["entropy"] = r["entropy"] * (1 - 0.8 * g)
        if "distinct_2" in r:
            r["distinct_2"] = r["distinct_2"] * (1 - 0.7 * g)
        out.append(r)
    return out


def events(rows: list[dict], start_step: int = 1, t0: float = 1.7e9, dt: float = 10.0) -> list[MetricEvent]:
    return [MetricEvent(step=start_step + i, metrics=dict(r), time=t0 + dt * i) for i, r in enumerate(rows)]


def feed(stack, evs) -> list:
    alerts = []
    for ev in evs:
        alerts.extend(stack.update(ev))
    return alerts
