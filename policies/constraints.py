"""Tighten and relax arithmetic for the constraint knobs, with reasons that carry the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rlguard.policies.config import TightenConfig
from rlguard.policies.decision import CONSTRAINT_NAMES


def fmt(x: float) -> str:
    """Short, exact-enough number for reasons: 0.05, 0.075, 1e-06."""
    return f"{x:.4g}"


@dataclass(frozen=True)
class KnobChange:
    """One constraint's move: old -> new, and why it moved less than asked (a bound)."""

    name: str
    old: float
    new: float
    bound_note: str = ""

    @property
    def changed(self) -> bool:
        return self.new != self.old

    def describe(self) -> str:
        if not self.changed:
            return f"{self.name} {fmt(self.old)} unchanged ({self.bound_note})"
        text = f"{self.name} {fmt(self.old)} -> {fmt(self.new)}"
        return f"{text} ({self.bound_note})" if self.bound_note else text


def _round(x: float) -> float:
    """Drop float noise (0.05 * 1.5 = 0.07500000000000001) so configs and journals read 0.075."""
    return float(f"{x:.12g}")


def _clamp(name: str, value: float, lo: float, hi: float) -> tuple[float, str]:
    value = _round(value)
    if value > hi:
        return hi, f"at max {fmt(hi)}"
    if value < lo:
        return lo, f"at min {fmt(lo)}"
    return value, ""


def tighten(current: Mapping[str, float], cfg: TightenConfig) -> list[KnobChange]:
    """One tighten step for every knob present in `current`, each kept within its bounds."""
    out = []
    for name in CONSTRAINT_NAMES:
        if name not in current or current[name] is None:
            continue
        old = float(current[name])
        rule = cfg.rule(name)
        new, note = _clamp(name, old * rule.factor, rule.min, rule.max)
        if new == old and not note:
            note = "already at its bound"
        out.append(KnobChange(name, old, new, note))
    return out


def relax(current: Mapping[str, float], initial: Mapping[str, float], cfg: TightenConfig) -> list[KnobChange]:
    """Undo one tighten step per knob, never moving past the initial value.

    Knobs at their initial value, or loosened beyond it by an operator, are left alone."""
    out = []
    for name in CONSTRAINT_NAMES:
        if current.get(name) is None or initial.get(name) is None:
            continue
        old, start = float(current[name]), float(initial[name])
        factor = cfg.rule(name).factor
        tightened = old > start if factor > 1 else old < start
        if not tightened:
            continue
        stepped = _round(old / factor)
        # Relax toward the initial value but never past it.
        new = max(stepped, start) if factor > 1 else min(stepped, start)
        # Float round-off near the initial value: snap to it.
        if abs(new - start) <= 1e-12 * max(abs(start), 1e-30):
            new = start
        out.append(KnobChange(name, old, new, "back at initial value" if new == start else ""))
    return out


def params_of(changes: list[KnobChange]) -> dict[str, float]:
    """The new values to send to the trainer (only knobs that move)."""
    return {c.name: c.new for c in changes if c.changed}


def describe(changes: list[KnobChange]) -> str:
    return ", ".join(c.describe() for c in changes) if changes else "no constraint values reported"
