"""Notifications that do not depend on Prometheus: a chat webhook and a direct push to
Alertmanager, for every incident (alert) and decision of a supervised run.

Why both paths exist: Prometheus rules page only if Prometheus scrapes the supervisor; a run
on a laptop, or a cluster whose Prometheus cannot reach the node, still pages through these.

- Webhook: Slack-compatible JSON: `text` (the one-line summary every chat tool shows),
  `blocks` and `attachments` carrying the numbers, and `rlguard` with the structured record
  for other consumers (Slack ignores keys it does not know).
- Alertmanager: POST `<url>/api/v2/alerts` with one alert (labels `alertname`, `run_id`,
  `severity`, ...), so ops' existing routing, silences and inhibition apply.

Delivery never blocks the run: the supervisor's call only enqueues (a bounded queue per
target); one daemon thread per target posts, retrying connection errors, timeouts, 5xx and
429 with bounded exponential backoff (honouring Retry-After). A notification given up on,
or dropped because the queue is full, is logged and counted (`failures`, and `on_failure(target)` which the
exporter turns into `rlguard_notification_failures_total`).

Which decision calls notify (phases of orchestrator/sinks.py): "decided" (before acting) and
"failed" (carrying it out failed); "done", "skipped" and "denied" are in the journal and the
metrics, not worth a second message.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from rlguard.dashboards.prom_messages import (
    HTTPFailure,
    Notification,
    alertmanager_payload,
    post_json,
    slack_payload,
)
from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Action, Decision

log = logging.getLogger(__name__)

NOTIFY_PHASES = frozenset({"decided", "failed"})
# Run states worth a message: the run stopped, or the supervisor lost track of it.
NOTIFY_STATES = frozenset({"halted", "failed", "completed", "unknown"})
# A decision's page weight: halting or rolling back needs eyes; the rest is information.
ACTION_SEVERITY = {Action.HALT: "critical", Action.ROLLBACK: "warning"}


class NotifyConfig(BaseModel):
    """Where and how to send notifications (the `notify:` section of a run config)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    """Slack-compatible incoming webhook (any URL that takes a JSON POST); None: off. The URL is
    a secret (whoever has it can post to the channel): prefer webhook_url_env."""
    webhook_url_env: str | None = None
    """Name of an environment variable holding the webhook URL, read when the config is loaded
    (`rlguard run` and `--resume`), so the URL stays out of config.yaml and the reports."""
    alertmanager_url: str | None = None
    """Alertmanager base URL, e.g. http://alertmanager:9093 (alerts go to /api/v2/alerts); None: off."""
    dashboard_url: str | None = None
    """Link put in messages and as the Alertmanager generatorURL (the run's live dashboard)."""
    queue_size: int = Field(1000, ge=1)
    """Notifications waiting to be sent; beyond it new ones are dropped and counted."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Tries per notification and target, the first included."""
    backoff_s: float = Field(1.0, ge=0)
    """Wait before the first retry; doubles each retry."""
    max_backoff_s: float = Field(30.0, ge=0)
    """Cap on one wait (also caps a server's Retry-After)."""
    timeout_s: float = Field(10.0, gt=0)
    """HTTP timeout per try."""
    alert_ttl_s: float = Field(3600.0, gt=0)
    """Alertmanager `endsAt` = now + this: a pushed incident resolves by itself after it
    (rlguard sends each incident once; it does not keep re-sending to hold it firing)."""

    _env_webhook_url: str | None = PrivateAttr(None)  # never dumped: the secret stays in the environment

    @field_validator("webhook_url", "alertmanager_url", "dashboard_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _webhook_from_env(self):
        name = self.webhook_url_env
        if name is None:
            return self
        if self.webhook_url is not None:
            raise ValueError("set webhook_url or webhook_url_env, not both")
        url = os.environ.get(name, "")
        if not url:
            raise ValueError(f"webhook_url_env: the environment variable {name!r} is not set; "
                             f"export {name}=https://hooks.slack.com/... before starting, or remove webhook_url_env")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url_env: the environment variable {name!r} must hold an http:// or "
                             "https:// URL")  # its value is not echoed: it is a secret
        self._env_webhook_url = url
        return self

    @property
    def resolved_webhook_url(self) -> str | None:
        """webhook_url, or the URL from the webhook_url_env variable."""
        return self.webhook_url or self._env_webhook_url


