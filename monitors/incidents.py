"""One alert per (detector, metric) incident, re-armed after recovery: no alert storms.

A detector reports, every step, whether its condition holds for a metric. The first step it
holds opens an incident and alerts; later steps inside the incident stay silent, except that an
escalation from warning to critical alerts once more. The incident closes after `rearm_steps`
consecutive steps without the condition; only then can the same detector alert on that metric again.
"""

from __future__ import annotations

from monitors.alerts import Severity


class Incidents:
    def __init__(self, rearm_steps: int):
        self.rearm_steps = rearm_steps
        self.active: dict[str, list[int]] = {}  # key -> [severity rank, quiet steps]

    def fire(self, key: str, severity: Severity) -> bool:
        """The condition holds this step; True when an alert should be emitted."""
        rank = severity.rank
        state = self.active.get(key)
        if state is None:
            self.active[key] = [rank, 0]
            return True
        state[1] = 0
        if rank > state[0]:
            state[0] = rank
            return True
        return False

    def quiet(self, key: str) -> None:
        """The condition does not hold this step."""
        state = self.active.get(key)
        if state is not None:
            state[1] += 1
            if state[1] >= self.rearm_steps:
                del self.active[key]

    def is_active(self, key: str) -> bool:
        return key in self.active

    def clear(self) -> None:
        self.active.clear()

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.active.items()}

    def load_state_dict(self, d: dict) -> None:
        self.active = {str(k): [int(v[0]), int(v[1])] for k, v in d.items()}
