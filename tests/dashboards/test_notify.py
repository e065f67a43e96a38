"""Notifier against a real local HTTP receiver: payloads, retries, give-up, counting, never blocking."""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from rlguard.dashboards.exporter import RunExporter
from rlguard.dashboards.notify import Notifier, alertmanager_payload, slack_payload
from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.decision import Action, Decision
from tests.dashboards.conftest_ops import Receiver, free_port, wait_until

COLLAPSE = Alert(
    "pattern_collapse",
    "collapse",
    "kl",
    120,
    Severity.CRITICAL,
    112,
    "kl 0.31 > 0.20, perplexity 1.4 < 2.1, length 250 at cap for 8 steps",
)
ROLLBACK = Decision(
    Action.ROLLBACK,
    120,
    "pattern collapse since step 112",
    target_step=100,
    params={"kl_coef": 0.075, "lr": math.nan},
    skip_batches=4,
    alerts=("pattern_collapse",),
)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def fast(**kw) -> dict:
    return {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2, **kw}


def test_alert_becomes_a_slack_compatible_message_with_the_numbers(receiver):
    n = Notifier("run-a", fast(webhook_url=receiver.url + "/hook", dashboard_url="http://127.0.0.1:8765/"))
    n.on_alert(COLLAPSE)
    n.close()
    [body] = receiver.bodies("/hook")
    assert body["text"].startswith("[critical] run-a: pattern_collapse on kl at step 120")
    assert "kl 0.31 > 0.20" in body["text"]
    fields = [f["text"] for block in body["blocks"] for f in block.get("fields", [])]
    assert "*step*\n120" in fields and "*onset step*\n112" in fields
    assert body["attachments"][0]["color"] == "#d93025"
    assert {"title": "detector", "value": "collapse", "short": True} in body["attachments"][0]["fields"]
    assert body["rlguard"]["labels"]["code"] == "pattern_collapse"
    assert "http://127.0.0.1:8765/" in str(body["blocks"][-1])
    assert n.sent == {"webhook": 1} and n.failures == {"webhook": 0}


def test_decision_notified_when_taken_and_when_it_failed_not_when_it_succeeded(receiver):
    n = Notifier("run-a", fast(webhook_url=receiver.url))
    n.on_decision(ROLLBACK, "decided", "")
    n.on_decision(ROLLBACK, "done", "loaded step-000100")
    n.on_decision(ROLLBACK, "skipped", "already rolling back")
    n.on_decision(ROLLBACK, "failed", "checksum mismatch in model.safetensors")
    tighten = Decision(Action.TIGHTEN, 90, "kl rising", params={"kl_coef": 0.1}, mode="approve")
    n.on_decision(tighten, "decided", "")
    n.on_state("running")
    n.on_state("halted")
    n.close()
    texts = [b["text"] for b in receiver.bodies()]
    assert len(texts) == 4, texts
    assert texts[0].startswith("[warning] run-a: rollback at step 120")
    assert texts[1].startswith("[critical] run-a: rollback FAILED at step 120")
    assert "checksum mismatch in model.safetensors" in texts[1]
    assert "approve mode: awaiting approval" in texts[2]
    assert texts[3] == "[critical] run-a: run halted"
    fields = receiver.bodies()[0]["attachments"][0]["fields"]
    assert {"title": "target step", "value": "100", "short": True} in fields
    assert {"title": "lr", "value": "nan", "short": True} in fields  # NaN travels as text, not invalid JSON


def test_retries_until_the_receiver_recovers():
    flaky = Receiver(fail_first=3, fail_status=503)
    try:
        n = Notifier("run-a", fast(webhook_url=flaky.url, max_attempts=5))
        n.on_alert(COLLAPSE)
        n.close()
        assert flaky.attempts == 4 and len(flaky.bodies()) == 1
        assert n.failures["webhook"] == 0
    finally:
        flaky.close()


def test_gives_up_after_max_attempts_and_counts_it_in_the_exporter():
    down = Receiver(fail_first=100, fail_status=500)
    exporter = RunExporter("run-a", info={})
    try:
        n = Notifier(
            "run-a", fast(webhook_url=down.url, max_attempts=3), on_failure=exporter.notification_failed
        )
        n.on_alert(COLLAPSE)
        n.close()
        assert down.attempts == 3
        assert n.failures["webhook"] == 1
        assert (
            'rlguard_notification_failures_total{run_id="run-a",target="webhook"} 1.0'
            in exporter.exposition().decode()
        )
    finally:
        down.close()


