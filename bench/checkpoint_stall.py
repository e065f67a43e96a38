"""How long the training loop is blocked per checkpoint: synchronous save vs async snapshot.

    .venv/bin/python bench/checkpoint_stall.py [--hidden 64 256] [--saves 4]

For each model size (a random Llama from ppo/tiny.py, 2 layers, CPU, 1 torch thread, full
fine-tuning: policy + critic + both AdamW states are checkpointed), it alternates steps and
checkpoints and reports medians of:
  step       one train_step
  sync       save_checkpoint (the loop waits for the whole write: files, fsync, sha256, rename)
  async      checkpoint_snapshot + AsyncCheckpointWriter.submit (the loop waits for the CPU
             copy only; submit also waits for a previous write still in flight, included here)
Goal: async <= 10% of a step. Prints a markdown table (bench/notes/ppo_trainer.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(model: Path, saves: int) -> dict:
    from rlguard.ppo.async_checkpoint import AsyncCheckpointWriter
    from rlguard.ppo.config import TrainConfig
    from rlguard.ppo.trainer import PPOTrainer

    cfg = TrainConfig(model=str(model), reward="sentiment", batch_size=4, minibatch_size=2, max_new_tokens=16,
                      torch_threads=1, eval_every=0, checkpoint_every=0, device="cpu", steps=1000, seed=0,
                      critic_pretrain_steps=0)
    with tempfile.TemporaryDirectory() as d:
        t = PPOTrainer(cfg, d)
        writer = AsyncCheckpointWriter()
        t.train_step()  # warm-up
        steps, sync, stall = [], [], []
        for _ in range(saves):
            t0 = time.perf_counter()
            t.train_step()
            steps.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            t.save_checkpoint(Path(d) / "sync" / f"step-{t.step:06d}")
            sync.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            t.train_step()
            steps.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            writer.submit(t.checkpoint_snapshot(), Path(d) / "async" / f"step-{t.step:06d}")
            stall.append(time.perf_counter() - t0)
        writer.wait()
        assert writer.failures == 0 and writer.written == saves
        n_params = sum(p.numel() for p in t.policy_params) + sum(p.numel() for p in t.critic_params)
    return {"step_s": statistics.median(steps), "sync_s": statistics.median(sync),
            "async_s": statistics.median(stall), "params": n_params}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--saves", type=int, default=4)
    args = ap.parse_args()
    from rlguard.ppo.tiny import build_tiny_lm

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for hidden in args.hidden:
            model = build_tiny_lm(Path(d) / f"lm-{hidden}", hidden=hidden)
            rows.append((hidden, measure(model, args.saves)))
    print("## PPO trainer: checkpoint stall (bench/checkpoint_stall.py)\n")
    print(f"Command: `.venv/bin/python bench/checkpoint_stall.py --hidden {' '.join(map(str, args.hidden))} "
          f"--saves {args.saves}` (random 2-layer Llama, CPU, 1 torch thread, shared 2-core machine; medians)\n")
    print("| model | trainable params | step | sync save (loop blocked) | async: snapshot + submit (loop blocked) "
          "| goal |\n|---|---|---|---|---|---|")
    for hidden, r in rows:
        print(f"| hidden {hidden} | {r['params'] / 1e6:.2f} M | {r['step_s'] * 1000:.0f} ms | "
              f"{r['sync_s'] * 1000:.1f} ms ({r['sync_s'] / r['step_s'] * 100:.0f}% of a step) | "
              f"{r['async_s'] * 1000:.1f} ms ({r['async_s'] / r['step_s'] * 100:.1f}% of a step, "
              f"{r['async_s'] / r['sync_s'] * 100:.0f}% of sync) | <= 10% of a step |")


if __name__ == "__main__":
    main()
