"""One alert per (detector, metric) incident, re-armed after recovery: no alert storms.

A detector reports, every step, whether its condition holds for a metric. The first step it
holds opens an incident and alerts; later steps inside the incident stay silent, except that an
escalation from warning to critical alerts once more. The incident closes after `rearm_steps`
consecutive steps without the condition; only then can the same detector alert on that metric again.

Each open incident remembers the metric and onset step of the alert that opened it, so that the
policy engine can ask which incidents are still open (`MonitorStack.open_incidents()`) and a
rollback can keep the values recorded before the earliest onset as the healthy baseline.
"""

from __future__ import annotations

from rlguard.monitors.alerts import Severity


class Incidents:
    def __init__(self, rearm_steps: int):
        self.rearm_steps = rearm_steps
        # key -> [severity rank, quiet steps, onset step, metric]
        self.active: dict[str, list] = {}

    def fire(self, key: str, severity: Severity, metric: str = "", onset: int = -1) -> bool:
        """The condition holds this step; True when an alert should be emitted.

        `metric` and `onset` describe the incident (kept from the alert that opened it; an
        earlier onset reported by an escalation replaces it)."""
        rank = severity.rank
        state = self.active.get(key)
        if state is None:
            self.active[key] = [rank, 0, onset, metric or key]
            return True
        state[1] = 0
        if rank > state[0]:
            state[0] = rank
            if 0 <= onset < state[2] or state[2] < 0:
                state[2] = onset
            return True
        return False

    def quiet(self, key: str) -> None:
        """The condition does not hold this step."""
        state = self.active.get(key)
        if state is not None:
            state[1] += 1
            if state[1] >= self.rearm_steps:
                del self.active[key]

    def open(self) -> dict[str, int]:
        """metric -> earliest onset step among this detector's open incidents."""
        out: dict[str, int] = {}
        for _rank, _quiet, onset, metric in self.active.values():
            if metric not in out or onset < out[metric]:
                out[metric] = onset
        return out

    def clear(self) -> None:
        self.active.clear()

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.active.items()}

    def load_state_dict(self, d: dict) -> None:
        # Version-1 states hold [rank, quiet] only: unknown onset (-1), the key as the metric.
        self.active = {str(k): [int(v[0]), int(v[1]), int(v[2]) if len(v) > 2 else -1,
                                str(v[3]) if len(v) > 3 else str(k)] for k, v in d.items()}
