"""`rlguard train` on a real model for N steps, and an exact resume, through the CLI a user runs.

Run A trains N steps in one process. Run B trains N/2 steps, then a NEW `rlguard train
--resume` process continues from B's step-N/2 checkpoint to step N. Same seed and config, so
steps N/2+1..N of A and B must match (every metric except wall-clock ones). Prints the per-step
figures of A, the largest relative difference between A and B per metric, and the wall times.

    .venv/bin/python bench/train_resume_check.py --model bundled --steps 10
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

SHOWN = ("reward", "kl", "perplexity", "distinct_2", "response_length", "value_loss", "step_seconds")


def _train(args: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "train", *args], stdout=out,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"rlguard train {' '.join(args)} exited {proc.returncode}; see {log}")
    return time.perf_counter() - t0


def _events(run_dir: Path) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {e["step"]: e["metrics"] for e in map(json.loads, lines)}


def _volatile(name: str) -> bool:
    return name.endswith("_seconds") or name == "tokens_per_second"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bundled")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="/tmp/rlguard-train-resume")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra trainer overrides")
    a = p.parse_args(argv)
    half = a.steps // 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"model={a.model}", "reward=sentiment", f"checkpoint_every={half}", f"eval_every={half}",
              "device=cpu", *a.set]
    sets = [x for kv in common for x in ("--set", kv)]
    full, part = out / "full", out / "half"
    walls = {
        "A: steps 1-N, one process": _train([*sets, "--set", f"steps={a.steps}", "--out", str(full), "--no-progress"],
                                            out / "full.log"),
        "B: steps 1-N/2": _train([*sets, "--set", f"steps={half}", "--out", str(part), "--no-progress"],
                                 out / "half.log"),
    }
    ckpt = part / "checkpoints" / f"step-{half:06d}"
    walls["B: resume N/2+1-N, new process"] = _train(
        [*sets, "--set", f"steps={a.steps}", "--resume", str(ckpt), "--out", str(part), "--no-progress"],
        out / "resume.log")
    ea, eb = _events(full), _events(part)
    print(f"# model {a.model}, {a.steps} steps, checkpoint at {half}; overrides {' '.join(common)}")
    print("| step | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 1) + "|")
    for step in sorted(ea):
        print(f"| {step} | " + " | ".join(f"{ea[step].get(k, float('nan')):.4g}" for k in SHOWN) + " |")
    worst: dict[str, float] = {}
    for step in range(half + 1, a.steps + 1):
        for k, v in ea[step].items():
            if _volatile(k):
                continue
            w = eb[step][k]
            rel = abs(v - w) / max(abs(v), abs(w), 1e-12) if not (math.isnan(v) and math.isnan(w)) else 0.0
            worst[k] = max(worst.get(k, 0.0), rel)
    bad = {k: r for k, r in worst.items() if r > 1e-6}
    print(f"\nresumed steps {half + 1}-{a.steps}: {len(worst)} metrics compared; largest relative difference "
          f"{max(worst.values()):.2e} ({max(worst, key=worst.get)}); over 1e-6: {bad or 'none'}")
    sizes = sum(f.stat().st_size for f in ckpt.iterdir()) / 1e9
    print(f"checkpoint {ckpt.name}: {sizes:.2f} GB; files: {sorted(f.name for f in ckpt.iterdir())}")
    for name, s in walls.items():
        print(f"wall {name}: {s:.0f} s")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
