"""The dashboard's HTTP API without a browser: history payload, validation, the event stream,
and the 100,000-step history staying small."""

from __future__ import annotations

import json
import math

import pytest
from starlette.testclient import TestClient

from rlguard.dashboards.history import RunHistory
from rlguard.dashboards.web.app import build_app, dashboard_routes
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision


def _history_with_incident() -> RunHistory:
    h = RunHistory()
    for s in range(30):
        h.on_event(MetricEvent(step=s, metrics={"reward": 0.1 * s, "kl": 0.01 * s, "lr": 1e-5}))
    h.on_checkpoint(10, "/run/checkpoints/step-000010", "healthy")
    h.on_alert(Alert("spike", "kl_spike", "kl", 29, Severity.CRITICAL, 25, "kl = 0.29 > 0.2 for 3 steps"))
    h.on_decision(Decision(Action.ROLLBACK, 29, "kl spike", target_step=10, params={"kl_coef": 0.2}), "applied", "ok")
    h.on_event(MetricEvent(step=11, metrics={"reward": 1.0, "kl": float("nan")}))
    return h


def test_history_endpoint_returns_json_safe_snapshot_with_segments():
    client = TestClient(build_app(_history_with_incident()))
    r = client.get("/api/history?max_points=100")
    assert r.status_code == 200
    def bare(token):  # strict JSON: NaN must not leak as a bare token (the text may say "NaN")
        raise AssertionError(f"bare {token} in the payload")

    body = json.loads(r.text, parse_constant=bare)
    assert body["control"] is False
    assert [s["index"] for s in body["segments"]] == [0, 1]
    assert body["segments"][0]["rolled_back_from"] == 11
    kl = body["metrics"]["kl"]
    assert kl["nonfinite"] == [{"step": 11, "value": "NaN"}]
    rolled = [s for s in kl["series"] if s["rolled_back"]]
    assert rolled and rolled[0]["steps"][0] == 11 and rolled[0]["steps"][-1] == 29
    assert body["alerts"][0]["message"] == "kl = 0.29 > 0.2 for 3 steps"
    assert body["decisions"][0]["action"] == "rollback" and body["decisions"][0]["outcome"] == "ok"
    assert body["checkpoints"][0]["health"] == "healthy"


@pytest.mark.parametrize("query", ["max_points=abc", "max_points=3", "max_points=99999999"])
def test_history_endpoint_rejects_bad_max_points_naming_the_field(query):
    r = TestClient(build_app(RunHistory())).get(f"/api/history?{query}")
    assert r.status_code == 400
    assert "max_points" in r.json()["error"]


def test_page_and_vendored_chart_library_are_served_without_cdn():
    client = TestClient(build_app(RunHistory()))
    page = client.get("/")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
    js = client.get("/dashboard/static/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and "uPlot" in js.text
    assert client.get("/dashboard/static/../app.py").status_code == 404
    assert client.get("/dashboard/static/nope.js").status_code == 404


def test_stream_sends_batches_of_updates_and_ends_when_the_run_closes():
    h = RunHistory()
    h.on_event(MetricEvent(step=0, metrics={"reward": 1.0}))
    since = h.seq
    h.on_event(MetricEvent(step=1, metrics={"reward": float("inf")}))
    h.on_alert(Alert("non_finite", "nf", "reward", 1, Severity.CRITICAL, 1, "reward = inf"))
    h.close()
    client = TestClient(build_app(h))
    with client.stream("GET", f"/api/stream?since={since}") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    batches = [json.loads(line[len("data: "):]) for line in text.splitlines()
               if line.startswith("data: [")]
    updates = [u for b in batches for u in b]
    kinds = [u[1] for u in updates]
    assert kinds == ["event", "alert", "closed"]
    assert updates[0][2] == {"step": 1, "segment": 0, "metrics": {"reward": "Infinity"}}


def test_stream_tells_a_client_that_fell_behind_to_resync():
    h = RunHistory(max_updates=10)
    for s in range(50):
        h.on_event(MetricEvent(step=s, metrics={"reward": 1.0}))
    h.close()
    with TestClient(build_app(h)).stream("GET", "/api/stream?since=1") as r:
        text = "".join(r.iter_text())
    assert "event: resync" in text


def test_routes_report_control_presence_for_the_buttons():
    from starlette.applications import Starlette

    app = Starlette(routes=dashboard_routes(RunHistory(), control=object()))
    assert TestClient(app).get("/api/history").json()["control"] is True


def test_100k_steps_history_payload_stays_small_and_keeps_spikes():
    h = RunHistory()
    names = ["reward", "kl", "perplexity", "response_length", "entropy", "truncated_fraction",
             "distinct_2", "reward_std", "policy_loss", "value_loss", "clipfrac", "grad_norm",
             "kl_coef", "clip_range", "lr"]
    for s in range(100_000):
        h.on_event(MetricEvent(step=s, metrics={n: math.sin(s / 500 + i) for i, n in enumerate(names)}))
    # one spike and one NaN deep inside the record must survive downsampling
    h.on_event(MetricEvent(step=100_000, metrics={"kl": 0.0}))
    h.columns["kl"].values[73_421] = 50.0
    h.columns["reward"].values[12_345] = float("nan")
    # a rollback near the end: a second segment
    for s in range(90_000, 90_100):
        h.on_event(MetricEvent(step=s, metrics={n: 0.0 for n in names}))
    client = TestClient(build_app(h))
    r = client.get("/api/history?max_points=800", headers={"Accept-Encoding": "identity"})
    body = r.json()
    assert len(r.content) < 600_000, f"{len(r.content)} bytes for 15 metrics x 800 points"
    for name in names:
        shown = sum(len(s["steps"]) for s in body["metrics"][name]["series"])
        assert shown <= 800 + 4 * len(body["metrics"][name]["series"]), (name, shown)
        assert body["metrics"][name]["count"] >= 100_000
    kl_values = [v for s in body["metrics"]["kl"]["series"] for v in s["values"]]
    assert max(kl_values) == 50.0
    assert body["metrics"]["reward"]["nonfinite"] == [{"step": 12_345, "value": "NaN"}]
    gz = client.get("/api/history?max_points=800", headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("content-encoding") == "gzip"
    assert json.loads(gz.content) == body
    assert gz.num_bytes_downloaded < len(r.content) / 2


def test_history_carries_the_coverage_of_the_charted_metrics():
    """The page's fallback when no supervisor status is there: from the names with values."""
    h = RunHistory()
    h.on_event(MetricEvent(step=1, metrics={"reward": 0.3, "entropy": 0.2, "response_length": 50.0, "kl": None}))
    cov = TestClient(build_app(h)).get("/api/history").json()["coverage"]
    assert cov["metrics"] == ["entropy", "response_length", "reward"]
    off = {c["class"]: c["missing"] for c in cov["classes"] if not c["armed"]}
    assert off["kl_runaway"] == ["kl or kl_seq"] and off["pinned_at_cap"] == ["truncated_fraction"]
    assert "length_collapse" in cov["armed"] and "kl or kl_seq not logged" in cov["summary"]
