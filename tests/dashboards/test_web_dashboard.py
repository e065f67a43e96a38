"""The live dashboard in a real headless Chromium (Debian's, driven by playwright).

One browser session walks the whole story, because starting Chromium is the slow part:
the page loads with the token in the URL fragment, charts follow events added on the
server, an induced incident (critical alert + rollback, then steps going back) shows in
the timeline and as chart markers with the undone steps greyed, and the buttons reach the
control endpoints with the bearer token. A screenshot goes to artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rlguard.dashboards.history import RunHistory
from rlguard.dashboards.web.app import build_app
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TOKEN = "s3cret-token"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
                       reason="Debian chromium is not installed (apt-get install chromium); "
                              "the dashboard browser test needs it"),
]


class ControlStub:
    """Stands in for the supervisor's control API in this test only: records each POST."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []

        async def endpoint(request: Request):
            body = await request.json() if (await request.body()) else {}
            self.calls.append((request.url.path, request.headers.get("authorization", ""), body))
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"error": "bad token"}, status_code=401)
            return JSONResponse({"ok": True})

        async def status(request: Request):
            return JSONResponse({"state": "paused", "reason": "awaiting approval of rollback (d-000042)",
                                 "approval": {"decision_id": "d-000042", "seconds_left": 1700.0,
                                              "decision": {"action": "rollback", "step": 69, "target_step": 20,
                                                           "reason": "critical change_point on kl"}}})

        self.routes = [Route(f"/api/{name}", endpoint, methods=["POST"])
                       for name in ("pause", "resume", "rollback", "relax", "halt", "approve")]
        self.routes.append(Route("/api/status", status, methods=["GET"]))


class Server:
    """uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def _metrics(step: int, collapse: float = 0.0) -> dict:
    return {
        "reward": 0.5 + 0.01 * step + collapse, "kl": 0.01 + 0.001 * step + 0.3 * collapse,
        "perplexity": 3.0 - 0.005 * step - collapse, "response_length": 40 + 0.2 * step + 80 * collapse,
        "entropy": 2.0 - 0.01 * step, "truncated_fraction": collapse, "distinct_2": 0.8 - 0.5 * collapse,
        "kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5,
    }


def _feed(history: RunHistory, steps, collapse: float = 0.0) -> None:
    for s in steps:
        history.on_event(MetricEvent(step=s, metrics=_metrics(s, collapse)))


def test_dashboard_live_incident_and_controls_in_chromium():
    from playwright.sync_api import sync_playwright

    history = RunHistory()
    history.on_state("running")
    _feed(history, range(0, 40))
    history.on_checkpoint(10, "/run/checkpoints/step-000010", "healthy")
    history.on_checkpoint(20, "/run/checkpoints/step-000020", "healthy")
    history.on_checkpoint(10, "", "pruned")  # retention removed it: not a rollback target any more
    control = ControlStub()
    ARTIFACTS.mkdir(exist_ok=True)

    with Server(build_app(history, control)) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: d.accept())
            page.goto(f"http://127.0.0.1:{srv.port}/#token={TOKEN}")

            # Loaded: the four metrics charted, the token moved out of the address bar.
            page.wait_for_function("window.rlguardDashboard.live === true", timeout=15_000)
            for name in ("reward", "kl", "perplexity", "response_length"):
                assert page.locator(f"#charts-main .chart[data-metric={name}] canvas").count() == 1
            assert page.locator("#charts-constraints .chart[data-metric=kl_coef]").count() == 1
            assert "token" not in page.url
            assert page.evaluate("sessionStorage.getItem('rlguard.control.token')") == TOKEN

            # Live: steps added on the server reach the chart without a reload.
            loads = page.evaluate("window.rlguardDashboard.loads")
            _feed(history, range(40, 60), collapse=0.0)
            page.wait_for_function("document.querySelector('#step').textContent === '59'", timeout=10_000)
            page.wait_for_function("window.rlguardDashboard.charts.kl.u.data[0].slice(-1)[0] === 59",
                                   timeout=10_000)
            assert page.evaluate("window.rlguardDashboard.loads") == loads

            # Incident: collapse, a critical alert, a rollback to step 20, steps going back.
            _feed(history, range(60, 70), collapse=1.0)
            history.on_alert(Alert("change_point", "kl_cusum", "kl", 69, Severity.CRITICAL, 61,
                                   "kl = 0.38 rose 0.31 above its mean since step 61"))
            history.on_decision(Decision(Action.ROLLBACK, 69, "critical change_point on kl", target_step=20,
                                         params={"kl_coef": 0.1}, skip_batches=4), "applied", "ok")
            history.on_checkpoint(60, "/run/checkpoints/step-000060", "suspect")
            _feed(history, range(21, 35))
            page.wait_for_function("document.querySelector('#segment').textContent === '1'", timeout=10_000)
            timeline = page.locator("#timeline")
            timeline.get_by_text("kl = 0.38 rose 0.31 above its mean since step 61").wait_for(timeout=10_000)
            assert "ROLLBACK → step 20" in timeline.inner_text()
            page.wait_for_function(
                "(window.rlguardDashboard.markers.kl || []).some(m => m.kind === 'alert' && m.severity === 'critical')"
                " && window.rlguardDashboard.markers.kl.some(m => m.kind === 'rollback' && m.target === 20)",
                timeout=10_000)
            rolled = page.evaluate(
                "window.rlguardDashboard.snap.metrics.kl.series.filter(s => s.rolled_back).map(s => [s.steps[0], s.steps.slice(-1)[0]])")
            assert rolled == [[21, 69]]
            assert page.evaluate("window.rlguardDashboard.charts.kl.u.series[1].stroke()") != \
                page.evaluate("window.rlguardDashboard.charts.kl.u.series[2].stroke()")
            assert "suspect" in page.locator("#checkpoints").inner_text()
            assert page.eval_on_selector_all("#rollback-target option", "els => els.map(e => e.value)") == ["60", "20"]

            # Buttons: pause, then roll back to the healthy checkpoint chosen in the select.
            page.click("#btn-pause")
            page.locator("#toast").get_by_text("/api/pause: 200").wait_for(timeout=10_000)
            page.select_option("#rollback-target", "20")
            page.click("#btn-rollback")
            page.locator("#toast").get_by_text("/api/rollback: 200").wait_for(timeout=10_000)
            assert control.calls[0] == ("/api/pause", f"Bearer {TOKEN}", {})
            assert control.calls[1] == ("/api/rollback", f"Bearer {TOKEN}", {"to_step": 20})

            # The approval the supervisor's status reports waiting: approve it by its id.
            page.locator("#approvals button.approve").click()
            page.locator("#toast").get_by_text("/api/approve: 200").wait_for(timeout=10_000)
            assert control.calls[2] == ("/api/approve", f"Bearer {TOKEN}", {"decision_id": "d-000042", "approve": True})

            # A wrong token is rejected by the control API: the page forgets it and says so.
            page.evaluate("sessionStorage.setItem('rlguard.control.token', 'wrong')")
            page.click("#btn-resume")
            page.locator("#toast.error").get_by_text("/api/resume: 401").wait_for(timeout=10_000)
            assert page.evaluate("sessionStorage.getItem('rlguard.control.token')") is None

            page.wait_for_timeout(400)  # let the 250 ms render tick draw the last points
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert not errors, errors
        finally:
            history.close()  # ends the event stream so uvicorn can stop
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert json.dumps(control.calls)
