"""Measured in-control ARL of MetricTrack's CUSUM vs the design target, per noise type.

    .venv/bin/python bench/calibrate_cusum.py [--steps 40000] [--target 2000]

The ratio measured/target is what monitors.calibration.ESTIMATION_INFLATION corrects for.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlguard.monitors.calibration import ESTIMATION_INFLATION, cusum_threshold, pipeline_threshold  # noqa: E402
from rlguard.monitors.config import ChangePointConfig, TrackConfig  # noqa: E402
from rlguard.monitors.track import MetricTrack  # noqa: E402


def alarms(values, h, k=1.0, min_z=0.0):
    t = MetricTrack("x", TrackConfig(), k=k, h=h)
    n = 0
    for i, v in enumerate(values):
        t.push(i + 1, v)
        if t.ready and ((t.cusum_up > h and t.z_long >= min_z) or (t.cusum_down > h and t.z_long <= -min_z)):
            n += 1
            t.reset_cusum()
    return n


def noise(kind: str, phi: float, n: int, seed: int = 1):
    rng = random.Random(seed)
    x, out = 0.0, []
    for _ in range(n):
        e = rng.gauss(0, 1)
        if kind == "student-t":
            e /= max(0.2, rng.gammavariate(1.5, 1 / 1.5) ** 0.5)
        x = phi * x + (1 - phi * phi) ** 0.5 * e
        out.append(5.0 + x)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40000)
    p.add_argument("--target", type=float, default=2000.0)
    a = p.parse_args(argv)
    k = 1.0
    print(f"target ARL {a.target:g} steps; k = {k}; inflation correction x{ESTIMATION_INFLATION:g}\n")
    min_z = ChangePointConfig().min_level_z
    print(f"| noise | phi | ARL with Siegmund h | ARL with pipeline h | detector rule (pipeline h and abs(z_long) >= {min_z:g}) |")
    print("|---|---|---|---|---|")
    for kind in ("gaussian", "student-t"):
        for phi in (0.0, 0.5, 0.9):
            v = noise(kind, phi, a.steps)
            raw = alarms(v, cusum_threshold(a.target, k))
            cor = alarms(v, pipeline_threshold(a.target, k))
            det = alarms(v, pipeline_threshold(a.target, k), min_z=min_z)
            fmt = lambda n: f"{a.steps / n:,.0f}" if n else f"> {a.steps:,}"  # noqa: E731
            print(f"| {kind} | {phi} | {fmt(raw)} | {fmt(cor)} | {fmt(det)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
