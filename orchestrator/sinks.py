"""Where the supervisor sends what happens: the RunSink protocol and a fault-isolating fan-out.

Dashboards (Prometheus exporter, live web history, W&B, notifications) implement RunSink.
A sink is called from the supervisor's loop thread, so it must be quick (queue slow work
on its own thread). A sink that raises is logged and counted and never stops the run, and
one that keeps failing keeps being called (it may recover, e.g. a network blip).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from typing import Protocol, runtime_checkable

from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Decision

log = logging.getLogger("rlguard.sinks")

SINK_METHODS = ("on_event", "on_alert", "on_decision", "on_checkpoint", "on_state", "on_restart", "close")


@runtime_checkable
class RunSink(Protocol):
    """What a run reports. All methods are optional in practice: the fan-out skips missing ones.

    on_event(event): one METRICS.md event as the supervisor received it.
    on_alert(alert): one detector finding.
    on_decision(decision, phase, outcome[, decision_id=, reason=]): phase "decided" (outcome "")
        before acting, then "done" | "failed" | "skipped" | "denied" with an outcome line after.
        decision_id (the journal's id, which ties the phases of one decision together) and
        reason (the decision's reason line) are passed only to sinks whose on_decision accepts
        them (as named parameters or **kwargs): older sinks keep working unchanged.
    on_checkpoint(step, path, health): a checkpoint was written or its health changed
        (health: "pending" | "healthy" | "suspect" | "corrupt").
    on_state(state): the RunState value (a str) after each transition.
    on_restart(reason): the worker is being relaunched, and why.
    close(): the run is over (or the supervisor detaches); flush.
    """

    def on_event(self, event: MetricEvent) -> None: ...
    def on_alert(self, alert: Alert) -> None: ...
    def on_decision(self, decision: Decision, phase: str, outcome: str) -> None: ...
    def on_checkpoint(self, step: int, path: str, health: str) -> None: ...
    def on_state(self, state: str) -> None: ...
    def on_restart(self, reason: str) -> None: ...
    def close(self) -> None: ...


class SinkFanout:
    """Calls every sink; exceptions are caught, logged (first few per sink) and counted."""

    LOG_FIRST_N = 5

    def __init__(self, sinks: list | None = None):
        self.sinks: list = list(sinks or [])
        self.errors: Counter[str] = Counter()  # "SinkClass.method" -> count
        self._accepts: dict[tuple[int, str], frozenset[str] | None] = {}  # None: takes **kwargs

    def add(self, sink) -> None:
        self.sinks.append(sink)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def _keywords_for(self, sink, fn, method: str, offered: dict) -> dict:
        """The subset of `offered` keywords that `fn` accepts (decided once per sink and method)."""
        key = (id(sink), method)
        if key not in self._accepts:
            try:
                params = inspect.signature(fn).parameters.values()
            except (TypeError, ValueError):  # a builtin or odd callable: pass nothing extra
                self._accepts[key] = frozenset()
            else:
                if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                    self._accepts[key] = None
                else:
                    self._accepts[key] = frozenset(p.name for p in params if p.kind in (
                        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
        accepted = self._accepts[key]
        return dict(offered) if accepted is None else {k: v for k, v in offered.items() if k in accepted}

    def _call(self, method: str, *args, **optional) -> None:
        """Call `method` on every sink; `optional` keywords go only to sinks that accept them."""
        for sink in self.sinks:
            fn = getattr(sink, method, None)
            if fn is None:
                continue
            try:
                fn(*args, **(self._keywords_for(sink, fn, method, optional) if optional else {}))
            except Exception:  # a sink must never take the run down
                key = f"{type(sink).__name__}.{method}"
                self.errors[key] += 1
                if self.errors[key] <= self.LOG_FIRST_N:
                    log.exception("sink %s failed (%d so far); the run goes on", key, self.errors[key])

    def on_event(self, event: MetricEvent) -> None:
        self._call("on_event", event)

    def on_alert(self, alert: Alert) -> None:
        self._call("on_alert", alert)

    def on_decision(self, decision: Decision, phase: str, outcome: str = "", *, decision_id: str | None = None,
                    reason: str | None = None) -> None:
        optional = {k: v for k, v in (("decision_id", decision_id), ("reason", reason)) if v is not None}
        self._call("on_decision", decision, phase, outcome, **optional)

    def on_checkpoint(self, step: int, path: str, health: str) -> None:
        self._call("on_checkpoint", step, path, health)

    def on_state(self, state: str) -> None:
        self._call("on_state", state)

    def on_restart(self, reason: str) -> None:
        self._call("on_restart", reason)

    def close(self) -> None:
        self._call("close")
