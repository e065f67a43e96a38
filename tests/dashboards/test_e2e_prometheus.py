"""The whole ops path with the real programs: a real Prometheus scrapes a real exporter fed by a
collapse-like metric stream, evaluates the shipped rules.yml (with `for:` shortened), and a real
Alertmanager (the shipped example config) delivers the page to a webhook this test runs.
The Grafana panel queries run against the same Prometheus, and the Notifier's direct push to
Alertmanager goes through the same receiver.

Skipped, with the reason, only when prometheus / prometheus-alertmanager are not installed."""

from __future__ import annotations

import math
import threading
import urllib.parse

import pytest

from rlguard.dashboards.exporter import RunExporter
from rlguard.dashboards.grafana import generate, validate
from rlguard.dashboards.notify import Notifier
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision
from tests.dashboards.conftest_ops import (
    PROM_DIR,
    Receiver,
    http_json,
    require,
    shorten_for,
    start_alertmanager,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.e2e
RUN_ID = "e2e-run"


class CollapsingRun:
    """Feeds the exporter one step every 0.2 s: healthy until `collapse` is set, then the PPO
    paper's signature (reward up, KL up, perplexity down, length to the cap), plus what the
    supervisor would report: a critical alert and a rollback."""

    def __init__(self, exporter: RunExporter):
        self.exporter = exporter
        self.collapse = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        e, step, collapsed_at = self.exporter, 0, None
        e.on_state("running")
        e.on_checkpoint(0, "/runs/e2e/checkpoints/step-000000", "healthy")
        while not self.stop.wait(0.2):
            step += 1
            if self.collapse.is_set() and collapsed_at is None:
                collapsed_at = step
                e.on_alert(
                    Alert(
                        "pattern_collapse",
                        "collapse",
                        "kl",
                        step,
                        Severity.CRITICAL,
                        step - 3,
                        "kl 0.45 > 0.20, perplexity 1.2 < 2.0, length at cap",
                    )
                )
                rollback = Decision(Action.ROLLBACK, step, "pattern collapse", target_step=0)
                e.on_decision(rollback, "decided", "")
                e.on_decision(rollback, "done", "loaded step-000000")
            k = 0 if collapsed_at is None else step - collapsed_at + 1
            e.on_event(
                MetricEvent(
                    step=step,
                    metrics={
                        "reward": 1.0 + 0.01 * step + 0.3 * k,
                        "kl": 0.02 + 0.1 * k,
                        "perplexity": max(1.05, 2.5 - 0.3 * k),
                        "response_length": 120.0 if not k else 256.0,
                        "entropy": 1.5,
                        "truncated_fraction": 0.02 if not k else 0.9,
                        "kl_coef": 0.05,
                        "clip_range": 0.2,
                        "lr": 1e-6,
                        "tokens_per_second": 800.0,
                        "value_loss": math.nan if k > 3 else 0.4,
                    },
                )
            )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require("prometheus")
    require("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("ops")
    webhook = Receiver()
    exporter = RunExporter(
        RUN_ID, info={"model": "tiny", "preset": "ppo-max", "config_hash": "e2e"}, kl_budget=0.2
    )
    server = exporter.serve("127.0.0.1", 0)
    run = CollapsingRun(exporter)
    run.thread.start()
    children = []
    try:
        am, am_url = start_alertmanager(tmp, webhook.url)
        children.append(am)
        rules = shorten_for(PROM_DIR / "rules.yml", tmp / "rules.yml")
        prom, prom_url = start_prometheus(tmp, f"127.0.0.1:{server.port}", [rules], am_url)
        children.append(prom)
        query = lambda q: http_json(f"{prom_url}/api/v1/query", {"query": q})  # noqa: E731
        # The first sample is queryable only ~5.5 s after start (docs/OPS.md): poll.
        wait_until(
            "the first scraped sample",
            lambda: query(f'rlguard_step{{run_id="{RUN_ID}"}}')["data"]["result"],
            timeout_s=30,
        )
        yield {
            "prom": prom_url,
            "am": am_url,
            "webhook": webhook,
            "query": query,
            "run": run,
            "exporter": exporter,
        }
    except BaseException:
        for child in children:
            print(child.output())
        raise
    finally:
        run.stop.set()
        run.thread.join(5)
        for child in children:
            child.stop()
        exporter.close()
        webhook.close()


def test_induced_collapse_is_paged_through_prometheus_and_alertmanager(stack):
    query, webhook = stack["query"], stack["webhook"]
    assert query("up")["data"]["result"][0]["value"][1] == "1"
    stack["run"].collapse.set()

    def paged():
        for body in webhook.bodies("/rlguard-pager"):
            for alert in body["alerts"]:
                if alert["labels"]["alertname"] == "RLGuardCollapseDetected":
                    return alert
        return None

    alert = wait_until("RLGuardCollapseDetected at the pager webhook", paged, timeout_s=45)
    assert alert["labels"]["run_id"] == RUN_ID
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == f"RLHF policy collapse detected in run {RUN_ID}"
    assert alert["annotations"]["runbook_url"].endswith("#rlguardcollapsedetected")

    def firing() -> set[str]:
        alerts = http_json(f"{stack['prom']}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    # The rest of the incident, seen by Prometheus itself: the rollback, KL over its budget, NaN.
    wanted = {"RLGuardRollbackPerformed", "RLGuardKLAboveBudget", "RLGuardNonFiniteMetrics"}
    wait_until(f"{wanted} firing", lambda: wanted <= firing(), timeout_s=30)
    assert "RLGuardSupervisorDown" not in firing() and "RLGuardTrainingStalled" not in firing()


def test_every_grafana_query_runs_against_the_real_prometheus(stack):
    query = stack["query"]
    problems = []
    for where, expr in validate.queries(generate.build_dashboard()):
        result = query(validate.concrete(expr, run_id=RUN_ID))
        if result.get("status") != "success" or result.get("warnings"):
            problems.append(f"{where}: {result}")
    assert not problems, "\n".join(problems)
    # Not only valid: the main panels have data for this run.
    for expr in (
        f'rlguard_reward{{run_id=~"{RUN_ID}"}}',
        f'rlguard_kl{{run_id=~"{RUN_ID}"}}',
        f'rlguard_run_state{{run_id=~"{RUN_ID}"}} == 1',
    ):
        assert query(expr)["data"]["result"], expr
    # The run_id variable's label_values query.
    values = http_json(
        f"{stack['prom']}/api/v1/label/run_id/values?"
        + urllib.parse.urlencode({"match[]": "rlguard_run_info"})
    )["data"]
    assert values == [RUN_ID]


def test_notifier_pushes_incidents_straight_to_alertmanager(stack):
    webhook = stack["webhook"]
    n = Notifier("direct-run", {"alertmanager_url": stack["am"], "backoff_s": 0.05, "timeout_s": 5})
    n.on_alert(Alert("non_finite", "nan_guard", "value_loss", 77, Severity.CRITICAL, 77, "value_loss = nan"))
    n.close()
    assert n.sent == {"alertmanager": 1} and n.failures == {"alertmanager": 0}

    def in_alertmanager():
        alerts = http_json(
            f"{stack['am']}/api/v2/alerts?" + urllib.parse.urlencode({"filter": 'run_id="direct-run"'})
        )
        return [a for a in alerts if a["labels"]["alertname"] == "RLGuardIncident"]

    [alert] = wait_until("the pushed alert in Alertmanager", in_alertmanager, timeout_s=15)
    assert alert["labels"]["code"] == "non_finite" and alert["annotations"]["step"] == "77"

    def delivered():
        return [
            a
            for body in webhook.bodies("/rlguard-pager")
            for a in body["alerts"]
            if a["labels"].get("run_id") == "direct-run"
        ]

    [paged] = wait_until("the pushed alert at the pager webhook", delivered, timeout_s=20)
    assert paged["labels"]["source"] == "rlguard" and paged["labels"]["severity"] == "critical"


def test_supervisor_down_pages_when_the_exporter_stops_answering(stack):
    """Last in the module: it takes the exporter's port away."""
    stack["exporter"].close()

    def paged():
        return [
            a
            for body in stack["webhook"].bodies("/rlguard-pager")
            for a in body["alerts"]
            if a["labels"]["alertname"] == "RLGuardSupervisorDown" and a["status"] == "firing"
        ]

    [alert, *_] = wait_until("RLGuardSupervisorDown at the pager webhook", paged, timeout_s=45)
    assert alert["labels"]["job"] == "rlguard"
