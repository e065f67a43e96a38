"""Supervisor integration: persisting warnings escalate, the `dashboards:` section wires W&B and
notifications, sinks get the journal's decision ids, a custom worker's own knobs, and a worker
with a bad configuration fails the run at once."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.default_sinks import default_sinks_and_routes
from rlguard.orchestrator.operator import handle_operator
from rlguard.orchestrator.sinks import SinkFanout
from rlguard.orchestrator.spec import ConfigError, parse_run_config
from rlguard.orchestrator.state import ExitCode, RunState
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.policies.decision import Action, Decision
from tests.orchestrator.harness import FAST_SUPERVISOR, QUIET_MONITORS, fake_config, journal, run_supervisor


class _WebhookReceiver:
    """A real local HTTP server standing in for a Slack-compatible webhook."""

    def __init__(self):
        bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    receiver = _WebhookReceiver()
    yield receiver
    receiver.close()


def test_a_persisting_warning_escalates_from_notify_to_tighten(tmp_path):
    # One warning bound on response_length: the incident opens at the collapse and stays open
    # without being raised again. Only RunView.open_warnings tells the engine it persists.
    monitors = dict(QUIET_MONITORS, bounds={"rules": [
        {"metric": "response_length", "upper": 45.0, "patience_steps": 1, "severity": "warning"}]})
    cfg = fake_config(tmp_path, {"steps": 30, "checkpoint_every": 5, "faults": {"0": {"collapse_at": 8}}},
                      monitors=monitors, policies={"warnings": {"persist_steps": 4}, "cooldown": {"steps": 3}})
    sup = Supervisor(tmp_path / "run", cfg)
    result = run_supervisor(sup)
    assert result.state is RunState.COMPLETED
    decided = [e for e in journal(tmp_path / "run") if e["kind"] == "decision" and e["phase"] == "decided"]
    actions = [e.get("action") or e["decision"]["action"] for e in decided]
    assert actions[0] == "notify"
    assert "tighten" in actions, f"the open warning never escalated: {actions}"
    assert sup.live.constraints["kl_coef"] > 0.05  # the tighten reached the worker


def test_dashboards_section_wires_webhook_and_offline_wandb(tmp_path, webhook, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 40, "step_s": 0.02, "checkpoint_every": 2,
                                 "faults": {"0": {"collapse_at": 12}}})
    cfg = parse_run_config({**cfg.model_dump(mode="json"), "dashboards": {
        "wandb": {"enabled": True, "mode": "offline", "project": "rlguard-test", "close_timeout_s": 60},
        "notify": {"webhook_url": webhook.url, "backoff_s": 0.05, "timeout_s": 5},
        "exporter": {"kl_budget": 0.3}}})
    sinks, routes = default_sinks_and_routes(run_dir, cfg)
    assert [type(s).__name__ for s in sinks] == ["RunExporter", "RunHistory", "Notifier", "WandbSink"]
    exporter, history = sinks[0], sinks[1]
    sup = Supervisor(run_dir, cfg, sinks=sinks, extra_routes=routes)
    result = run_supervisor(sup, timeout_s=120)
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    assert result.counters["sink_errors"] == 0

    titles = [b.get("text", "") + json.dumps(b) for b in webhook.bodies]
    assert any("rollback" in t and "step" in t for t in titles), f"no collapse notification in {webhook.bodies}"
    assert any("run completed" in t for t in titles)
    assert list((run_dir / "wandb").rglob("offline-run-*")), "W&B offline run missing under RUN/wandb"

    from prometheus_client import generate_latest

    text = generate_latest(exporter.registry).decode()
    assert "config_hash=" in text and 'rlguard_kl_budget{run_id="run"} 0.3' in text

    # Sinks that accept it get the journal's decision id: the live dashboard's rows carry it.
    journal_ids = {e["decision_id"] for e in journal(run_dir) if e["kind"] == "decision"}
    assert {row["id"] for row in history.decisions} <= journal_ids and history.decisions


def test_dashboards_section_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"dashboards\.wandb\.mode"):
        parse_run_config({"dashboards": {"wandb": {"mode": "sometimes"}}})
    with pytest.raises(ConfigError, match=r"dashboards\.notify\.webhook_url"):
        parse_run_config({"dashboards": {"notify": {"webhook_url": "hooks.slack.com/x"}}})
    with pytest.raises(ConfigError, match=r"dashboards\.notfy: unknown field"):
        parse_run_config({"dashboards": {"notfy": {}}})
    with pytest.raises(ConfigError, match=r"dashboards\.exporter\.kl_budget"):
        parse_run_config({"dashboards": {"exporter": {"kl_budget": -1}}})
    plain = parse_run_config({})
    sinks, _ = default_sinks_and_routes("/tmp/rlguard-no-such-run", plain)
    assert [type(s).__name__ for s in sinks] == ["RunExporter", "RunHistory"]  # nothing unasked for


def test_decision_id_and_reason_reach_only_the_sinks_that_accept_them():
    class Old:
        def on_decision(self, decision, phase, outcome):
            self.got = (phase, outcome)

    class WithId:
        def on_decision(self, decision, phase, outcome="", decision_id=None):
            self.got = (phase, decision_id)

    class AnyKeywords:
        def on_decision(self, decision, phase, outcome="", **extra):
            self.got = extra

    sinks = [Old(), WithId(), AnyKeywords()]
    fan = SinkFanout(sinks)
    fan.on_decision(Decision(Action.NOTIFY, 3, "kl high"), "decided", "", decision_id="d-7", reason="kl high")
    assert fan.error_total == 0
    assert sinks[0].got == ("decided", "")
    assert sinks[1].got == ("decided", "d-7")
    assert sinks[2].got == {"decision_id": "d-7", "reason": "kl high"}


def _bare_supervisor(tmp_path, raw: dict) -> Supervisor:
    return Supervisor(tmp_path / "run", parse_run_config(raw), serve_http=False, scheduler=False)


def test_a_custom_worker_is_only_tightened_on_the_knobs_it_reports(tmp_path):
    # The trainer section declares kl_coef and clip_range; the worker reports kl_coef and lr only.
    sup = _bare_supervisor(tmp_path, {"trainer": {"kl_coef": 0.05, "clip_range": 0.2},
                                      "supervisor": {"command": "python train.py"}})
    sup.live.initial_constraints = sup.initial_constraints()
    sup.live.constraints = sup.starting_constraints()
    assert sup.live.constraints == {}  # nothing is known to be adjustable before the worker says so
    sup.observe(MetricEvent(step=1, metrics={"kl": 0.02, "kl_coef": 0.07, "lr": 3e-6}))
    sup.observe(MetricEvent(step=2, metrics={"kl": 0.02, "kl_coef": 0.08, "lr": 2e-6}))
    view = sup.view()
    assert set(view.constraints) == {"kl_coef", "lr"}  # no clip_range for a worker without one
    assert view.initial_constraints["kl_coef"] == 0.05  # declared: relax aims at it
    assert view.initial_constraints["lr"] == 3e-6  # undeclared: the first reported value
    # The built-in worker still starts from the trainer's defaults for the knobs not declared.
    builtin = _bare_supervisor(tmp_path / "b", {"trainer": {"kl_coef": 0.05}})
    builtin.live.initial_constraints = builtin.initial_constraints()
    assert set(builtin.starting_constraints()) == {"kl_coef", "clip_range", "lr"}
    sup.journal.close()
    builtin.journal.close()


def test_the_view_lists_the_monitors_open_incidents(tmp_path):
    sup = _bare_supervisor(tmp_path, {"monitors": dict(QUIET_MONITORS, bounds={"rules": [
        {"metric": "kl", "upper": 0.5, "patience_steps": 1, "severity": "warning"}]}),
        "supervisor": {"command": "python train.py"}})
    for step in range(1, 6):
        sup.observe(MetricEvent(step=step, metrics={"kl": 0.9}))
    assert sup.view().open_warnings == sup.monitors.open_incidents() != {}
    sup.journal.close()


def test_a_worker_that_exits_2_before_its_first_step_fails_the_run_at_once(tmp_path):
    bad = "import sys; print('trainer.lr: must be > 0 (got -1)', file=sys.stderr); sys.exit(2)"
    # A long backoff: without failing fast the run would sit out restarts far beyond the deadline.
    sup_cfg = dict(FAST_SUPERVISOR, command=[sys.executable, "-c", bad], max_restarts=3,
                   restart_backoff_initial_s=60.0, restart_backoff_max_s=60.0)
    sup = Supervisor(tmp_path / "run", parse_run_config({"monitors": QUIET_MONITORS, "supervisor": sup_cfg}))
    result = run_supervisor(sup, timeout_s=30)
    assert result.state is RunState.FAILED and result.exit_code is ExitCode.FAILED
    assert result.attempts == 1 and result.restarts_left == 3
    assert "bad worker configuration" in result.reason and "trainer.lr: must be > 0" in result.reason
    notes = [e for e in journal(tmp_path / "run") if e.get("event") == "worker_bad_config"]
    assert len(notes) == 1 and "trainer.lr" in notes[0]["worker_log_tail"]


def test_operator_rollback_refuses_a_negative_skip_batches(tmp_path):
    sup = _bare_supervisor(tmp_path, {"supervisor": {"command": "python train.py"}})
    sup.live.state = RunState.RUNNING
    code, body = handle_operator(sup, "rollback", {"to_step": 2, "skip_batches": -1})
    assert code == 400 and "skip_batches" in body["error"]
    code, body = handle_operator(sup, "rollback", {"to_step": 2, "skip_batches": True})
    assert code == 400 and "skip_batches" in body["error"]
    sup.journal.close()
