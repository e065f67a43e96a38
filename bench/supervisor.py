"""Supervisor benchmarks on the tiny model (CPU): overhead, rollback latency, checkpoint stall.

    .venv/bin/python bench/supervisor.py [--steps 30] [--reps 2]

1. Overhead: wall time per step of `rlguard run` (built-in worker + SDK + supervisor) vs
   `rlguard train` (no supervisor), same config and seed, runs interleaved; per-step time is
   the median gap between consecutive events' `time` in metrics.jsonl. Goal: ratio <= 1.02.
2. Rollback latency: a policy rollback (a NaN reward batch at step 16); decision ->
   restore acknowledged, and decision -> first event after the restore, for in-process
   and restart rollbacks, against one `PPOTrainer.load_checkpoint` of the same checkpoint.
   Goal: in-process (decision -> restored) <= 2x one load.
3. Checkpoint stall: how long the training loop is blocked per checkpoint relative to a step,
   synchronous (`save_checkpoint`) and asynchronous (`checkpoint_snapshot` + writer submit, the
   worker's default; see also bench/checkpoint_stall.py for larger models).
Prints a markdown section (the figures for bench/notes/supervisor.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def trainer_cfg(model: Path, steps: int, **extra) -> dict:
    cfg = {"model": str(model), "reward": "sentiment", "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 16,
           "torch_threads": 1, "eval_every": 0, "checkpoint_every": 5, "device": "cpu", "steps": steps, "seed": 0}
    cfg.update(extra)
    return cfg


def quiet_monitors() -> dict:
    return {"spike": {"enabled": False}, "change_point": {"enabled": False}, "drift": {"enabled": False},
            "patterns": {"enabled": False}, "eval_shape": {"enabled": False}, "bounds": {"enabled": False}}


def step_gaps(run_dir: Path) -> tuple[list[float], list[float]]:
    """Wall time between consecutive events, and the part of it spent outside train_step
    (gap - the next step's own step_seconds): the latter is what supervision can add, and is
    not drowned by the compute-time noise of a shared machine."""
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    gaps = [b["time"] - a["time"] for a, b in zip(events, events[1:])]
    outside = [g - b["metrics"].get("step_seconds", 0.0) for g, b in zip(gaps, events[1:])]
    return gaps, outside


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", *args], cwd=REPO, env=ENV, timeout=timeout,
                          capture_output=True, text=True)


def overhead(tmp: Path, model: Path, steps: int, reps: int, checkpoint_every: int) -> dict:
    gaps = {"plain": [], "supervised": []}
    outside = {"plain": [], "supervised": []}
    for rep in range(reps):  # interleaved, so that machine load hits both alike
        tcfg = tmp / f"train-{rep}-{checkpoint_every}.yaml"
        tcfg.write_text(yaml.safe_dump(trainer_cfg(model, steps, checkpoint_every=checkpoint_every)))
        r = cli("train", str(tcfg), "--out", str(tmp / f"plain-{rep}-{checkpoint_every}"), "--no-progress")
        assert r.returncode == 0, r.stderr[-2000:]
        g, o = step_gaps(tmp / f"plain-{rep}-{checkpoint_every}")
        gaps["plain"] += g[1:]
        outside["plain"] += o[1:]
        rcfg = tmp / f"run-{rep}-{checkpoint_every}.yaml"
        rcfg.write_text(yaml.safe_dump({"trainer": trainer_cfg(model, steps, checkpoint_every=checkpoint_every), "monitors": quiet_monitors()}))
        r = cli("run", str(rcfg), "--out", str(tmp / f"sup-{rep}-{checkpoint_every}"), "-q")
        assert r.returncode == 0, r.stderr[-2000:]
        g, o = step_gaps(tmp / f"sup-{rep}-{checkpoint_every}")
        gaps["supervised"] += g[1:]
        outside["supervised"] += o[1:]
    med = {k: statistics.median(v) for k, v in gaps.items()}
    out_mean = {k: statistics.mean(v) for k, v in outside.items()}
    step = statistics.median(gaps["plain"] + gaps["supervised"])
    return {"plain_step_s": med["plain"], "supervised_step_s": med["supervised"],
            "raw_ratio": med["supervised"] / med["plain"], "outside_plain_s": out_mean["plain"],
            "outside_supervised_s": out_mean["supervised"],
            "ratio": (step + out_mean["supervised"] - out_mean["plain"]) / step, "n_steps": len(gaps["plain"])}


def rollback_latency(tmp: Path, model: Path, mode: str) -> dict:
    """A policy rollback: reward call 16 of attempt 0 is NaN -> non_finite alert at step 16 ->
    rollback to the checkpoint of step 10, in-process or by relaunch."""
    run_dir = tmp / f"rollback-{mode}"
    cfg = tmp / f"rollback-{mode}.yaml"
    cfg.write_text(yaml.safe_dump({
        "trainer": trainer_cfg(model, 24, checkpoint_every=5, reward="tests.orchestrator.collapse_reward:nan_on_first_attempt"),
        "monitors": quiet_monitors(),
        "supervisor": {"rollback_mode": mode, "checkpoints": {"confirm_steps": 2, "keep_last": 50, "keep_healthy": 50}},
    }))
    env = dict(ENV, RLGUARD_TEST_NAN_CALL="16")
    r = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg), "--out", str(run_dir), "-q"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines() if x.strip()]
    decided = next(e for e in entries if e["kind"] == "decision" and e["phase"] == "decided")
    done = next(e for e in entries if e["kind"] == "decision" and e["phase"] == "done")
    assert decided["decision"]["action"] == "rollback", decided
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    first_after = next(e for e in events if (e.get("attempt") or 0) >= 1)
    return {"decision_to_restored_s": done["time"] - decided["time"],
            "decision_to_first_step_s": first_after["time"] - decided["time"],
            "first_step_s": first_after["metrics"]["step_seconds"],
            "checkpoint": str(run_dir / "checkpoints" / "step-000010")}


def channel(tmp: Path) -> dict:
    """The SDK <-> supervisor cycle alone: the fake worker (no model) reports 300 steps as fast
    as it can; the median gap between events is one report + decision + reply."""
    from rlguard.orchestrator.supervisor import Supervisor
    from tests.orchestrator.harness import fake_config, run_supervisor

    cfg = fake_config(tmp, {"steps": 300, "checkpoint_every": 100000})
    run_supervisor(Supervisor(tmp / "channel", cfg))
    gaps, _ = step_gaps(tmp / "channel")
    return {"cycle_s": statistics.median(gaps)}


def load_and_stall(model: Path, ckpt: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from rlguard.ppo.config import TrainConfig
    from rlguard.ppo.trainer import PPOTrainer

    with tempfile.TemporaryDirectory() as d:
        t = PPOTrainer(TrainConfig(**trainer_cfg(model, 30)), d)
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            t.load_checkpoint(ckpt)
            loads.append(time.perf_counter() - t0)
        from rlguard.ppo.async_checkpoint import AsyncCheckpointWriter

        writer = AsyncCheckpointWriter()
        steps, saves, async_stalls = [], [], []
        for i in range(12):
            t0 = time.perf_counter()
            t.train_step()
            steps.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            if i % 2:
                t.save_checkpoint(Path(d) / "checkpoints" / f"step-{t.step:06d}")
                saves.append(time.perf_counter() - t0)
            else:
                writer.submit(t.checkpoint_snapshot(), Path(d) / "checkpoints" / f"step-{t.step:06d}")
                async_stalls.append(time.perf_counter() - t0)
        writer.wait()
    return {"load_s": statistics.median(loads), "step_s": statistics.median(steps), "save_s": statistics.median(saves),
            "async_s": statistics.median(async_stalls)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    from rlguard.ppo.tiny import build_tiny_lm

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = build_tiny_lm(tmp / "tiny")
        ov = overhead(tmp, model, args.steps, args.reps, checkpoint_every=5)
        ov0 = overhead(tmp, model, args.steps, args.reps, checkpoint_every=0)
        inproc = rollback_latency(tmp, model, "in_process")
        restart = rollback_latency(tmp, model, "restart")
        ls = load_and_stall(model, inproc["checkpoint"])
        ch = channel(tmp)
    print("## Supervisor (bench/supervisor.py)\n")
    print(f"Command: `.venv/bin/python bench/supervisor.py --steps {args.steps} --reps {args.reps}` "
          "(tiny Llama from ppo/tiny.py, CPU, 1 torch thread, shared 2-core machine)\n")
    print("| figure | value | goal |\n|---|---|---|")
    print(f"| step time, `rlguard train` (median of {ov['n_steps']}) | {ov['plain_step_s'] * 1000:.1f} ms | |")
    print(f"| step time, `rlguard run` (supervised) | {ov['supervised_step_s'] * 1000:.1f} ms | |")
    print(f"| raw ratio of the medians (compute noise included) | {ov['raw_ratio']:.3f} | |")
    print(f"| time per step outside train_step (mean, incl. checkpoints): train / run | "
          f"{ov['outside_plain_s'] * 1000:.1f} ms / {ov['outside_supervised_s'] * 1000:.1f} ms | |")
    print(f"| supervision overhead ratio (step + added outside time) / step | {ov['ratio']:.3f} | <= 1.02 |")
    print(f"| same, checkpoint_every=0 (channel + monitors only): outside time train / run | "
          f"{ov0['outside_plain_s'] * 1000:.1f} ms / {ov0['outside_supervised_s'] * 1000:.1f} ms | |")
    print(f"| supervision overhead ratio, checkpoint_every=0 | {ov0['ratio']:.3f} | <= 1.02 |")
    print(f"| SDK report -> supervisor decision -> reply, fake worker without a model (median) | "
          f"{ch['cycle_s'] * 1000:.2f} ms | |")
    print(f"| one `load_checkpoint` | {ls['load_s'] * 1000:.1f} ms | |")
    print(f"| in-process rollback: decision -> restored | {inproc['decision_to_restored_s'] * 1000:.1f} ms "
          f"({inproc['decision_to_restored_s'] / ls['load_s']:.2f}x one load) | <= 2x one load |")
    print(f"| in-process rollback: decision -> first step after | {inproc['decision_to_first_step_s'] * 1000:.1f} ms "
          f"(of which the step itself {inproc['first_step_s'] * 1000:.0f} ms) | |")
    print(f"| restart rollback: decision -> restored (relaunch) | {restart['decision_to_restored_s'] * 1000:.0f} ms | |")
    print(f"| restart rollback: decision -> first step after | {restart['decision_to_first_step_s'] * 1000:.0f} ms | |")
    print(f"| synchronous checkpoint save (loop blocked) | {ls['save_s'] * 1000:.1f} ms = "
          f"{ls['save_s'] / ls['step_s'] * 100:.0f}% of one step ({ls['step_s'] * 1000:.0f} ms) | |")
    print(f"| async checkpoint (worker default): loop blocked | {ls['async_s'] * 1000:.1f} ms = "
          f"{ls['async_s'] / ls['step_s'] * 100:.1f}% of one step | <= 10% |")


if __name__ == "__main__":
    main()
