"""PPO-max step throughput on a GPU, guarded vs unguarded (issue: beyond one process).

A prepared, short device check: the bundled SmolLM2-135M in bfloat16 on CUDA, the same
config and seed run twice, once by `rlguard train` (no supervisor) and once by `rlguard run`
(supervised, default monitors/policies/sinks), and the median step time of each from its
metrics.jsonl (the first steps are warm-up and dropped). Prints one markdown table.

    python bench/gpu_throughput.py --steps 12 --batch 32 --max-new-tokens 64

Never required by tests; needs a CUDA device (exits 2 with a message otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def trainer_settings(args) -> dict:
    return {
        "model": args.model,
        "reward": "sentiment",
        "steps": args.steps,
        "seed": 0,
        "batch_size": args.batch,
        "minibatch_size": max(1, args.batch // 2),
        "max_new_tokens": args.max_new_tokens,
        "device": "cuda",
        "dtype": "bfloat16",
        "checkpoint_every": args.checkpoint_every,
        "eval_every": 0,
    }


def step_times(run_dir: Path, warmup: int) -> list[float]:
    times = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        seconds = (event.get("metrics") or {}).get("step_seconds")
        if seconds is not None and event.get("step", 0) > warmup:
            times.append(float(seconds))
    return times


def run(cmd: list[str], label: str) -> float:
    print(f"[{label}] {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"{label} exited {proc.returncode}")
    return time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped from the medians")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; run it on the GPU machine", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name(0)
    settings = trainer_settings(args)
    out = Path(tempfile.mkdtemp(prefix="rlguard-gpu-"))
    (out / "train.yaml").write_text(yaml.safe_dump(settings))
    (out / "run.yaml").write_text(yaml.safe_dump({"trainer": settings}))
    py = sys.executable
    wall_train = run([py, "-m", "rlguard.orchestrator.cli", "train", str(out / "train.yaml"), "--out", str(out / "unguarded")],
                     "unguarded")
    wall_run = run([py, "-m", "rlguard.orchestrator.cli", "run", str(out / "run.yaml"), "--out", str(out / "guarded")],
                   "guarded")
    unguarded = step_times(out / "unguarded", args.warmup)
    guarded = step_times(out / "guarded", args.warmup)
    if not unguarded or not guarded:
        sys.exit("no step_seconds recorded: raise --steps above --warmup")
    med_u, med_g = statistics.median(unguarded), statistics.median(guarded)
    samples_u, samples_g = args.batch / med_u, args.batch / med_g
    print(f"\nSmolLM2-135M bf16 on {device_name}: batch {args.batch}, {args.max_new_tokens} new tokens, "
          f"{args.steps} steps (first {args.warmup} dropped), checkpoint every {args.checkpoint_every}\n")
    print("| run | median step s | samples/s | wall s |")
    print("|---|---|---|---|")
    print(f"| unguarded (`rlguard train`) | {med_u:.3f} | {samples_u:.1f} | {wall_train:.0f} |")
    print(f"| guarded (`rlguard run`) | {med_g:.3f} | {samples_g:.1f} | {wall_run:.0f} |")
    print(f"\nguarded / unguarded step time: {med_g / med_u:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
