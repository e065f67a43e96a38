"""The one way a supervisor (or `rlguard watch`) records what happened: journal first, then sinks.

The journal is the record of truth (fsynced, read back by `--resume` and the report); the
sinks (Prometheus, W&B, the live page, notifications) are told after it, and a sink that
fails never stops the record (SinkFanout counts and logs it). One call per kind of record,
so the pair is never written half or in the wrong order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rlguard.monitors.alerts import Alert
from rlguard.policies.decision import Decision, Phase


class Recorder:
    """Journal-then-sinks for alerts, decisions, checkpoints, states and restarts."""

    def __init__(self, journal, sinks, on_alerts: Callable[[list[Alert]], None] | None = None):
        self.journal = journal
        self.sinks = sinks
        self._on_alerts = on_alerts  # the live status keeps the latest alerts for /api/status

    def alerts(self, alerts: Iterable[Alert]) -> None:
        alerts = list(alerts)
        for a in alerts:
            self.journal.alert(a)
            self.sinks.on_alert(a)
        if alerts and self._on_alerts is not None:
            self._on_alerts(alerts)

    def decided(self, d: Decision, *, alerts: Iterable[Alert] = (), constraints: dict | None = None,
                target: dict | None = None, source: str = "policy") -> str:
        """Journal a decision before anything is done about it; returns its decision_id."""
        did = self.journal.decided(d, alerts=alerts, constraints=constraints, target=target, source=source)
        self.sinks.on_decision(d, Phase.DECIDED.value, "", decision_id=did, reason=d.reason)
        return did

    def outcome(self, d: Decision, did: str, phase: Phase | str, text: str) -> None:
        """How a decided action ended (exactly once per decision: the journal enforces it)."""
        phase = Phase(phase)
        self.journal.finished(did, phase.value, text)
        self.sinks.on_decision(d, phase.value, text, decision_id=did, reason=d.reason)

    def checkpoint(self, step: int, path: str, health: str, *, note: str | None = None) -> None:
        extra = {"note": note} if note is not None else {}
        self.journal.checkpoint(step, path, health, **extra)
        self.sinks.on_checkpoint(step, path, health)

    def state(self, state: str, *, previous: str, reason: str, step: int | None) -> None:
        self.journal.state(state, previous=previous, reason=reason, step=step)
        self.sinks.on_state(state)

    def restart(self, reason: str, **fields) -> None:
        self.journal.restart(reason, **fields)
        self.sinks.on_restart(reason)

    def operator(self, command: str, args: dict, *, source: str) -> None:
        """An operator's request, journaled once it is valid and before anything is done."""
        self.journal.operator(command, args, source=source)

    def note(self, message: str, **fields) -> None:
        """Journal only: for people reading the run later, nothing a sink acts on."""
        self.journal.note(message, **fields)
