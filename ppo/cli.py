"""`rlguard train CONFIG.yaml [--resume CKPT] [--set key=value ...] [--out RUN_DIR] [--print-config]`

Runs PPO-max training without a supervisor. The run directory gets:
    config.yaml      the resolved config (every field, presets applied)
    metrics.jsonl    one docs/METRICS.md event per step (eval_* merged into the step they ran at)
    samples.jsonl    every sampled (prompt, response, reward) of every step
    checkpoints/step-NNNNNN   every checkpoint_every steps and at the end
Exit codes: 0 done, 2 bad config / data / checkpoint (one-line message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from rlguard.monitors.events import CONSTRAINT_NAMES
from rlguard.ppo.checkpoint_files import CheckpointError, checkpoint_dir_name
from rlguard.ppo.config import ConfigError, TrainConfig, describe_config, load_train_config
from rlguard.ppo.prompts import DataError
from rlguard.ppo.rewards import RewardError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard train", description="PPO-max RLHF training (no supervisor)")
    p.add_argument("config", nargs="?", help="YAML config (optional: defaults are the bundled model, sentiment reward)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint directory to resume from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set lr=1e-6")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/train-<time>)")
    p.add_argument("--print-config", action="store_true", help="print every field, its value and description; exit")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def run_training(cfg: TrainConfig, run_dir: str | Path, *, resume: str | Path | None = None,
                 constraints: dict[str, float] | None = None,
                 on_step: Callable[[int, dict], None] | None = None, progress: bool = True):
    """Train to cfg.steps, writing the run directory; returns the trainer.

    A resumed run continues with the constraint values saved in the checkpoint (a tightened
    kl_coef stays tightened) unless `constraints` gives new ones: a supervisor restarting a
    worker with `--resume CKPT --set kl_coef=...` means exactly that.
    `on_step(step, metrics)` is called after each step's event is written (embedding hook)."""
    from rlguard.monitors.events import MetricEvent
    from rlguard.ppo.trainer import PPOTrainer

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = PPOTrainer(cfg, run_dir)
    if resume:
        trainer.load_checkpoint(resume)
    if constraints:
        trainer.set_constraints(**constraints)
    writer = trainer.rank == 0
    if writer:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(trainer.cfg.model_dump(), sort_keys=False))
    ckpt_root = run_dir / "checkpoints"
    bar = None
    if progress and writer:
        from tqdm import tqdm

        bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True)
    try:
        with open(run_dir / "metrics.jsonl", "a") as metrics_f, open(run_dir / "samples.jsonl", "a") as samples_f:
            while trainer.step < trainer.cfg.steps:
                metrics = trainer.train_step()
                step = done = trainer.step  # 1-based: see PPOTrainer.train_step
                if trainer.cfg.eval_every and done % trainer.cfg.eval_every == 0:
                    metrics.update(trainer.evaluate())
                if writer:
                    metrics_f.write(MetricEvent(step=step, metrics=metrics, time=time.time()).to_json() + "\n")
                    metrics_f.flush()
                    for s in trainer.last_samples:
                        samples_f.write(json.dumps(s) + "\n")
                    samples_f.flush()
                every = trainer.cfg.checkpoint_every
                if (every and done % every == 0) or done == trainer.cfg.steps:
                    trainer.save_checkpoint(ckpt_root / checkpoint_dir_name(done))
                if on_step is not None:
                    on_step(step, metrics)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.4f}",
                                    len=f"{metrics['response_length']:.0f}")
    finally:
        if bar is not None:
            bar.close()
    return trainer


def train_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"rlguard train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(describe_config(cfg))
        return 0
    run_dir = Path(args.out) if args.out else Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    from rlguard.ppo.bundled import BundledModelError

    # Constraint values given with --set win over those saved in a --resume checkpoint.
    given = {kv.split("=", 1)[0].strip() for kv in args.overrides}
    constraints = {name: getattr(cfg, name) for name in CONSTRAINT_NAMES if name in given}
    try:
        run_training(cfg, run_dir, resume=args.resume, constraints=constraints, progress=not args.no_progress)
    except (CheckpointError, ConfigError, DataError, RewardError, BundledModelError) as e:
        # Bad input the user can fix: one line, no traceback. Anything else is a bug: traceback.
        print(f"rlguard train: {e}", file=sys.stderr)
        return 2
    return 0
