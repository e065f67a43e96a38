"""Shared helpers for the supervisor tests: a config around the fake worker, running a
supervisor with a hard deadline, and a compact view of the journal."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from rlguard.orchestrator.journal import read_journal
from rlguard.orchestrator.spec import RunConfig, parse_run_config
from rlguard.orchestrator.supervisor import Supervisor

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")

# Detectors that fire on the fake worker's faults only: NaN (critical) and a KL budget.
QUIET_MONITORS = {
    "spike": {"enabled": False},
    "change_point": {"enabled": False},
    "drift": {"enabled": False},
    "patterns": {"enabled": False},
    "eval_shape": {"enabled": False},
    "stall": {"enabled": False},
    "bounds": {"rules": [{"metric": "kl", "upper": 0.5, "patience_steps": 2, "severity": "critical"}]},
}

FAST_SUPERVISOR = {
    "heartbeat_interval_s": 0.2,
    "heartbeat_timeout_s": 4.0,
    "step_timeout_s": 4.0,
    "startup_timeout_s": 30.0,
    "restart_backoff_initial_s": 0.05,
    "restart_backoff_max_s": 0.2,
    "stop_grace_s": 2.0,
    "tick_s": 0.05,
    "checkpoints": {"confirm_steps": 2, "keep_last": 10, "keep_healthy": 10},
}


def fake_config(tmp_path: Path, scenario: dict, *, monitors: dict | None = None, policies: dict | None = None,
                supervisor: dict | None = None) -> RunConfig:
    scenario_path = tmp_path / "scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    sup = dict(FAST_SUPERVISOR)
    sup["command"] = [sys.executable, str(FAKE_WORKER), "--scenario", str(scenario_path), "--run-dir", "{run_dir}",
                      "{resume}"]
    sup.update(supervisor or {})
    raw = {"trainer": {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5},
           "monitors": monitors if monitors is not None else QUIET_MONITORS,
           "policies": policies if policies is not None else {"cooldown": {"steps": 3}},
           "supervisor": sup}
    return parse_run_config(raw)


def run_supervisor(sup: Supervisor, timeout_s: float = 90.0):
    """Run to the end on a thread; on timeout detach, stop the worker, and fail loudly."""
    out: dict = {}

    def target():
        out["result"] = sup.run()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        sup.detach("test timeout")
        t.join(15)
        w = sup.live.worker
        if w is not None:
            w.stop(1.0)
        raise AssertionError(f"supervisor did not finish within {timeout_s} s; state {sup.live.state}")
    return out["result"]


def journal(run_dir: Path) -> list[dict]:
    return read_journal(Path(run_dir) / "journal.jsonl").entries


def story(run_dir: Path, kinds=("decision", "state", "restart", "launch")) -> list[tuple]:
    """The journal as short tuples: ("state", "running"), ("decision", "rollback", "decided"), ..."""
    out = []
    for e in journal(run_dir):
        k = e["kind"]
        if k == "decision" and "decision" in kinds:
            out.append(("decision", e.get("action") or e["decision"]["action"], e["phase"]))
        elif k == "state" and "state" in kinds:
            out.append(("state", e["state"]))
        elif k == "restart" and "restart" in kinds:
            out.append(("restart",))
        elif k == "note" and e.get("event") == "launch" and "launch" in kinds:
            resume = e.get("resume")
            out.append(("launch", e["attempt"], Path(resume).name if resume else None))
        elif k == "alert" and "alert" in kinds:
            out.append(("alert", e["alert"]["code"], e["alert"]["step"]))
        elif k == "checkpoint" and "checkpoint" in kinds:
            out.append(("checkpoint", e["step"], e["health"]))
    return out


def metric_steps(run_dir: Path) -> list[tuple[int, int]]:
    """(attempt, step) of every line of metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(x).get("attempt", 0), json.loads(x)["step"]) for x in lines if x.strip()]
