"""Wall time of one PPO-max step, and where it goes (generate / score / optimise).

    .venv/bin/python bench/ppo_step_time.py [--model bundled|tiny|PATH] [--steps 3] [--threads 2] [--set k=v ...]

Prints one line per step and the machine's load average, because on a shared CPU box the
figures depend on what else runs. Step 1 includes one-off warm-up (allocator, kernels).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bundled", help="bundled, tiny, or a model directory")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch

    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.trainer import PPOTrainer

    torch.set_num_threads(args.threads)
    model = args.model
    if model == "tiny":
        from rlguard.ppo.tiny import build_tiny_lm

        model = str(build_tiny_lm(Path(tempfile.mkdtemp()) / "tiny"))
    overrides = [f"model={model}", "eval_every=0", f"torch_threads={args.threads}", *args.overrides]
    cfg = load_train_config(None, overrides)
    t0 = time.perf_counter()
    trainer = PPOTrainer(cfg)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads},"
          f" device {trainer.device}; overrides: {' '.join(overrides[1:])}")
    print(f"# setup (load policy, reference, critic, reward): {time.perf_counter() - t0:.1f} s;"
          f" load average before: {os.getloadavg()[0]:.1f}")
    print("step | critic-only | step_s | generate_s | score_s | optimise_s | tokens/s | response_length")
    for _ in range(args.steps):
        m = trainer.train_step()
        print(f"{trainer.step} | {int(m['critic_pretraining'])} | {m['step_seconds']:.1f} | {m['generate_seconds']:.1f}"
              f" | {m['score_seconds']:.1f} | {m['optimise_seconds']:.1f} | {m['tokens_per_second']:.1f}"
              f" | {m['response_length']:.1f}", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f} (2-core machine shared with other jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
