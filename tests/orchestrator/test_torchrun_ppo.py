"""The built-in worker under `torchrun --nproc_per_node 2` (gloo, CPU), supervised end to end:
a real `rlguard run`, an injected fault (one poisoned reward batch: NaN scores on every rank,
tests/orchestrator/collapse_reward.py) that is detected and rolled back in-process, and a run
that completes, with both ranks applying every command at the same step and holding
bit-identical weights after every step (gradients all-reduced).

Each rank appends `{"step", "attempt", "params", "kl_coef"}` per step to TRACE/rankR.jsonl
(this module is also the traced worker: `python -m tests.orchestrator.test_torchrun_ppo`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _params_digest(*models) -> str:
    h = hashlib.sha256()
    for model in models:
        for name, p in sorted(model.named_parameters()):
            if p.requires_grad:
                h.update(name.encode())
                h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def traced_main() -> int:
    """orchestrator.ppo_worker.main, with a per-rank trace of every step."""
    import orchestrator.ppo_worker as worker

    real_train = worker.train

    def train(trainer, client, run_dir):
        out = Path(os.environ["RLGUARD_TEST_TRACE"]) / f"rank{trainer.rank}.jsonl"

        def record(step, metrics):
            with open(out, "a") as f:
                f.write(json.dumps({"step": step, "attempt": client.attempt, "kl_coef": metrics["kl_coef"],
                                    "params": _params_digest(trainer.policy, trainer.critic)}) + "\n")

        trainer.on_step.append(record)
        return real_train(trainer, client, run_dir)

    worker.train = train
    return worker.main()


def _trace(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_rank_torchrun_collapse_is_rolled_back_on_every_rank_and_completes(tmp_path):
    from ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-lm")
    trace = tmp_path / "trace"
    trace.mkdir()
    steps = 14
    monitors = {name: {"enabled": False} for name in ("spike", "change_point", "drift", "patterns", "eval_shape",
                                                       "stall")}
    monitors["bounds"] = {"rules": [{"metric": "kl", "upper": 0.1, "patience_steps": 2, "severity": "critical"}]}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    config = {
        "trainer": {"model": str(model), "reward": "tests.orchestrator.collapse_reward:nan_on_first_attempt",
                    "batch_size": 2, "minibatch_size": 2, "max_new_tokens": 16, "torch_threads": 1,
                    "eval_every": 0, "checkpoint_every": 3, "device": "cpu", "critic_pretrain_steps": 1,
                    "steps": steps},
        "monitors": monitors,
        "policies": {"cooldown": {"steps": 10}},
        "supervisor": {
            "command": [torchrun, "--nproc_per_node", "2", "--standalone", "-m", "tests.orchestrator.test_torchrun_ppo",
                        "--config", "{config}", "--run-dir", "{run_dir}", "{resume}", "{overrides}"],
            "heartbeat_interval_s": 0.2, "heartbeat_timeout_s": 60, "step_timeout_s": 120, "startup_timeout_s": 120,
            "tick_s": 0.05, "checkpoints": {"confirm_steps": 2, "keep_last": 20, "keep_healthy": 20}},
    }
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RLGUARD_TEST_TRACE=str(trace),
               RLGUARD_TEST_NAN_CALL="8")
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(cfg_path), "--out", str(run_dir), "-q"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]

    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    decided = next(e for e in journal if e["kind"] == "decision" and e["phase"] == "decided")
    assert decided["decision"]["action"] == "rollback"
    target = decided["decision"]["target_step"]
    assert [e["state"] for e in journal if e["kind"] == "state"][-1] == "completed"

    r0, r1 = _trace(trace / "rank0.jsonl"), _trace(trace / "rank1.jsonl")
    # Same steps, same attempts, same constraint values, identical weights: one run, two ranks.
    assert [(e["step"], e["attempt"], e["kl_coef"]) for e in r0] == [(e["step"], e["attempt"], e["kl_coef"])
                                                                     for e in r1]
    assert [e["params"] for e in r0] == [e["params"] for e in r1]
    after = [e for e in r0 if e["attempt"] >= 1]
    assert after and after[0]["step"] == target + 1 and after[-1]["step"] == steps
    assert after[0]["kl_coef"] > 0.05  # the tightened constraint reached every rank
    # The rollback restored the checkpoint's weights on every rank: the first step after it
    # starts from the state of step `target`, which both ranks traced before the collapse.
    assert len({e["params"] for e in r0 if e["step"] == target}) >= 1


if __name__ == "__main__":
    sys.exit(traced_main())
