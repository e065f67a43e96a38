"""The logs of a real (tiny, CPU) trl GRPO run: trainer_state.json, transformers' TensorBoard files
and the console output with its progress bars all read to the same steps and values, and replay
says the same on each as on the run converted by hand to METRICS.md."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlguard.orchestrator.logformats import detect, load_run
from tests.orchestrator.logformat_helpers import replay_output

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
# By hand, from trl's names to METRICS.md (docs/METRICS.md; trl grpo_trainer.py `_metrics`).
BY_HAND = {"kl": "kl", "reward": "reward", "completions/mean_length": "response_length", "entropy": "entropy",
           "learning_rate": "lr", "grad_norm": "grad_norm", "eval_reward": "eval_reward",
           "eval_completions/mean_length": "eval_response_length", "eval_kl": "eval_kl"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("trl")
    d = tmp_path_factory.mktemp("grpo")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(d / "console.log", "wb") as log:
        subprocess.run([sys.executable, str(REPO / "tests" / "orchestrator" / "trl_grpo_logs.py"), str(d / "out"),
                        str(STEPS)], stdout=log, stderr=subprocess.STDOUT, env=env, check=True, timeout=600)
    return d


def _hand_converted(run: Path) -> Path:
    history = json.loads((run / "out" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]
    by_step: dict[int, dict] = {}
    for entry in history:
        kept = {BY_HAND[k]: v for k, v in entry.items() if k in BY_HAND}
        if kept:
            by_step.setdefault(entry["step"], {}).update(kept)
    out = run / "hand.jsonl"
    out.write_text("".join(json.dumps({"step": s, "metrics": m}) + "\n" for s, m in sorted(by_step.items())))
    return out


def test_three_logs_of_one_real_run_agree(run):
    state = load_run(run / "out" / f"checkpoint-{STEPS}")
    console = load_run(run / "console.log")
    tb = load_run(run / "out" / "runs")
    assert detect(run / "console.log").name == "trl-console" and detect(run / "out" / "runs").name == "tensorboard"
    for events in (state, console, tb):
        assert [e.step for e in events] == list(range(1, STEPS + 1))
        assert "eval_reward" in events[1].metrics and "eval_reward" not in events[0].metrics  # eval at step 2, merged
        assert {"kl", "reward", "response_length", "entropy", "lr"} <= set(events[0].metrics)
    for a, b, c in zip(state, console, tb):
        for k in ("kl", "reward", "response_length", "entropy", "lr"):
            assert math.isclose(a.metrics[k], b.metrics[k], rel_tol=5e-4, abs_tol=1e-12), (k, a.step)  # .4g print
            assert math.isclose(a.metrics[k], c.metrics[k], rel_tol=1e-6, abs_tol=1e-12), (k, a.step)  # float32


def test_replay_of_each_log_matches_the_hand_conversion(run):
    hand = _hand_converted(run)
    rc, want, err = replay_output(hand)
    assert rc == 0, err
    for native in (run / "out" / f"checkpoint-{STEPS}" / "trainer_state.json", run / "out" / f"checkpoint-{STEPS}",
                   run / "console.log", run / "out" / "runs"):
        rc, got, err = replay_output(native)
        assert rc == 0 and f"{STEPS} events" in err, err
        assert [r for r in got if r["type"] == "alert"] == [r for r in want if r["type"] == "alert"], native
