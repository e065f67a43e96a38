"""Prometheus exporter for one supervised run: a sink of the supervisor (docs/INTERFACES.md).

The supervisor calls `on_event` / `on_alert` / `on_decision` / `on_checkpoint` / `on_state` /
`on_restart` as things happen; Prometheus scrapes `/metrics`, mounted on the supervisor's one
port with `asgi_route()`, or served standalone with `serve()` (`rlguard watch`).

What is exported and why it is shaped that way (names in dashboards/prom_catalog.py):

- Every per-step metric of docs/METRICS.md is a gauge family `rlguard_<name>{run_id}` holding
  the latest value; NaN and +-Inf are exported as such, so rules can fire on them, and
  `rlguard_nonfinite_metrics` counts them in the latest event. `null` ("not measured this
  step") leaves the previous value in place: a gauge is "the latest measurement".
- Counters that alert rules test with `increase(...) > 0` exist at 0 from the start
  (alerts by severity, rollbacks, restarts, checkpoints, notification failures): a counter
  series that first appears at 1 has no increase Prometheus can see, so the first collapse
  of a run would never page.
- Timestamps of "last step / last checkpoint / last rollback" are gauges in seconds since
  the epoch, for `time() - x > N` rules.
- `rlguard_detection_armed{class}`: 1 per failure class the metrics seen so far let the
  monitors detect, 0 per class a needed metric is missing for (monitors/coverage.py). Every
  class has its series from the start, so "what is this run not protected against" is a query.

Each exporter has its own CollectorRegistry (never the process-global one), so two runs, or
two tests, never share series. All methods are thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import disable_created_metrics

from rlguard.dashboards.prom_catalog import (
    EXTRA_METRIC_FAMILY,
    OWN_FAMILIES,
    RUN_STATES,
    STEP_METRICS,
    STEP_METRICS_BY_NAME,
    label_name,
)
from rlguard.dashboards.prom_server import MetricsServer
from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.coverage import CoverageTracker
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision

log = logging.getLogger(__name__)

# `_created` series double the series count and nothing here reads them (docs/OPS.md).
# prometheus_client reads PROMETHEUS_DISABLE_CREATED_SERIES only at import, so set it here.
disable_created_metrics()

# From sub-second toy steps to hour-long steps of a large model.
STEP_DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
CHECKPOINT_HEALTHS = ("pending", "healthy", "suspect", "corrupt")
NOTIFY_TARGETS = ("webhook", "alertmanager")
# orchestrator/sinks.py: a decision is reported with phase "decided" before it is carried out,
# then once more with "done" | "failed" | "skipped" | "denied".
DECIDED_PHASE = "decided"
DONE_PHASE = "done"
MAX_INFO_VALUE_CHARS = 200


def _text(value) -> str:
    """The string of a str Enum member (its value) or of anything else."""
    if isinstance(value, Enum):
        value = value.value
    return str(value)


class RunExporter:
    """The Prometheus view of one run.

    run_id: the value of the `run_id` label on every series.
    registry: where the metrics live; a new CollectorRegistry when None.
    info: run metadata for `rlguard_run_info` (model, preset, config_hash, ...): a flat dict of
        scalars; keys are sanitized into label names, values into strings.
    kl_budget: nats per token; exported as `rlguard_kl_budget` for the KL alert rule (the rule
        falls back to 0.2 when a run does not export one). Defaults to info["kl_budget"].
    max_extra_metrics: how many distinct metric names outside docs/METRICS.md are exported
        (`rlguard_extra_metric{metric=...}`); values of further names are counted as dropped.
    clock: seconds since the epoch; injected so that tests control the timestamps.
    """

    def __init__(
        self,
        run_id: str,
        *,
        registry: CollectorRegistry | None = None,
        info: dict,
        kl_budget: float | None = None,
        max_extra_metrics: int = 100,
        clock: Callable[[], float] = time.time,
    ):
        if not isinstance(run_id, str) or not run_id.strip():
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        if not isinstance(info, dict):
            raise ValueError(f"info must be a dict of run metadata, got {type(info).__name__}")
        self.run_id = run_id
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._max_extra = max_extra_metrics
        self._extra_names: set[str] = set()
        self._checkpoint_health: dict[int, str] = {}
        self._children: dict[str, object] = {}  # per-step gauge children: .labels() costs a lookup
        self._states: dict[str, None] = dict.fromkeys(RUN_STATES)  # ordered: stable exposition
        self._prev_event_time: float | None = None
        self._prev_step: int | None = None
        self._server: MetricsServer | None = None
        self._coverage = CoverageTracker()
        self._build_metrics()
        self._set_info(info)
        if kl_budget is None and info.get("kl_budget") is not None:
            kl_budget = info["kl_budget"]
        if kl_budget is not None:
            try:
                budget = float(kl_budget)
            except (TypeError, ValueError):
                raise ValueError(f"kl_budget must be a number (nats per token), got {kl_budget!r}") from None
            self._g("rlguard_kl_budget").set(budget)
        self._run_start.labels(run_id).set(clock())
        self.on_state("init")

    # ---------------------------------------------------------------- metric families

    def _help(self, name: str) -> str:
        return OWN_FAMILIES[name][1]

    def _build_metrics(self) -> None:
        r, h = self.registry, self._help
        self._step_gauges = {m.name: Gauge(m.family, m.help, ["run_id"], registry=r) for m in STEP_METRICS}
        self._info = Info("rlguard_run", h("rlguard_run_info"), ["run_id"], registry=r)
        self._state = Gauge("rlguard_run_state", h("rlguard_run_state"), ["run_id", "state"], registry=r)
        self._run_start = Gauge(
            "rlguard_run_start_timestamp_seconds",
            h("rlguard_run_start_timestamp_seconds"),
            ["run_id"],
            registry=r,
        )
        plain_gauges = (
            "rlguard_step",
            "rlguard_attempt",
            "rlguard_last_step_timestamp_seconds",
            "rlguard_nonfinite_metrics",
            "rlguard_kl_budget",
            "rlguard_last_rollback_timestamp_seconds",
            "rlguard_last_checkpoint_timestamp_seconds",
            "rlguard_last_checkpoint_step",
            "rlguard_last_healthy_checkpoint_step",
        )
        self._gauges = {n: Gauge(n, h(n), ["run_id"], registry=r) for n in plain_gauges}
        counter = lambda n, labels=(): Counter(n, h(n), ["run_id", *labels], registry=r)  # noqa: E731
        self._steps = counter("rlguard_steps_total")
        self._nonfinite = counter("rlguard_nonfinite_values_total", ["metric"])
        self._extra_dropped = counter("rlguard_extra_metrics_dropped_total")
        self._alerts = counter("rlguard_alerts_total", ["severity"])
        self._alerts_detail = counter("rlguard_alerts_by_detector_total", ["detector", "code", "severity"])
        self._decisions = counter("rlguard_decisions_total", ["action", "mode"])
        self._outcomes = counter("rlguard_decision_outcomes_total", ["action", "outcome"])
        self._rollbacks = counter("rlguard_rollbacks_total")
        self._restarts = counter("rlguard_restarts_total")
        self._checkpoints_written = counter("rlguard_checkpoints_written_total")
        self._notify_failures = counter("rlguard_notification_failures_total", ["target"])
        self._extra = Gauge(EXTRA_METRIC_FAMILY, h(EXTRA_METRIC_FAMILY), ["run_id", "metric"], registry=r)
        self._last_alert = Gauge(
            "rlguard_last_alert_timestamp_seconds",
            h("rlguard_last_alert_timestamp_seconds"),
            ["run_id", "severity"],
            registry=r,
        )
        self._checkpoints = Gauge(
            "rlguard_checkpoints", h("rlguard_checkpoints"), ["run_id", "health"], registry=r
        )
        self._armed = Gauge(
            "rlguard_detection_armed", h("rlguard_detection_armed"), ["run_id", "class"], registry=r
        )
        self._step_duration = Histogram(
            "rlguard_step_duration_seconds",
            h("rlguard_step_duration_seconds"),
            ["run_id"],
            buckets=STEP_DURATION_BUCKETS_S,
            registry=r,
        )
        # Series the rules compare against must exist before the first occurrence.
        rid = self.run_id
        for c in (
            self._steps,
            self._extra_dropped,
            self._rollbacks,
            self._restarts,
            self._checkpoints_written,
        ):
            c.labels(rid)
        for sev in Severity:
            self._alerts.labels(rid, sev.value)
        for target in NOTIFY_TARGETS:
            self._notify_failures.labels(rid, target)
        for health in CHECKPOINT_HEALTHS:
            self._checkpoints.labels(rid, health).set(0)
        self._g("rlguard_last_healthy_checkpoint_step").set(-1)
        self._set_coverage(self._coverage.current)

    def _set_coverage(self, report: dict) -> None:
        for c in report["classes"]:
            self._armed.labels(self.run_id, c["class"]).set(1 if c["armed"] else 0)

    def _g(self, name: str):
        return self._gauges[name].labels(self.run_id)

    def _set_info(self, info: dict) -> None:
        labels: dict[str, str] = {}
        for key, value in info.items():
            if isinstance(value, (dict, list, tuple, set)):
                raise ValueError(
                    f"info[{key!r}] is a {type(value).__name__}; rlguard_run_info takes flat scalars "
                    "(pass a config hash instead of the config)"
                )
            name = label_name(key)
            if name == "run_id":
                continue  # already the label of every series
            labels[name] = "" if value is None else _text(value)[:MAX_INFO_VALUE_CHARS]
        self._info.labels(self.run_id).info(labels)

    # ---------------------------------------------------------------- sink protocol

    def on_event(self, event: MetricEvent) -> None:
        """One optimizer step's metrics (docs/METRICS.md)."""
        rid = self.run_id
        with self._lock:
            now = event.time if event.time is not None else self._clock()
            nonfinite = 0
            for name, value in event.metrics.items():
                if value is None:
                    continue
                value = float(value)
                if not math.isfinite(value):
                    nonfinite += 1
                if name in STEP_METRICS_BY_NAME:
                    child = self._children.get(name)
                    if child is None:  # created on first value: a metric never reported has no series
                        child = self._children[name] = self._step_gauges[name].labels(rid)
                    child.set(value)
                    if not math.isfinite(value):
                        self._nonfinite.labels(rid, name).inc()
                elif name in self._extra_names or len(self._extra_names) < self._max_extra:
                    self._extra_names.add(name)
                    self._extra.labels(rid, name).set(value)
                    if not math.isfinite(value):
                        self._nonfinite.labels(rid, name).inc()
                else:
                    self._extra_dropped.labels(rid).inc()
            self._g("rlguard_nonfinite_metrics").set(nonfinite)
            coverage = self._coverage.observe(event.metrics)
            if coverage is not None:  # only when a newly logged metric changed it
                self._set_coverage(coverage)
            self._g("rlguard_step").set(event.step)
            if event.attempt is not None:
                self._g("rlguard_attempt").set(event.attempt)
            self._g("rlguard_last_step_timestamp_seconds").set(now)
            self._steps.labels(rid).inc()
            duration = self._step_duration_of(event, now)
            if duration is not None:
                self._step_duration.labels(rid).observe(duration)
            self._prev_event_time, self._prev_step = now, event.step

    def _step_duration_of(self, event: MetricEvent, now: float) -> float | None:
        """The step's wall time: `step_seconds` when reported, else the time since the
        previous step of the same segment (a rollback's first step has no predecessor)."""
        reported = event.metrics.get("step_seconds")
        if reported is not None and math.isfinite(reported) and reported >= 0:
            return float(reported)
        if self._prev_step is None or self._prev_event_time is None or event.step <= self._prev_step:
            return None
        gap = now - self._prev_event_time
        # Per step, when steps were skipped between events (a worker reporting every k steps).
        return gap / (event.step - self._prev_step) if gap >= 0 else None

    def on_alert(self, alert: Alert) -> None:
        severity = _text(alert.severity)
        with self._lock:
            self._alerts.labels(self.run_id, severity).inc()
            self._alerts_detail.labels(self.run_id, alert.detector, alert.code, severity).inc()
            self._last_alert.labels(self.run_id, severity).set(self._clock())

    def on_decision(self, decision: Decision, phase: str, outcome: str = "") -> None:
        """A decision journaled before it is carried out (phase "decided"), then its result
        (phase "done" / "failed" / "skipped" / "denied"; `outcome` is a free-text line, logged
        by the journal, not a label)."""
        action = _text(decision.action)
        phase = label_name(_text(phase).strip().lower())
        with self._lock:
            if phase == DECIDED_PHASE:
                self._decisions.labels(self.run_id, action, decision.mode).inc()
                return
            self._outcomes.labels(self.run_id, action, phase).inc()
            if decision.action == Action.ROLLBACK and phase == DONE_PHASE:
                self._rollbacks.labels(self.run_id).inc()
                self._g("rlguard_last_rollback_timestamp_seconds").set(self._clock())

    def on_checkpoint(self, step: int, path: str, health: str) -> None:
        """A checkpoint written (health "pending"), its health changed ("healthy", "suspect",
        "corrupt"), or it was deleted by retention ("pruned": no longer counted)."""
        health = label_name(_text(health or "pending").strip().lower())
        with self._lock:
            if health == "pruned":
                self._checkpoint_health.pop(step, None)
            else:
                if step not in self._checkpoint_health and health != "corrupt":
                    self._checkpoints_written.labels(self.run_id).inc()
                    self._g("rlguard_last_checkpoint_timestamp_seconds").set(self._clock())
                    self._g("rlguard_last_checkpoint_step").set(step)
                self._checkpoint_health[step] = health
            counts = dict.fromkeys(CHECKPOINT_HEALTHS, 0)
            for h in self._checkpoint_health.values():
                counts[h] = counts.get(h, 0) + 1
            for h, n in counts.items():
                self._checkpoints.labels(self.run_id, h).set(n)
            healthy = [s for s, h in self._checkpoint_health.items() if h == "healthy"]
            self._g("rlguard_last_healthy_checkpoint_step").set(max(healthy) if healthy else -1)

    def on_state(self, state: str) -> None:
        """The supervisor's run state (RunState value, or the enum): exactly one state is 1."""
        current = label_name(_text(state).lower())
        with self._lock:
            self._states.setdefault(current)
            for s in self._states:
                self._state.labels(self.run_id, s).set(1 if s == current else 0)

    def on_restart(self, reason: str) -> None:
        log.info("run %s: worker restart (%s)", self.run_id, reason)
        self._restarts.labels(self.run_id).inc()

    def notification_failed(self, target: str) -> None:
        """Count a notification given up on; dashboards.notify calls this (target: webhook,
        alertmanager)."""
        self._notify_failures.labels(self.run_id, target).inc()

    def close(self) -> None:
        """Stop the standalone server, if any. The metrics stay readable."""
        if self._server is not None:
            self._server.close()
            self._server = None

    # ---------------------------------------------------------------- exposition

    def exposition(self, accept: str = "") -> bytes:
        """The metrics in the text format (OpenMetrics when `accept` asks for it)."""
        if not accept:
            return generate_latest(self.registry)
        encoder, _ = choose_encoder(accept)
        return encoder(self.registry)

    def content_type(self, accept: str = "") -> str:
        return choose_encoder(accept or "")[1]

    def asgi_route(self, path: str = "/metrics"):
        """A Starlette Route serving GET `path` with this run's metrics."""
        from starlette.responses import Response
        from starlette.routing import Route

        async def metrics(request):
            accept = request.headers.get("accept", "")
            body = self.exposition(accept)
            return Response(body, media_type=self.content_type(accept))

        return Route(path, metrics, methods=["GET"], name="metrics")

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
        """Serve /metrics on its own port (port 0 picks a free one) from a daemon thread."""
        if self._server is not None:
            raise RuntimeError(f"run {self.run_id}: already serving on {self._server.url}")
        self._server = MetricsServer(self.exposition, self.content_type, host, port)
        return self._server
