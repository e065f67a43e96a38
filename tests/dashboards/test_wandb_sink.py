"""The W&B sink against real wandb in offline mode: files under RUN/wandb, never raising."""

from __future__ import annotations

import json
import logging
import time

import pytest

from rlguard.dashboards.wandb_sink import WandbSink, WandbSinkConfig
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision


def _feed(sink: WandbSink) -> None:
    for s in range(6):
        sink.on_event(MetricEvent(step=s, metrics={"reward": 0.1 * s, "kl": 0.02 * s, "perplexity": None}))
    sink.on_checkpoint(2, "/r/checkpoints/step-000002", "healthy")
    sink.on_alert(Alert("spike", "kl_spike", "kl", 5, Severity.CRITICAL, 4, "kl = 0.10 > 0.08 for 2 steps"))
    rollback = Decision(Action.ROLLBACK, 5, "critical spike on kl", target_step=2, params={"kl_coef": 0.1})
    sink.on_decision(rollback, "journaled", None)
    sink.on_decision(rollback, "applied", "ok")
    for s in range(3, 5):  # steps go back: a new segment
        sink.on_event(MetricEvent(step=s, metrics={"reward": 0.2, "kl": 0.01}))
    sink.on_state("halted")
    sink.on_decision(Decision(Action.HALT, 4, "rollback budget spent"), "applied", "ok")
    sink.close()


def test_offline_run_writes_metrics_alerts_and_decision_table_under_run_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sink = WandbSink(tmp_path, WandbSinkConfig(), run_config={"kl_coef": 0.05})
    _feed(sink)
    assert sink.errors == 0, "no W&B call may fail in offline mode"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    # wandb-core writes the run file on its own process shortly after finish() returns.
    deadline = time.monotonic() + 20
    while True:
        data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
        if b"rlguard halt" in data or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for needle in (b"rlguard critical: spike on kl", b"kl = 0.10 > 0.08 for 2 steps",
                   b"rlguard rollback to step 2", b"rlguard halt", b"rlguard/segment", b"reward"):
        assert needle in data, needle
    tables = sorted(runs[0].rglob("decisions_*.table.json"), key=lambda p: p.stat().st_mtime)
    assert tables, "the decisions wandb.Table must be written"
    last = json.loads(tables[-1].read_text())
    assert last["columns"][:3] == ["decided_at_step", "segment", "action"]
    rows = {r[2]: r for r in last["data"]}
    assert rows["rollback"][4] == 2 and rows["rollback"][7] == "applied" and rows["rollback"][8] == "ok"
    assert rows["halt"][1] == 1  # decided in the second segment
    assert len(last["data"]) == 2  # the two phases of the rollback share one row


def test_sink_never_raises_into_the_run_and_turns_itself_off(tmp_path, caplog):
    sink = WandbSink(tmp_path, WandbSinkConfig(mode="offline", max_errors=3))
    sink.on_event(MetricEvent(step=0, metrics={"reward": 1.0}))
    assert sink.flush()
    sink.run.finish()  # W&B goes away behind the sink's back: every later call fails
    with caplog.at_level(logging.WARNING, logger="rlguard.dashboards.wandb_sink"):
        for s in range(1, 6):
            sink.on_event(MetricEvent(step=s, metrics={"reward": 1.0}))
        sink.on_alert(Alert("stall", "stall", "", 5, Severity.WARNING, 5, "no step for 600 s"))
        assert sink.flush()
    assert sink.errors == 3 and sink.disabled
    assert "W&B sink" in caplog.text
    sink.close()


def test_mode_resolution_and_config_errors_name_the_field(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert WandbSinkConfig().resolved_mode() == "offline"
    assert WandbSinkConfig(project="rlhf").resolved_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandbSinkConfig(project="rlhf").resolved_mode() == "offline"
    assert WandbSinkConfig(project="rlhf", mode="disabled").resolved_mode() == "disabled"
    with pytest.raises(ValueError, match="wandb.mode"):
        WandbSinkConfig(mode="cloud")
    with pytest.raises(ValueError, match="alert_wait_s"):
        WandbSinkConfig(alert_wait_s=-1)
