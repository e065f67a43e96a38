"""ReplaySimulator on scripted recorded streams: hypothetical checkpoints, health, constraints."""

from __future__ import annotations

from rlguard.policies.config import policy_config_from_dict
from rlguard.policies.decision import Action
from rlguard.policies.replay import ReplaySimulator
from rlguard.policies.view import Health
from tests.policies.helpers import crit, warn

START = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-6}


def replay(sim: ReplaySimulator, script: dict, steps) -> dict:
    out = {}
    for s in steps:
        ds = sim.observe(s, script.get(s, []), START if s == steps[0] else {"kl": 0.01})
        if ds:
            out[s] = ds
    return out


def test_collapse_rolls_back_past_the_checkpoint_its_onset_taints():
    sim = ReplaySimulator(checkpoint_every=50, confirm_steps=20)
    got = replay(sim, {431: [crit(431, onset=418)]}, range(1, 441))
    (d,) = got[431]
    # step 400 was still being confirmed when the onset (418 <= 400 + 20) happened: suspect.
    assert d.action is Action.ROLLBACK and d.target_step == 350
    assert sim.checkpoints[400] is Health.SUSPECT and sim.checkpoints[350] is Health.HEALTHY
    assert sim.checkpoints[50] is Health.HEALTHY
    assert sim.constraints == {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    assert sim.initial_constraints == START
    assert sim.summary()["decisions"]["rollback"] == 1 and sim.applied == [d]


def test_warnings_keep_checkpoints_pending_then_suspect_and_constraints_follow_tightens():
    sim = ReplaySimulator(checkpoint_every=10, confirm_steps=5)
    script = {s: [warn(s)] for s in range(12, 23)}
    got = replay(sim, script, range(1, 40))
    assert [d.action for ds in got.values() for d in ds] == [Action.NOTIFY, Action.TIGHTEN]
    assert sim.checkpoints[10] is Health.SUSPECT  # onset 12 <= 10 + 5
    assert sim.checkpoints[20] is Health.SUSPECT
    assert sim.checkpoints[30] is Health.HEALTHY
    assert sim.constraints["kl_coef"] == 0.075


def test_unanswered_approval_is_denied_in_replay_and_budget_is_not_spent():
    cfg = policy_config_from_dict({"modes": {"rollback": "approve"}, "rollback": {"budget": 1}})
    sim = ReplaySimulator(cfg, checkpoint_every=50, confirm_steps=20)
    got = replay(sim, {200: [crit(200, onset=190)], 300: [crit(300, onset=290)]}, range(1, 301))
    assert [(d.action, d.mode) for ds in got.values() for d in ds] == [
        (Action.ROLLBACK, "approve"),
        (Action.ROLLBACK, "approve"),
    ]
    assert sim.applied == [] and sim.constraints == START


def test_halt_stops_checkpointing_and_a_recorded_rollback_drops_later_checkpoints():
    sim = ReplaySimulator(checkpoint_every=10, confirm_steps=5)
    replay(sim, {}, range(1, 35))
    assert sorted(sim.checkpoints) == [10, 20, 30]
    sim.observe(21, [])  # the recording itself went back to 20
    assert sorted(sim.checkpoints) == [10, 20]
    (h,) = sim.observe(22, [crit(22, onset=5)])
    assert h.action is Action.HALT and sim.halted
    sim.observe(30, [])
    assert 30 not in sim.checkpoints


def test_a_start_checkpoint_turns_a_first_update_collapse_from_halt_into_rollback():
    """The built-in worker writes step 0 (checkpoint_start); replay models it on request."""
    script = {3: [crit(3, onset=2)]}
    without = replay(ReplaySimulator(checkpoint_every=4, confirm_steps=1), script, range(1, 6))
    assert [d.action for d in without[3]] == [Action.HALT]
    sim = ReplaySimulator(checkpoint_every=4, confirm_steps=1, checkpoint_start=True)
    (d,) = replay(sim, script, range(1, 6))[3]
    assert d.action is Action.ROLLBACK and d.target_step == 0
    assert sim.checkpoints[0] is Health.HEALTHY


def test_the_starting_state_has_no_confirmation_window():
    """Step 0 holds weights no update touched: an onset at step 2 cannot taint it, whatever the window."""
    from rlguard.policies.view import next_health

    alerts = [crit(3, onset=2)]
    assert next_health(Health.PENDING, 0, 1, [], confirm_steps=20) is Health.HEALTHY
    assert next_health(Health.HEALTHY, 0, 3, alerts, confirm_steps=20) is Health.HEALTHY
    assert next_health(Health.HEALTHY, 4, 30, alerts, confirm_steps=20) is Health.SUSPECT  # later ones still are
