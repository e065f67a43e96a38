"""Coverage under a real supervised run: journaled and logged at the first event and when a metric
appears later (never per step), and served in /api/status while the run is live."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request

from rlguard.orchestrator.run_files import read_supervisor_info
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import fake_config, journal, run_supervisor


def test_coverage_is_journaled_when_it_changes_and_served_in_status(tmp_path, caplog):
    run_dir = tmp_path / "run"
    # The fake worker logs reward, kl, perplexity, response_length; entropy from step 6 on.
    cfg = fake_config(tmp_path, {"steps": 14, "step_s": 0.03, "checkpoint_every": 4, "log_from": {"entropy": 6}})
    sup = Supervisor(run_dir, cfg)
    seen: dict = {}

    def probe():  # while the run is live, after entropy appeared: GET /api/status over HTTP
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = read_supervisor_info(run_dir)
            if info.get("url") and (sup.live.step or 0) >= 8:
                with urllib.request.urlopen(info["url"] + "/api/status", timeout=5) as r:
                    seen["status"] = json.loads(r.read())
                return
            time.sleep(0.05)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    with caplog.at_level(logging.INFO, logger="rlguard.supervisor"):
        result = run_supervisor(sup)
    t.join(5)
    assert result.state is RunState.COMPLETED

    notes = [e for e in journal(run_dir) if e["kind"] == "note" and e.get("event") == "coverage"]
    assert [n["step"] for n in notes] == [1, 6]  # first event, then entropy: not once per step
    first, later = notes
    assert first["message"].startswith("coverage: detection armed for")
    by_class = {c["class"]: c for c in first["classes"]}
    assert by_class["kl_runaway"]["armed"] and by_class["pinned_at_cap"]["armed"] is False
    assert by_class["pinned_at_cap"]["missing"] == ["truncated_fraction"]
    assert "entropy" in by_class["length_collapse"]["weaker_without"]
    assert "truncated_fraction not logged: pinned_at_cap off" in first["gaps"]
    assert "entropy" not in first["metrics"] and "entropy" in later["metrics"]
    later_by_class = {c["class"]: c for c in later["classes"]}
    assert later_by_class["length_collapse"]["weaker_without"] == []

    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("coverage at step")]
    assert len(logged) == 2 and logged[0].startswith("coverage at step 1: detection armed for")

    cov = seen["status"]["coverage"]
    assert cov["metrics"] == later["metrics"] and cov["classes"] == later["classes"]
    assert "pinned_at_cap" in cov["off"] and "kl_runaway" in cov["armed"]
    assert {"summary", "armed", "off", "gaps", "metrics", "classes"} <= set(cov)


def test_watch_journals_coverage_of_a_trl_stream_in_trl_names_and_serves_it(tmp_path):
    """`rlguard watch --names trl` on trl GRPO at beta 0 (no kl): said at the first event, once."""
    from rlguard.orchestrator.spec import parse_run_config
    from rlguard.orchestrator.watch import Watcher, _serve, follow

    lines = [json.dumps({"step": s, "metrics": {"reward": 0.5, "entropy": 0.3, "completions/mean_length": 90.0,
                                                "completions/clipped_ratio": 0.05, "grad_norm": 1.0}})
             for s in range(1, 9)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    watcher = Watcher(tmp_path / "metrics.jsonl", tmp_path / "watch", parse_run_config({}), names="trl")
    http = _serve(watcher, [], 0, tmp_path / "watch")
    try:
        follow(watcher, tmp_path / "metrics.jsonl", threading.Event(), idle_s=0.3, poll_s=0.05)
        with urllib.request.urlopen(http.url + "/api/status", timeout=5) as r:
            status = json.loads(r.read())
    finally:
        http.stop()
        watcher.close("test")
    notes = [e for e in journal(tmp_path / "watch") if e.get("event") == "coverage"]
    assert [n["step"] for n in notes] == [1]
    assert "kl or kl_seq not logged: pattern_collapse, kl_runaway, negative_kl off" in notes[0]["message"]
    assert status["coverage"]["metrics"] == ["entropy", "grad_norm", "response_length", "reward", "truncated_fraction"]
    assert {"length_collapse", "pinned_at_cap", "random_tokens"} <= set(status["coverage"]["armed"])
