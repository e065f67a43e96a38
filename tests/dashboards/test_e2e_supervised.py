"""The ops path end to end with nothing simulated: `rlguard run` supervises a real worker process
(tests/orchestrator/fake_worker.py, the real SDK) whose KL runs away mid-run; a real Prometheus
scrapes the supervisor's own /metrics, evaluates the shipped rules.yml, and a real Alertmanager
(the shipped example config) delivers the collapse page and the rollback notice to a webhook this
test runs. Prometheus's stored rlguard_kl must be the values the worker reported.

Skipped, with the reason, only when prometheus / prometheus-alertmanager are not installed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.parse

import pytest
import yaml

from tests.dashboards.conftest_ops import (
    PROM_DIR,
    REPO,
    Receiver,
    free_port,
    http_json,
    require,
    shorten_for,
    start_alertmanager,
    start_prometheus,
    wait_until,
)
from tests.orchestrator.harness import FAKE_WORKER, FAST_SUPERVISOR, QUIET_MONITORS, journal, story

pytestmark = pytest.mark.e2e

RUN_ID = "e2e-supervised"  # the run directory's name is the run_id label (orchestrator/default_sinks.py)
STEPS = 40
STEP_S = 0.3  # slow enough that a 1 s scrape sees the healthy phase, the runaway and the recovery
COLLAPSE_AT = 15  # attempt 0 only: the attempt after the rollback trains healthily to the end
KL_BUDGET = 0.2  # the exported rlguard_kl_budget; the worker's runaway passes it 2 steps after the onset
# The critical bound that triggers the rollback: above 0.5 for 4 steps, so the runaway lasts about
# 6 steps (~2 s) over the budget and a 1 s scrape cannot miss it.
MONITORS = dict(QUIET_MONITORS, bounds={"rules": [{"metric": "kl", "upper": 0.5, "patience_steps": 4,
                                                   "severity": "critical"}]})


def _run_config(tmp, port: int) -> dict:
    scenario = tmp / "scenario.json"
    scenario.write_text(json.dumps({"steps": STEPS, "step_s": STEP_S, "checkpoint_every": 2,
                                    "faults": {"0": {"collapse_at": COLLAPSE_AT}}}))
    supervisor = dict(FAST_SUPERVISOR, port=port)
    supervisor["command"] = [sys.executable, str(FAKE_WORKER), "--scenario", str(scenario),
                             "--run-dir", "{run_dir}", "{resume}"]
    return {"trainer": {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5}, "monitors": MONITORS,
            "policies": {"cooldown": {"steps": 3}}, "supervisor": supervisor,
            "dashboards": {"exporter": {"kl_budget": KL_BUDGET}}}


def _delivered(webhook: Receiver, receiver: str, alertname: str):
    for body in webhook.bodies("/" + receiver):
        for alert in body["alerts"]:
            if alert["labels"]["alertname"] == alertname and alert["labels"].get("run_id") == RUN_ID:
                return alert
    return None


def _worker_kl(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["metrics"]["kl"] for x in lines if x.strip()]


def test_collapse_in_a_supervised_run_is_scraped_and_paged_through_alertmanager(tmp_path):
    require("prometheus")
    require("prometheus-alertmanager")
    run_dir = tmp_path / RUN_ID
    webhook = Receiver()
    children, supervisor, supervisor_log = [], None, tmp_path / "supervisor.log"
    # The supervisor's port is fixed up front so Prometheus is already scraping when the run
    # starts: the alert counters' step from 0 to 1 is then seen (a first sample at 1 has no
    # increase(), and the collapse would never page).
    port = free_port()
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_run_config(tmp_path, port)))
    try:
        am, am_url = start_alertmanager(tmp_path, webhook.url)
        children.append(am)
        # The rules to test (collapse, rollback) have no `for:`; the long one keeps the
        # supervisor-down and stall rules quiet while the run is starting and after it ends.
        rules = shorten_for(PROM_DIR / "rules.yml", tmp_path / "rules.yml", for_s="10m")
        prom, prom_url = start_prometheus(tmp_path, f"127.0.0.1:{port}", [rules], am_url)
        children.append(prom)
        query = lambda q: http_json(f"{prom_url}/api/v1/query", {"query": q})  # noqa: E731
        # Prometheus starts its scrape loops ~5 s after it is ready (target updates are batched):
        # wait for the first (failed) scrape, so the run's counters are seen from 0.
        wait_until("Prometheus scraping the supervisor's port",
                   lambda: query('up{job="rlguard"} == 0')["data"]["result"], timeout_s=30)

        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        with open(supervisor_log, "wb") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg_path), "--out", str(run_dir), "-q"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        info = wait_until("RUN/supervisor.json with the supervisor's URL",
                          lambda: json.loads((run_dir / "supervisor.json").read_text()), timeout_s=60)
        assert info["port"] == port and info["pid"] == supervisor.pid

        # Prometheus sees the run healthy first, from the supervisor's own /metrics.
        step_expr = f'rlguard_step{{run_id="{RUN_ID}"}} > 0'
        up = wait_until("the supervisor scraped as up with a training step",
                        lambda: query(step_expr)["data"]["result"], timeout_s=60)
        assert up[0]["metric"]["job"] == "rlguard" and up[0]["metric"]["instance"] == f"127.0.0.1:{port}"

        paged = wait_until("RLGuardCollapseDetected at the pager webhook",
                           lambda: _delivered(webhook, "rlguard-pager", "RLGuardCollapseDetected"),
                           timeout_s=60)
        assert paged["status"] == "firing" and paged["labels"]["severity"] == "critical"
        assert paged["annotations"]["summary"] == f"RLHF policy collapse detected in run {RUN_ID}"
        notice = wait_until("RLGuardRollbackPerformed at the team webhook",
                            lambda: _delivered(webhook, "rlguard-webhook", "RLGuardRollbackPerformed"),
                            timeout_s=60)
        assert notice["status"] == "firing" and notice["labels"]["severity"] == "warning"

        # The run recovers and completes on its own: the supervisor exits 0.
        assert supervisor.wait(timeout=120) == 0, supervisor_log.read_text()[-3000:]

        # What Prometheus stored is what the worker reported: every scraped kl value is one of
        # the worker's, and the runaway (over the KL budget) and the recovery are among them.
        reported = _worker_kl(run_dir)
        assert max(reported) > 0.5 and reported[-1] < 0.1  # the run recovered after the rollback
        [series] = query(f'rlguard_kl{{run_id="{RUN_ID}"}}[10m]')["data"]["result"]
        scraped = [float(v) for _, v in series["values"]]
        strangers = [v for v in scraped if not any(math.isclose(v, r, rel_tol=1e-9) for r in reported)]
        assert not strangers, f"scraped kl values the worker never reported: {strangers}"
        assert max(scraped) > KL_BUDGET and min(scraped) < 0.1
        assert scraped.index(max(scraped)) < len(scraped) - 1  # healthy values scraped after the runaway
        # Both paging counters were scraped at 0 before the incident and at 1 after it.
        for counter in ("rlguard_rollbacks_total", 'rlguard_alerts_total{severity="critical"}'):
            [series] = query(f'{counter}[10m]')["data"]["result"]
            assert series["metric"]["run_id"] == RUN_ID
            assert (series["values"][0][1], series["values"][-1][1]) == ("0", "1"), counter
        # The supervisor's journal tells the same story: a critical KL alert, then a rollback.
        assert ("decision", "rollback", "done") in story(run_dir)
        [alert] = [e["alert"] for e in journal(run_dir) if e["kind"] == "alert"]
        assert (alert["metric"], alert["severity"]) == ("kl", "critical")
        budget = query(f'last_over_time(rlguard_kl_budget{{run_id="{RUN_ID}"}}[10m])')["data"]["result"]
        assert float(budget[0]["value"][1]) == KL_BUDGET
        # The Grafana run_id variable sees this run.
        values = http_json(f"{prom_url}/api/v1/label/run_id/values?"
                           + urllib.parse.urlencode({"match[]": "rlguard_run_info"}))["data"]
        assert values == [RUN_ID]
    except BaseException:
        print("webhook received:", json.dumps(webhook.requests)[:4000])
        try:
            print("ALERTS:", query("ALERTS"))
            print("counters:", query('rlguard_alerts_total[10m]'))
        except Exception as e:
            print("query failed", e)
        for child in children:
            print(child.output())
        if supervisor_log.exists():
            print(supervisor_log.read_text(errors="replace")[-3000:])
        raise
    finally:
        if supervisor is not None and supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
            _kill_worker(run_dir)  # only when the supervisor did not end the run itself
        for child in children:
            child.stop()
        webhook.close()


def _kill_worker(run_dir) -> None:
    """The worker outlives a killed supervisor by design (it reattaches to a restarted one): kill
    it by its pid from RUN/supervisor.json when a failed test left it running."""
    try:
        pid = json.loads((run_dir / "supervisor.json").read_text())["worker"]["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        os.kill(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
