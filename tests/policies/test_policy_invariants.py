"""Invariants of the engine over random alert streams (hypothesis), with a simulated run that
applies every decision: steps go back on rollback, constraints follow tighten/relax."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.config import policy_config_from_dict
from rlguard.policies.decision import Action
from rlguard.policies.engine import PolicyEngine
from rlguard.policies.view import CheckpointView, RunView

CFG = policy_config_from_dict(
    {
        "rollback": {"budget": 2, "budget_window_steps": 60},
        "cooldown": {"steps": 5},
        "warnings": {"persist_steps": 4, "gap_steps": 6},
        "relax": {"enabled": True, "after_healthy_steps": 15},
    }
)
INITIAL = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-6}

alert_kinds = st.sampled_from(["none"] * 12 + ["warn_kl", "warn_kl", "warn_len", "crit", "nan", "stall"])
QUIET_START = [("none", 0)] * 25  # checkpoints to roll back to


def make_alerts(kind: str, step: int, lag: int) -> list[Alert]:
    onset = max(0, step - lag)
    return {
        "none": [],
        "warn_kl": [Alert("spike", "spike", "kl", step, Severity.WARNING, onset, "")],
        "warn_len": [Alert("drift", "drift", "response_length", step, Severity.WARNING, onset, "")],
        "crit": [Alert("pattern_collapse", "patterns", "kl", step, Severity.CRITICAL, onset, "")],
        "nan": [Alert("non_finite", "non_finite", "policy_loss", step, Severity.WARNING, step, "")],
        "stall": [Alert("stall", "stall", "", step, Severity.CRITICAL, step, "")],
    }[kind]


class SimulatedRun:
    """Applies decisions like the supervisor would; checkpoints every 10 steps, healthy after 5."""

    def __init__(self):
        self.step, self.constraints, self.ckpts = 0, dict(INITIAL), {}

    def view(self) -> RunView:
        views = [
            CheckpointView(s, "healthy" if self.step >= s + 5 else "pending") for s in sorted(self.ckpts)
        ]
        return RunView(self.step, dict(self.constraints), dict(INITIAL), views)

    def apply(self, d) -> None:
        self.constraints.update(d.params)
        if d.action is Action.ROLLBACK:
            self.step = d.target_step
            self.ckpts = {s: 1 for s in self.ckpts if s <= d.target_step}


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(alert_kinds, st.integers(0, 12)), min_size=1, max_size=150), st.integers(10, 140))
def test_engine_invariants(stream, cut):
    run, engine = SimulatedRun(), PolicyEngine(CFG)
    rollbacks_clock = []
    twin = None
    for i, (kind, lag) in enumerate(QUIET_START + stream):
        run.step += 1
        if run.step % 10 == 0:
            run.ckpts[run.step] = 1
        alerts = make_alerts(kind, run.step, lag)
        view = run.view()
        decisions = engine.decide(run.step, alerts, view)
        if twin is not None:
            assert twin.decide(run.step, alerts, view) == decisions
        assert len(decisions) <= 1
        for d in decisions:
            # Nothing but relax happens without an alert; a stall only ever notifies.
            assert d.action is {"none": Action.RELAX, "stall": Action.NOTIFY}.get(kind, d.action)
            if d.action is Action.ROLLBACK:
                onset = min(a.onset_step for a in alerts)
                target = next(c for c in view.checkpoints if c.step == d.target_step)
                assert target.is_healthy and d.target_step < onset
                rollbacks_clock.append(engine.trained_steps)
                in_window = [c for c in rollbacks_clock if engine.trained_steps - c < 60]
                assert len(in_window) <= 2
            for name, value in d.params.items():
                rule = CFG.tighten.rule(name)
                assert rule.min <= value <= rule.max
            if d.action is Action.RELAX:
                for name, value in d.params.items():
                    lo, hi = sorted((INITIAL[name], run.constraints[name]))
                    assert lo <= value <= hi  # relax moves toward the initial value, never past it
            if d.action is Action.HALT:
                assert engine.halted and engine.decide(run.step, alerts, view) == []
                return
            run.apply(d)
        if i == cut:
            twin = PolicyEngine(CFG)
            twin.load_state_dict(json.loads(json.dumps(engine.state_dict())))