def _text(value) -> str:
    return str(value.value if isinstance(value, Enum) else value)


class Notifier:
    """A run sink that turns incidents and decisions into webhook and Alertmanager messages.

    run_id: put in every message and label.
    config: a NotifyConfig or its dict form (validated: a bad field raises naming it).
    on_failure: called with the target ("webhook"/"alertmanager") for each notification given
        up on or dropped; pass `RunExporter.notification_failed` to export the count.
    clock: seconds since the epoch (message timestamps).
    """

    def __init__(
        self,
        run_id: str,
        config: NotifyConfig | dict | None = None,
        *,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.run_id = run_id
        self.config = config if isinstance(config, NotifyConfig) else NotifyConfig(**(config or {}))
        self._on_failure = on_failure
        self._clock = clock
        # One queue and thread per target: a chat webhook stuck in retries never delays the page
        # that goes to Alertmanager.
        self._queues: dict[str, queue.Queue] = {
            t: queue.Queue(maxsize=self.config.queue_size) for t in self.targets
        }
        self._abort = threading.Event()
        self._counts_lock = threading.Lock()  # failures are counted from the caller and the worker
        self._closed = False
        self.sent: dict[str, int] = {t: 0 for t in self.targets}
        self.failures: dict[str, int] = {t: 0 for t in self.targets}
        self._threads = [
            threading.Thread(target=self._worker, args=(t,), name=f"rlguard-notify-{t}", daemon=True)
            for t in self.targets
        ]
        for thread in self._threads:
            thread.start()

    @property
    def targets(self) -> list[str]:
        return [
            t
            for t, url in (
                ("webhook", self.config.resolved_webhook_url),
                ("alertmanager", self.config.alertmanager_url),
            )
            if url
        ]

    # ---------------------------------------------------------------- sink protocol

    def on_event(self, event: MetricEvent) -> None:
        pass  # per-step metrics go to Prometheus; notifications are for incidents

    def on_checkpoint(self, step: int, path, health) -> None:
        pass

    def on_alert(self, alert: Alert) -> None:
        severity = _text(alert.severity)
        self.notify(
            Notification(
                kind="alert",
                severity=severity,
                title=f"[{severity}] {self.run_id}: {alert.code} on {alert.metric} at step {alert.step}",
                detail=alert.message,
                fields={
                    "run": self.run_id,
                    "step": alert.step,
                    "onset step": alert.onset_step,
                    "metric": alert.metric,
                    "detector": alert.detector,
                    "code": alert.code,
                },
                labels={
                    "alertname": "RLGuardIncident",
                    "code": alert.code,
                    "detector": alert.detector,
                    "metric": alert.metric,
                },
            )
        )

    def on_decision(self, decision: Decision, phase: str, outcome: str = "") -> None:
        phase = _text(phase).strip().lower()
        if phase not in NOTIFY_PHASES:
            return
        failed = phase == "failed"
        action = _text(decision.action)
        severity = "critical" if failed else ACTION_SEVERITY.get(decision.action, "info")
        verb = f"{action} FAILED" if failed else action
        if decision.mode != "auto" and not failed:
            waiting = "awaiting approval" if decision.mode == "approve" else "advice only"
            verb = f"{action} ({decision.mode} mode: {waiting})"
        fields = {"run": self.run_id, "step": decision.step, "action": action, "mode": decision.mode}
        if decision.target_step is not None:
            fields["target step"] = decision.target_step
        fields.update({k: v for k, v in sorted(decision.params.items())})
        if decision.skip_batches:
            fields["skip batches"] = decision.skip_batches
        if decision.alerts:
            fields["alerts"] = ", ".join(decision.alerts)
        self.notify(
            Notification(
                kind="decision",
                severity=severity,
                title=f"[{severity}] {self.run_id}: {verb} at step {decision.step}",
                detail=f"{outcome}\n(decided because: {decision.reason})"
                if failed and outcome
                else decision.reason,
                fields=fields,
                labels={"alertname": "RLGuardDecision", "action": action, "phase": phase},
            )
        )

    def on_state(self, state) -> None:
        name = _text(state).lower()
        if name not in NOTIFY_STATES:
            return
        severity = {"completed": "info", "halted": "critical", "failed": "critical"}.get(name, "warning")
        self.notify(
            Notification(
                kind="state",
                severity=severity,
                title=f"[{severity}] {self.run_id}: run {name}",
                fields={"run": self.run_id, "state": name},
                labels={"alertname": "RLGuardRunState", "state": name},
            )
        )

    def on_restart(self, reason: str) -> None:
        self.notify(
            Notification(
                kind="restart",
                severity="warning",
                title=f"[warning] {self.run_id}: worker restarted",
                detail=str(reason),
                fields={"run": self.run_id},
                labels={"alertname": "RLGuardWorkerRestart"},
            )
        )

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, waiting at most `timeout_s`; what is left is counted failed."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        for q in self._queues.values():
            try:
                q.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self._abort.set()  # cut backoff waits short; the workers count the rest as failed
            for thread in self._threads:
                thread.join(self.config.timeout_s + 1)

    # ---------------------------------------------------------------- delivery

    def notify(self, note: Notification) -> None:
        """Queue one notification for every target; never blocks, never raises."""
        if self._closed:
            return
        for target, q in self._queues.items():
            try:
                q.put_nowait(note)
            except queue.Full:
                log.warning("%s queue full (%d): dropped %r", target, self.config.queue_size, note.title)
                self._failed(target)

    def _failed(self, target: str) -> None:
        with self._counts_lock:
            self.failures[target] = self.failures.get(target, 0) + 1
        if self._on_failure is not None:
            try:
                self._on_failure(target)
            except Exception:  # a metrics hook must never stop delivery
                log.exception("notification failure hook raised")

    def _worker(self, target: str) -> None:
        q = self._queues[target]
        while True:
            note = q.get()
            if note is None:
                return
            if self._abort.is_set():
                log.warning("notifier closed: %r not sent to %s", note.title, target)
                self._failed(target)
                continue
            try:
                self._deliver(target, note)
            except Exception:  # a bug in rendering must not kill the thread and stall the queue
                log.exception("%s: could not send %r", target, note.title)
                self._failed(target)

    def _deliver(self, target: str, note: Notification) -> None:
        url, payload = self._render(target, note)
        cfg = self.config
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                post_json(url, payload, cfg.timeout_s)
                with self._counts_lock:
                    self.sent[target] += 1
                return
            except HTTPFailure as e:
                if not e.retry or attempt == cfg.max_attempts:
                    log.warning("%s: giving up on %r after %d tries: %s", target, note.title, attempt, e)
                    self._failed(target)
                    return
                wait = min(
                    cfg.max_backoff_s,
                    e.wait_s if e.wait_s is not None else cfg.backoff_s * 2 ** (attempt - 1),
                )
                log.info("%s: try %d failed (%s); retrying in %.2f s", target, attempt, e, wait)
                if self._abort.wait(wait):
                    self._failed(target)
                    return

    def _render(self, target: str, note: Notification) -> tuple[str, object]:
        if target == "webhook":
            return self.config.resolved_webhook_url, slack_payload(note, self.config.dashboard_url)
        base = self.config.alertmanager_url.rstrip("/")
        return base + "/api/v2/alerts", alertmanager_payload(
            note, self.run_id, self._clock(), self.config.alert_ttl_s, self.config.dashboard_url
        )
