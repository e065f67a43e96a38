"""examples/custom_loop.py, the SDK's worked example: standalone it only writes metrics.jsonl and
checkpoints; under `rlguard run` the same script is rolled back, tightened and finally halted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rlguard.orchestrator.journal import read_journal
from rlguard.ppo.checkpoint_files import list_checkpoints, verify_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_loop.py"

CONFIG = f"""\
trainer: {{kl_coef: 0.05, lr: 0.05}}
monitors:
  spike: {{enabled: false}}
  change_point: {{enabled: false}}
  drift: {{enabled: false}}
  patterns: {{enabled: false}}
  bounds:
    rules: [{{metric: kl, upper: 0.5, patience_steps: 2, severity: critical}}]
supervisor:
  command: "{{python}} {EXAMPLE} --run-dir {{run_dir}} --steps 60 {{resume}} {{overrides}}"
  checkpoints: {{confirm_steps: 2}}
  heartbeat_interval_s: 0.5
"""


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_custom_loop_standalone_writes_metrics_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--run-dir", str(run), "--steps", "45", "--hack-from", "15"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = _events(run)
    assert [e["step"] for e in events] == list(range(1, 46)) and {e["attempt"] for e in events} == {0}
    assert {"reward", "kl", "response_length", "perplexity", "kl_coef", "lr"} <= set(events[0]["metrics"])
    honest = [e["metrics"]["kl"] for e in events[:14]]
    hacked = [e["metrics"]["kl"] for e in events[-5:]]
    assert max(map(abs, honest)) < 0.1 < min(hacked)  # the gameable reward pulls the policy away
    ckpts = list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000010", "step-000020", "step-000030", "step-000040", "step-000045"]
    assert verify_checkpoint(ckpts[-1])["step"] == 45
    assert json.loads((run / "worker-status.json").read_text())["status"] == "completed"
    assert not (run / "journal.jsonl").exists()  # nobody supervised it


def test_custom_loop_under_the_supervisor_rolls_back_tightened_then_halts(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg), "--out", str(run), "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr[-3000:]  # halted: the escalation ladder ran to its end
    entries = read_journal(run / "journal.jsonl").entries
    decided = [e for e in entries if e["kind"] == "decision" and e["phase"] == "decided"]
    assert [e["decision"]["action"] for e in decided] == ["rollback"] * 3 + ["halt"]
    outcomes = [e for e in entries if e["kind"] == "decision" and e["phase"] != "decided"]
    assert [e["phase"] for e in outcomes] == ["done"] * 4

    events = _events(run)
    by_attempt: dict[int, list[dict]] = {}
    for e in events:
        by_attempt.setdefault(e["attempt"], []).append(e)
    assert sorted(by_attempt) == [0, 1, 2, 3]
    kl_coefs = [by_attempt[a][0]["metrics"]["kl_coef"] for a in range(4)]
    lrs = [by_attempt[a][0]["metrics"]["lr"] for a in range(4)]
    assert kl_coefs == sorted(set(kl_coefs)) and lrs == sorted(set(lrs), reverse=True)  # tightened each time
    for d, a in zip(decided[:3], (1, 2, 3)):  # each attempt resumed right after its rollback target
        assert by_attempt[a][0]["step"] == d["decision"]["target_step"] + 1
    assert json.loads((run / "worker-status.json").read_text())["status"] == "stopped"
