"""`rlguard report LOG` on a trainer's own log (here verl's file-logger JSONL, as verl writes it)."""

from __future__ import annotations

import json

from rlguard.dashboards.report import main
from tests.orchestrator.logformat_helpers import collapse_rows

VERL_NAMES = {"kl": "actor/kl_loss", "reward": "critic/score/mean", "response_length": "response_length/mean",
              "entropy": "actor/entropy", "perplexity": "perplexity"}


def test_report_on_a_verl_log_shows_curves_and_the_replayed_alerts(tmp_path, capsys):
    log = tmp_path / "exp.jsonl"
    log.write_text("".join(json.dumps({"step": i + 1, "data": {VERL_NAMES[k]: v for k, v in r.items()}}) + "\n"
                           for i, r in enumerate(collapse_rows())))
    assert main([str(log)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "read exp.jsonl as verl-jsonl: 240 events" in html
    assert "pattern_collapse" in html or "critical" in html.lower()
    assert "<img" in html  # curves for kl, reward, response_length...
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n" * 100)
    assert main([str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no known log format" in err
    assert main([str(tmp_path / "empty-dir-does-not-exist")]) == 2