def test_client_errors_are_not_retried_and_retry_after_is_honoured():
    rejecting = Receiver(fail_first=100, fail_status=400)
    limited = Receiver(fail_first=1, fail_status=429, retry_after="0.02")
    try:
        n = Notifier("run-a", fast(webhook_url=rejecting.url, max_attempts=5))
        n.on_alert(COLLAPSE)
        n.close()
        assert rejecting.attempts == 1 and n.failures["webhook"] == 1
        m = Notifier("run-a", fast(webhook_url=limited.url, max_attempts=2))
        m.on_alert(COLLAPSE)
        m.close()
        assert limited.attempts == 2 and len(limited.bodies()) == 1
    finally:
        rejecting.close()
        limited.close()


def test_unreachable_target_is_retried_then_counted():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    failures = []
    n = Notifier("run-a", fast(alertmanager_url=url, max_attempts=2), on_failure=failures.append)
    n.on_restart("worker killed by signal 9")
    n.close()
    assert failures == ["alertmanager"] and n.sent == {"alertmanager": 0}


def test_a_hanging_receiver_never_blocks_the_run_and_a_full_queue_is_counted():
    release = threading.Event()

    class Hang(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            release.wait(10)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        failures = []
        n = Notifier(
            "run-a",
            fast(webhook_url=f"http://127.0.0.1:{httpd.server_address[1]}", queue_size=2, timeout_s=10),
            on_failure=failures.append,
        )
        for _ in range(10):  # one in flight, two queued, the rest dropped at once
            n.on_alert(COLLAPSE)
        # Dropped while the receiver still hangs: had notify() waited for room, nothing would be.
        assert len(failures) >= 7 and set(failures) == {"webhook"}
        release.set()
        n.close()
        assert n.sent["webhook"] + n.failures["webhook"] == 10
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


def test_alertmanager_payload_shape():
    [alert] = alertmanager_payload(
        _note(), "run-a", now=1_764_340_000.0, ttl_s=3600, dashboard_url="http://127.0.0.1:8765/"
    )
    assert alert["labels"] == {
        "severity": "critical",
        "run_id": "run-a",
        "source": "rlguard",
        "alertname": "RLGuardIncident",
        "code": "pattern_collapse",
    }
    assert alert["startsAt"] == "2025-11-28T14:26:40Z"
    assert alert["endsAt"] == "2025-11-28T15:26:40Z"
    assert alert["annotations"]["onset_step"] == "112"
    assert alert["generatorURL"] == "http://127.0.0.1:8765/"
    assert slack_payload(_note())["text"] == "collapse\nkl 0.31"


def _note():
    from rlguard.dashboards.notify import Notification

    return Notification(
        kind="alert",
        severity="critical",
        title="collapse",
        detail="kl 0.31",
        fields={"step": 120, "onset step": 112},
        labels={"alertname": "RLGuardIncident", "code": "pattern_collapse", "metric": ""},
    )


def test_bad_config_names_the_field():
    with pytest.raises(ValidationError, match="webhook_url"):
        Notifier("r", {"webhook_url": "hooks.slack.com/services/x"})
    with pytest.raises(ValidationError, match="max_attempts"):
        Notifier("r", {"max_attempts": 0})
    with pytest.raises(ValidationError, match="retries"):
        Notifier("r", {"retries": 3})  # unknown field: a typo is an error, not a silent default


def test_no_targets_means_no_thread_and_no_error():
    n = Notifier("r")
    n.on_alert(COLLAPSE)
    n.close()
    assert n.targets == [] and n.sent == {}


def test_is_a_run_sink_driven_through_the_supervisors_fanout(receiver):
    sinks = pytest.importorskip("rlguard.orchestrator.sinks")
    n = Notifier("run-a", fast(webhook_url=receiver.url))
    assert isinstance(n, sinks.RunSink)
    fanout = sinks.SinkFanout([n])
    fanout.on_alert(COLLAPSE)
    fanout.on_decision(ROLLBACK, "decided")
    fanout.on_state("failed")
    fanout.close()
    assert fanout.error_total == 0, fanout.errors
    assert len(receiver.bodies()) == 3


def test_a_failing_webhook_does_not_delay_the_alertmanager_page():
    down = Receiver(fail_first=100, fail_status=503)
    am = Receiver()
    slow_retry = {"backoff_s": 60.0, "max_backoff_s": 60.0, "timeout_s": 2, "max_attempts": 3}
    try:
        n = Notifier("run-a", {"webhook_url": down.url, "alertmanager_url": am.url, **slow_retry})
        n.on_alert(COLLAPSE)
        # The webhook sits in a 60 s backoff; the Alertmanager push goes out meanwhile.
        wait_until("the Alertmanager push", lambda: am.bodies("/api/v2/alerts"), timeout_s=30)
        assert down.attempts == 1
        n.close(timeout_s=0.5)  # cuts the backoff short and counts the webhook as failed
        assert n.sent == {"webhook": 0, "alertmanager": 1} and n.failures["webhook"] == 1
    finally:
        down.close()
        am.close()
