"""The real monitor stack feeding the ReplaySimulator on a synthetic collapse: end to end, no I/O."""

from __future__ import annotations

import random

from rlguard.monitors.events import MetricEvent
from rlguard.monitors.stack import MonitorStack
from rlguard.policies.decision import Action
from rlguard.policies.replay import ReplaySimulator
from rlguard.policies.view import Health


def collapsing_run(steps: int = 300, collapse_at: int = 200, nan_at: int = 150):
    """Healthy PPO-like metrics, a NaN loss at `nan_at`, then the Zheng et al. collapse signature:
    reward and KL up, responses to the length cap, perplexity down."""
    rng = random.Random(0)
    for s in range(1, steps):
        bad = max(0, s - collapse_at)
        m = {
            "reward": 1 + 0.002 * s + 0.05 * bad + rng.gauss(0, 0.05),
            "kl": 0.02 + 0.004 * bad + rng.gauss(0, 0.002),
            "perplexity": 3.0 - min(1.5, 0.03 * bad) + rng.gauss(0, 0.05),
            "response_length": 100 + min(150, 3 * bad) + rng.gauss(0, 3),
            "kl_coef": 0.05,
            "clip_range": 0.2,
            "lr": 1e-6,
        }
        if s == nan_at:
            m["policy_loss"] = float("nan")
        yield MetricEvent(step=s, metrics=m, time=1000.0 + s)


def test_nan_and_collapse_each_roll_back_before_their_onset():
    stack, sim = MonitorStack(), ReplaySimulator(checkpoint_every=25)
    decisions = []
    for ev in collapsing_run():
        alerts = stack.update(ev)
        decisions += [(d, alerts) for d in sim.observe(ev.step, alerts, ev.metrics)]
    rollbacks = [(d, alerts) for d, alerts in decisions if d.action is Action.ROLLBACK]
    assert len(rollbacks) >= 2 and not sim.halted
    nan, _ = rollbacks[0]
    assert (nan.step, nan.target_step, nan.alerts) == (150, 125, ("non_finite",))
    collapse, alerts = rollbacks[1]
    onset = min(a.onset_step for a in alerts if a.severity.value == "critical")
    assert 195 <= onset <= 210 and collapse.target_step < onset
    assert sim.checkpoints[collapse.target_step] is Health.HEALTHY
    assert sim.checkpoints[200] is Health.SUSPECT
    # Each rollback tightened from the values in force: kl_coef only ever goes up.
    kl = [d.params["kl_coef"] for d, _ in decisions if "kl_coef" in d.params]
    assert kl == sorted(kl) and kl[0] == 0.075
