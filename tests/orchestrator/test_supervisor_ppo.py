"""A real tiny PPO-max run under the supervisor (built-in worker, tiny Llama from a config),
with a reward model that can be exploited for a while: the collapse is detected, rolled
back to a healthy checkpoint before the onset, the constraints are tightened, and the run
completes. The journal alone tells the story."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import FAST_SUPERVISOR, QUIET_MONITORS, journal, run_supervisor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_ppo_collapse_is_rolled_back_tightened_and_completes(tmp_path, monkeypatch):
    from rlguard.orchestrator.spec import parse_run_config
    from rlguard.ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-lm")
    monkeypatch.setenv("RLGUARD_TEST_EXPLOIT", "8:22")  # reward calls 8..21 pay for degenerate text
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monitors = dict(QUIET_MONITORS)
    monitors["bounds"] = {"rules": [{"metric": "kl", "upper": 0.1, "patience_steps": 2, "severity": "critical"}]}
    raw = {
        # The paper's list without advantage whitening: the exploit must produce a collapse to catch.
        "trainer": {"model": str(model), "reward": "tests.orchestrator.collapse_reward:exploitable",
                    "preset": "ppo_max_paper",
                    "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 16, "torch_threads": 1,
                    "eval_every": 0, "checkpoint_every": 4, "device": "cpu", "lr": 1e-3, "steps": 32},
        "monitors": monitors,
        "policies": {"cooldown": {"steps": 10}},
        "supervisor": dict(FAST_SUPERVISOR, step_timeout_s=120, heartbeat_timeout_s=60,
                           checkpoints={"confirm_steps": 3, "keep_last": 20, "keep_healthy": 20}),
    }
    run_dir = tmp_path / "run"
    result = run_supervisor(Supervisor(run_dir, parse_run_config(raw)), timeout_s=240)
    assert result.state is RunState.COMPLETED, result.reason

    entries = journal(run_dir)
    alert = next(e["alert"] for e in entries if e["kind"] == "alert")
    decided = next(e for e in entries if e["kind"] == "decision" and e["phase"] == "decided")
    done = next(e for e in entries if e["kind"] == "decision" and e["decision_id"] == decided["decision_id"]
                and e["phase"] != "decided")
    d = decided["decision"]
    assert (alert["code"], alert["metric"], alert["severity"]) == ("bound", "kl", "critical")
    assert d["action"] == "rollback" and d["target_step"] < alert["onset_step"]
    health_then: dict[int, str] = {}  # each checkpoint's last health before the decision
    for e in entries:
        if e["kind"] == "checkpoint" and e["seq"] < decided["seq"]:
            health_then[e["step"]] = e["health"]
    assert d["target_step"] == max(s for s, h in health_then.items() if h == "healthy" and s < alert["onset_step"])
    assert d["params"]["kl_coef"] > 0.05 and d["params"]["lr"] < 1e-3  # tightened
    assert done["phase"] == "done" and f"restored step {d['target_step']}" in done["outcome"]["message"]
    states = [e["state"] for e in entries if e["kind"] == "state"]
    assert states[-3:] == ["rolling_back", "running", "completed"]

    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e.get("attempt") == 1]
    assert resumed[0]["step"] == d["target_step"] + 1 and resumed[-1]["step"] == 32
    assert resumed[0]["metrics"]["kl_coef"] == pytest.approx(d["params"]["kl_coef"])
    assert max(e["metrics"]["kl"] for e in resumed[-5:]) < 0.1  # contained after the rollback


@pytest.mark.slow
def test_a_policy_broken_by_its_first_update_rolls_back_to_the_starting_state(tmp_path, monkeypatch):
    """checkpoint_start: the worker writes step 0 (the starting weights), so a collapse whose onset
    is the first update still has a healthy target; before, the only choice was to halt."""
    from rlguard.orchestrator.spec import parse_run_config
    from rlguard.ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-lm")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monitors = dict(QUIET_MONITORS)
    # KL is 0 at step 1 by construction and > 0 from step 2 on: "broken" from the first update.
    monitors["bounds"] = {"rules": [{"metric": "kl", "upper": 0.0, "patience_steps": 1, "severity": "critical"}]}
    raw = {
        "trainer": {"model": str(model), "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8,
                    "torch_threads": 1, "eval_every": 0, "checkpoint_every": 2, "device": "cpu", "steps": 4,
                    "lr": 0.02, "preset": "vanilla", "reward": "tests.orchestrator.test_demo:repeat_reward"},
        "monitors": monitors,
        "policies": {"rollback": {"budget": 1, "margin_steps": 1}},
        "supervisor": dict(FAST_SUPERVISOR, step_timeout_s=120, heartbeat_timeout_s=60,
                           checkpoints={"confirm_steps": 1, "keep_last": 5, "keep_healthy": 5}),
    }
    run_dir = tmp_path / "run"
    run_supervisor(Supervisor(run_dir, parse_run_config(raw)), timeout_s=240)

    entries = journal(run_dir)
    alert = next(e["alert"] for e in entries if e["kind"] == "alert")
    assert (alert["metric"], alert["step"], alert["onset_step"]) == ("kl", 2, 2)
    assert any(e["kind"] == "checkpoint" and e["step"] == 0 and e["health"] == "healthy" for e in entries)
    decided = next(e for e in entries if e["kind"] == "decision" and e["phase"] == "decided")
    assert decided["decision"]["action"] == "rollback" and decided["decision"]["target_step"] == 0
    done = next(e for e in entries if e["kind"] == "decision" and e["decision_id"] == decided["decision_id"]
                and e["phase"] != "decided")
    assert done["phase"] == "done" and "restored step 0" in done["outcome"]["message"]
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("attempt") == 1][:1] == [1]  # trained again from the start
    registry = json.loads((run_dir / "checkpoints" / "registry.json").read_text())
    assert registry["in_use"] == 0 and (run_dir / "checkpoints" / "step-000000").is_dir()  # kept: the new base
