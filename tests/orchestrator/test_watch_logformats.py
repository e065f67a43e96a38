"""`rlguard watch` on a trainer's own log, growing as the trainer writes it: verl's console log
(banner first, then `step:N - key:value` lines) is detected once it has content, tailed, and a
collapse in it is detected, decided and carried out by the rollback hook."""

from __future__ import annotations

import json
import pprint
import subprocess
import sys
import time
from pathlib import Path

from rlguard.orchestrator.journal import read_journal
from tests.orchestrator.logformat_helpers import ONSET, collapse_rows

REPO = Path(__file__).resolve().parents[2]
VERL_NAMES = {"kl": "actor/kl_loss", "reward": "critic/score/mean", "response_length": "response_length/mean",
              "entropy": "actor/entropy", "perplexity": "perplexity"}


def test_watch_tails_a_verl_console_log_and_rolls_back(tmp_path):
    log = tmp_path / "verl.log"
    marker = tmp_path / "rollback.json"
    proc = subprocess.Popen([sys.executable, "-m", "rlguard.orchestrator.cli", "watch", str(log), "--out",
                             str(tmp_path / "watch"), "--poll-s", "0.05", "--checkpoint-every", "20", "-q",
                             "--until-idle", "2", "--hook", f"rollback=cat > {marker}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)  # no file yet: watch waits
    with log.open("w") as f:
        f.write("(TaskRunner pid=11) Using LocalLogger is deprecated.\n(TaskRunner pid=11) Training from scratch\n")
        f.flush()
        time.sleep(0.3)  # only a banner: no format known yet, watch keeps waiting
        for i, row in enumerate(collapse_rows()):
            data = {VERL_NAMES[k]: v for k, v in row.items()}
            f.write("(TaskRunner pid=11) " + " - ".join([f"step:{i + 1}"] + [f"{k}:{pprint.pformat(v)}"
                                                                              for k, v in data.items()]) + "\n")
            f.flush()
            time.sleep(0.002)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    decision = json.loads(marker.read_text())
    assert decision["action"] == "rollback" and decision["step"] >= ONSET and decision["target_step"] < ONSET
    entries = read_journal(tmp_path / "watch" / "journal.jsonl").entries
    notes = [e for e in entries if e["kind"] == "note"]
    assert any(e.get("event") == "log_format" and e["format"] == "verl-console" for e in notes)
    crit = [e for e in entries if e["kind"] == "alert" and e["alert"]["severity"] == "critical"]
    assert crit and all(e["alert"]["step"] >= ONSET for e in crit)
    assert notes[-1]["event"] == "watch_stopped" and notes[-1]["events"] == len(collapse_rows())
