"""RunExporter: the exposition a scripted run produces, line by line, on its own registry."""

from __future__ import annotations

import math
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rlguard.dashboards.exporter import RunExporter
from rlguard.dashboards.prom_catalog import OWN_FAMILIES, RUN_STATES, STEP_METRICS, all_family_names
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision
from tests.dashboards.conftest_ops import require


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw) -> RunExporter:
    kw.setdefault("info", {"model": "tiny-llama", "preset": "ppo-max", "config_hash": "3f2a"})
    kw.setdefault("clock", Clock())
    return RunExporter("run-a", **kw)


def samples(exporter: RunExporter) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of the exposition, parsed back."""
    out = {}
    for fam in text_string_to_metric_families(exporter.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(exporter: RunExporter, name: str, **labels) -> float | None:
    labels = {"run_id": "run-a", **labels}
    return samples(exporter).get((name, tuple(sorted(labels.items()))))


def lines(exporter: RunExporter, prefix: str) -> list[str]:
    return [ln for ln in exporter.exposition().decode().splitlines() if ln.startswith(prefix)]


def test_step_metrics_are_gauges_with_the_latest_value_and_exact_lines():
    e = make()
    e.on_event(
        MetricEvent(step=7, metrics={"reward": 1.5, "kl": 0.03, "response_length": 143.5}, time=5000.0)
    )
    e.on_event(MetricEvent(step=8, metrics={"reward": 1.75, "kl": 0.04}, time=5002.0, attempt=1))
    assert lines(e, "rlguard_reward") == ['rlguard_reward{run_id="run-a"} 1.75']
    assert lines(e, "rlguard_kl{") == ['rlguard_kl{run_id="run-a"} 0.04']
    assert lines(e, "rlguard_response_length") == ['rlguard_response_length{run_id="run-a"} 143.5']
    assert lines(e, "rlguard_step{") == ['rlguard_step{run_id="run-a"} 8.0']
    assert lines(e, "rlguard_attempt{") == ['rlguard_attempt{run_id="run-a"} 1.0']
    assert lines(e, "rlguard_last_step_timestamp_seconds{") == [
        'rlguard_last_step_timestamp_seconds{run_id="run-a"} 5002.0'
    ]
    assert lines(e, "rlguard_steps_total") == ['rlguard_steps_total{run_id="run-a"} 2.0']
    # A metric never reported has a family but no sample: a 0 would be a lie on a dashboard.
    assert lines(e, "rlguard_perplexity{") == []
    assert "# TYPE rlguard_perplexity gauge" in e.exposition().decode()


def test_non_finite_values_are_exported_as_such_and_counted():
    e = make()
    e.on_event(
        MetricEvent(
            step=1, metrics={"kl": math.nan, "reward": math.inf, "value_loss": -math.inf, "perplexity": 2.0}
        )
    )
    assert lines(e, "rlguard_kl{") == ['rlguard_kl{run_id="run-a"} NaN']
    assert lines(e, "rlguard_reward{") == ['rlguard_reward{run_id="run-a"} +Inf']
    assert lines(e, "rlguard_value_loss{") == ['rlguard_value_loss{run_id="run-a"} -Inf']
    assert value(e, "rlguard_nonfinite_metrics") == 3
    assert value(e, "rlguard_nonfinite_values_total", metric="kl") == 1
    e.on_event(MetricEvent(step=2, metrics={"kl": 0.1, "reward": 1.0, "value_loss": 0.5}))
    assert value(e, "rlguard_nonfinite_metrics") == 0
    assert value(e, "rlguard_nonfinite_values_total", metric="kl") == 1  # a counter: history stays


def test_null_means_not_measured_and_keeps_the_previous_value():
    e = make()
    e.on_event(MetricEvent(step=1, metrics={"eval_reward": 0.7}))
    e.on_event(MetricEvent(step=2, metrics={"eval_reward": None, "reward": 1.0}))
    assert value(e, "rlguard_eval_reward") == 0.7


def test_unknown_metrics_keep_their_name_in_a_label_up_to_a_cap():
    e = make(max_extra_metrics=2)
    e.on_event(MetricEvent(step=1, metrics={"train/custom loss": 0.5, "a_b": 1.0, "third": 2.0}))
    e.on_event(MetricEvent(step=2, metrics={"train/custom loss": 0.25, "fourth": 3.0}))
    assert value(e, "rlguard_extra_metric", metric="train/custom loss") == 0.25
    assert value(e, "rlguard_extra_metric", metric="a_b") == 1.0
    assert value(e, "rlguard_extra_metric", metric="third") is None
    assert value(e, "rlguard_extra_metrics_dropped_total") == 2


def test_run_state_is_a_state_set_with_exactly_one_state_set():
    e = make()
    assert value(e, "rlguard_run_state", state="init") == 1
    e.on_state("running")
    e.on_state("halted")
    states = {dict(k[1])["state"]: v for k, v in samples(e).items() if k[0] == "rlguard_run_state"}
    assert states["halted"] == 1 and sum(states.values()) == 1
    assert set(RUN_STATES) <= set(states)
    e.on_state("Draining")  # a state this exporter does not list yet: added, never dropped
    states = {dict(k[1])["state"]: v for k, v in samples(e).items() if k[0] == "rlguard_run_state"}
    assert states["draining"] == 1 and states["halted"] == 0 and sum(states.values()) == 1


def test_run_states_match_the_supervisor_enum():
    state = pytest.importorskip("rlguard.orchestrator.state")
    assert {s.value for s in state.RunState} <= set(RUN_STATES)
    e = make()
    e.on_state(state.RunState.ROLLING_BACK)
    assert value(e, "rlguard_run_state", state="rolling_back") == 1


def test_counters_rules_depend_on_exist_at_zero_before_anything_happens():
    e = make()
    for name, labels in [
        ("rlguard_alerts_total", {"severity": "critical"}),
        ("rlguard_alerts_total", {"severity": "warning"}),
        ("rlguard_rollbacks_total", {}),
        ("rlguard_restarts_total", {}),
        ("rlguard_checkpoints_written_total", {}),
        ("rlguard_notification_failures_total", {"target": "webhook"}),
        ("rlguard_notification_failures_total", {"target": "alertmanager"}),
    ]:
        assert value(e, name, **labels) == 0, name
    assert value(e, "rlguard_last_healthy_checkpoint_step") == -1


def test_alerts_decisions_and_rollbacks_are_counted():
    clock = Clock(2000.0)
    e = make(clock=clock)
    e.on_alert(Alert("pattern_collapse", "collapse", "kl", 40, Severity.CRITICAL, 35, "kl up, ppl down"))
    e.on_alert(Alert("spike", "length_spike", "response_length", 41, Severity.WARNING, 41, "len 250 > 180"))
    rollback = Decision(Action.ROLLBACK, 41, "collapse", target_step=30, params={"kl_coef": 0.1})
    e.on_decision(rollback, "decided", "")
    clock.t = 2010.0
    e.on_decision(rollback, "done", "loaded step-000030, skipped 4 batches")
    failed = Decision(Action.ROLLBACK, 60, "again", target_step=50)
    e.on_decision(failed, "decided", "")
    e.on_decision(failed, "failed", "checksum mismatch in model.safetensors")
    e.on_restart("worker exited with -9")
    assert value(e, "rlguard_alerts_total", severity="critical") == 1
    assert (
        value(
            e,
            "rlguard_alerts_by_detector_total",
            detector="collapse",
            code="pattern_collapse",
            severity="critical",
        )
        == 1
    )
    assert value(e, "rlguard_last_alert_timestamp_seconds", severity="critical") == 2000.0
    assert value(e, "rlguard_decisions_total", action="rollback", mode="auto") == 2
    assert value(e, "rlguard_decision_outcomes_total", action="rollback", outcome="done") == 1
    assert value(e, "rlguard_decision_outcomes_total", action="rollback", outcome="failed") == 1
    assert value(e, "rlguard_rollbacks_total") == 1  # the failed one did not roll back
    assert value(e, "rlguard_last_rollback_timestamp_seconds") == 2010.0
    assert value(e, "rlguard_restarts_total") == 1


def test_checkpoint_health_counts_follow_transitions():
    clock = Clock(3000.0)
    e = make(clock=clock)
    e.on_checkpoint(10, "/r/checkpoints/step-000010", "pending")
    clock.t = 3100.0
    e.on_checkpoint(20, "/r/checkpoints/step-000020", "pending")
    e.on_checkpoint(10, "/r/checkpoints/step-000010", "healthy")
    e.on_checkpoint(20, "/r/checkpoints/step-000020", "suspect")
    assert value(e, "rlguard_checkpoints_written_total") == 2  # health changes are not new checkpoints
    assert value(e, "rlguard_checkpoints", health="healthy") == 1
    assert value(e, "rlguard_checkpoints", health="suspect") == 1
    assert value(e, "rlguard_checkpoints", health="pending") == 0
    assert value(e, "rlguard_last_healthy_checkpoint_step") == 10
    assert value(e, "rlguard_last_checkpoint_step") == 20
    assert value(e, "rlguard_last_checkpoint_timestamp_seconds") == 3100.0
    e.on_checkpoint(10, "", "pruned")  # retention deleted it: no longer counted, not a new one
    e.on_checkpoint(30, "", "corrupt")  # found corrupt on disk: counted by health, not as written
    assert value(e, "rlguard_checkpoints", health="healthy") == 0
    assert value(e, "rlguard_checkpoints", health="corrupt") == 1
    assert value(e, "rlguard_last_healthy_checkpoint_step") == -1
    assert value(e, "rlguard_checkpoints_written_total") == 2
    assert not any("path" in dict(k[1]) or "step" in dict(k[1]) for k in samples(e))  # no unbounded labels


def test_step_duration_from_step_seconds_or_event_times_but_not_across_a_rollback():
    e = make()
    e.on_event(MetricEvent(step=1, metrics={"step_seconds": 3.0}, time=100.0))
    e.on_event(MetricEvent(step=2, metrics={}, time=107.0))  # 7 s since step 1
    e.on_event(MetricEvent(step=5, metrics={}, time=113.0))  # 3 steps in 6 s: 2 s each
    e.on_event(MetricEvent(step=3, metrics={}, time=120.0))  # rollback: no predecessor
    assert value(e, "rlguard_step_duration_seconds_count") == 3
    assert value(e, "rlguard_step_duration_seconds_sum") == 12.0
    assert value(e, "rlguard_step_duration_seconds_bucket", le="2.5") == 1
    assert value(e, "rlguard_step_duration_seconds_bucket", le="5.0") == 2


def test_info_kl_budget_and_bad_input():
    e = make(info={"model": "SmolLM2-135M", "preset": "ppo-max", "config-hash": "ab12", "kl_budget": 0.15})
    assert (
        value(
            e,
            "rlguard_run_info",
            model="SmolLM2-135M",
            preset="ppo-max",
            config_hash="ab12",
            kl_budget="0.15",
        )
        == 1
    )
    assert value(e, "rlguard_kl_budget") == 0.15
    with pytest.raises(ValueError, match="run_id"):
        RunExporter("", info={})
    with pytest.raises(ValueError, match=r"info\['config'\].*config hash"):
        RunExporter("r", info={"config": {"lr": 1e-6}})
    with pytest.raises(ValueError, match="kl_budget"):
        RunExporter("r", info={}, kl_budget="lots")


def test_each_exporter_has_its_own_registry():
    a, b = make(), RunExporter("run-b", info={})
    a.on_event(MetricEvent(step=1, metrics={"reward": 1.0}))
    assert value(a, "rlguard_reward") == 1.0
    assert "rlguard_reward{" not in b.exposition().decode()
    assert "python_gc" not in a.exposition().decode()  # not the global registry


def exercise_everything(e: RunExporter) -> None:
    e.on_event(
        MetricEvent(step=1, metrics={m.name: 0.5 for m in STEP_METRICS} | {"custom": 1.0, "kl": math.nan})
    )
    e.on_alert(Alert("spike", "kl_spike", "kl", 1, Severity.WARNING, 1, "m"))
    d = Decision(Action.ROLLBACK, 1, "r", target_step=0)
    e.on_decision(d, "decided", "")
    e.on_decision(d, "done", "ok")
    e.on_checkpoint(0, "/x", "healthy")
    e.on_restart("crash")
    e.notification_failed("webhook")


def test_exposition_has_exactly_the_cataloged_families():
    e = make(kl_budget=0.2)
    exercise_everything(e)
    families = {f.name for f in text_string_to_metric_families(e.exposition().decode())}
    # The text parser names counter families without _total; the catalog names the series.
    exposed = {n.removesuffix("_total") for n in all_family_names()}
    assert families == exposed
    assert set(OWN_FAMILIES) <= set(all_family_names())
    assert "_created" not in e.exposition().decode()


def test_exposition_passes_promtool_lint():
    promtool = require("promtool")
    e = make(kl_budget=0.2)
    exercise_everything(e)
    result = subprocess.run([promtool, "check", "metrics"], input=e.exposition(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_asgi_route_serves_text_and_openmetrics():
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    e = make()
    e.on_event(MetricEvent(step=3, metrics={"reward": 2.0}))
    client = TestClient(Starlette(routes=[e.asgi_route()]))
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert 'rlguard_reward{run_id="run-a"} 2.0' in resp.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert client.post("/metrics").status_code == 405


def test_serve_standalone_on_a_free_port_and_close():
    e = make()
    e.on_event(MetricEvent(step=4, metrics={"kl": 0.05}))
    server = e.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
        assert 'rlguard_kl{run_id="run-a"} 0.05' in body
        with pytest.raises(RuntimeError, match="already serving"):
            e.serve("127.0.0.1", 0)
    finally:
        e.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_is_a_run_sink_driven_through_the_supervisors_fanout():
    sinks = pytest.importorskip("rlguard.orchestrator.sinks")
    e = make()
    assert isinstance(e, sinks.RunSink)
    fanout = sinks.SinkFanout([e])
    fanout.on_state("running")
    fanout.on_event(MetricEvent(step=1, metrics={"kl": 0.01}))
    fanout.on_alert(Alert("spike", "kl_spike", "kl", 1, Severity.CRITICAL, 1, "m"))
    fanout.on_decision(Decision(Action.ROLLBACK, 1, "r", target_step=0), "decided")
    fanout.on_checkpoint(0, "/x", "pending")
    fanout.on_restart("crash")
    fanout.close()
    assert fanout.error_total == 0, fanout.errors
    assert value(e, "rlguard_decisions_total", action="rollback", mode="auto") == 1
    assert value(e, "rlguard_run_state", state="running") == 1


def test_detection_armed_gauge_per_class_over_the_real_http_endpoint():
    """What the run is not protected against, as a query: trl GRPO at beta 0 (no kl), then kl appears."""
    from rlguard.monitors.coverage import CLASSES

    e = make()
    server = e.serve("127.0.0.1", 0)

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
        return {s.labels["class"]: s.value for f in text_string_to_metric_families(body)
                if f.name == "rlguard_detection_armed" for s in f.samples}

    try:
        before = scrape()  # every class has its series before the first event
        assert set(before) == {c.name for c in CLASSES}
        assert before["non_finite"] == 1 and before["kl_runaway"] == 0 and before["length_collapse"] == 0
        trl = {"reward": 0.4, "entropy": 0.3, "response_length": 80.0, "truncated_fraction": 0.1, "kl": None}
        e.on_event(MetricEvent(step=1, metrics=trl))
        beta0 = scrape()
        assert beta0["length_collapse"] == beta0["pinned_at_cap"] == beta0["random_tokens"] == 1
        assert beta0["kl_runaway"] == beta0["kl_explosion"] == beta0["pattern_collapse"] == 0
        e.on_event(MetricEvent(step=2, metrics={**trl, "kl": 0.02}))
        assert scrape()["kl_runaway"] == 1 and scrape()["eval_long_tail"] == 0
        assert 'rlguard_detection_armed{class="kl_runaway",run_id="run-a"} 1.0' in e.exposition().decode()
    finally:
        e.close()
