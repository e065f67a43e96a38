"""The live page's "Not watched" panel in a real headless Chromium: the failure classes a run's
metrics leave unarmed, from the history alone, then from the supervisor's status as it changes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rlguard.dashboards.history import RunHistory
from rlguard.dashboards.web.app import build_app
from rlguard.monitors.coverage import CoverageTracker
from rlguard.monitors.events import MetricEvent
from tests.dashboards.test_web_dashboard import ARTIFACTS, CHROMIUM, Server, pytestmark  # noqa: F401

TRL_BETA0 = {"reward": 0.4, "entropy": 0.3, "response_length": 80.0, "truncated_fraction": 0.1, "grad_norm": 1.0}


class StatusWithCoverage:
    """The supervisor's GET /api/status as far as the page reads it; the coverage is the real
    tracker's, fed the same events as the history. Serves none until `ready` (an older supervisor)."""

    def __init__(self) -> None:
        self.tracker = CoverageTracker()
        self.ready = False

        async def status(request: Request):
            body = {"state": "running"}
            if self.ready:
                body["coverage"] = self.tracker.current
            return JSONResponse(body)

        self.routes = [Route("/api/status", status, methods=["GET"])]


def test_not_watched_panel_lists_unarmed_classes_and_follows_a_metric_appearing(tmp_path):
    from playwright.sync_api import sync_playwright

    history, control = RunHistory(), StatusWithCoverage()

    def feed(step: int, metrics: dict) -> None:
        history.on_event(MetricEvent(step=step, metrics=metrics))
        control.tracker.observe(metrics)

    history.on_state("running")
    for s in range(1, 25):
        feed(s, TRL_BETA0)
    ARTIFACTS.mkdir(exist_ok=True)
    with Server(build_app(history, control)) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{srv.port}/")
            page.wait_for_function("window.rlguardDashboard.live === true", timeout=15_000)

            # From the history (the status has no coverage yet): trl at beta 0 logs no kl.
            box = page.locator("#coverage-box")
            box.get_by_text("kl runaway").wait_for(timeout=10_000)
            assert box.is_visible()
            items = page.eval_on_selector_all("#coverage li", "els => els.map(e => e.textContent)")
            assert "kl runaway (kl or kl_seq not logged)" in items
            assert "kl explosion (kl not logged)" in items
            assert not any("length collapse" in x for x in items)  # armed: response_length is logged
            from rlguard.monitors.coverage import CLASSES, coverage

            armed = sum(c.armed for c in coverage(TRL_BETA0))
            assert page.locator("#coverage-armed").inner_text() == f"({armed} of {len(CLASSES)} failure classes armed)"
            page.screenshot(path=str(ARTIFACTS / "dashboard-coverage.png"))

            # kl appears later; the supervisor's status (polled every 2 s) says so.
            for s in range(25, 30):
                feed(s, {**TRL_BETA0, "kl": 0.01})
            control.ready = True
            page.wait_for_function("document.querySelector('#coverage-box').dataset.off === '2'", timeout=10_000)
            # with kl logged, only the classes that need what trl never logs stay off
            assert page.eval_on_selector_all("#coverage li", "els => els.map(e => e.textContent)") == [
                "repetition (distinct_2 not logged)",
                "eval long tail (eval_reward_skew or eval_reward_p90 not logged)"]
            assert page.locator("#coverage li").nth(1).get_attribute("title").startswith("held-out reward")
            assert not errors, errors
        finally:
            history.close()
            browser.close()
