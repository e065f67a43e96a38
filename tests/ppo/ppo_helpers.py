"""Shared bits of the trainer tests: a tiny model directory and fast config overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rlguard.ppo.tiny import build_tiny_lm, build_tiny_reward_model

REPO = Path(__file__).resolve().parents[2]


def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def tiny_rm(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


def fast_overrides(model_dir: Path, **extra) -> list[str]:
    """Settings that make one step take well under a second on a 2-core machine."""
    base = {
        "model": str(model_dir), "reward": "tests.ppo.ppo_reward_fns:letter_e_fraction",
        "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 6, "torch_threads": 1,
        "eval_every": 0, "checkpoint_every": 0, "device": "cpu",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m orchestrator.cli ARGS` in a fresh process (what a user or the supervisor runs)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
