"""The escalation ladder on scripted alert sequences: exact decisions, reasons with numbers."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.config import PolicyConfig, policy_config_from_dict
from rlguard.policies.decision import Action, Decision
from rlguard.policies.engine import PolicyEngine
from tests.policies.helpers import INITIAL, crit, view, warn


def run(engine: PolicyEngine, script: dict[int, list[Alert]], steps, healthy=(), constraints=None):
    """Call decide on every step (empty alerts on quiet steps); return {step: decisions}."""
    out = {}
    for s in steps:
        ds = engine.decide(s, script.get(s, []), view(s, healthy, constraints))
        if ds:
            out[s] = ds
    return out


def test_warning_notifies_once_then_tightens_when_it_persists():
    engine = PolicyEngine()
    script = {s: [warn(s, msg="kl = 0.31 > 0.20")] for s in range(100, 111)}
    got = run(engine, script, range(100, 115))
    assert list(got) == [100, 110]
    (note,) = got[100]
    assert note.action is Action.NOTIFY and note.mode == "auto" and note.alerts == ("spike",)
    assert note.reason == (
        "warning spike on kl at step 100 (onset 100); alert: kl = 0.31 > 0.20; tighten if it persists 10 steps"
    )
    (tight,) = got[110]
    assert tight.action is Action.TIGHTEN
    assert tight.params == {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    assert tight.reason == (
        "warning spike on kl persisted 10 steps (since step 100, now 110): "
        "tighten kl_coef 0.05 -> 0.075, clip_range 0.2 -> 0.16, lr 1e-06 -> 5e-07; alert: kl = 0.31 > 0.20"
    )


def test_warning_streak_counts_from_its_onset_and_a_gap_starts_a_new_streak():
    engine = PolicyEngine()
    # First alert already reports an onset 8 steps back: persistence is reached 2 steps later.
    got = run(engine, {100: [warn(100, onset=92)], 102: [warn(102)]}, range(100, 104))
    assert [d.action for d in got[100]] == [Action.NOTIFY]
    assert [d.action for d in got[102]] == [Action.TIGHTEN]

    # rlguard's monitors alert once per incident and re-arm after 10 quiet steps: a warning that
    # closes and comes back within gap_steps (30) is persisting.
    engine = PolicyEngine()
    got = run(engine, {s: [warn(s)] for s in (100, 111)}, range(100, 115))
    assert {s: [d.action for d in ds] for s, ds in got.items()} == {
        100: [Action.NOTIFY],
        111: [Action.TIGHTEN],
    }

    engine = PolicyEngine()
    # Warnings 31 steps apart never form a streak: each is a fresh notify.
    script = {s: [warn(s)] for s in (100, 131, 162)}
    got = run(engine, script, range(100, 165))
    assert {s: [d.action for d in ds] for s, ds in got.items()} == {
        100: [Action.NOTIFY],
        131: [Action.NOTIFY],
        162: [Action.NOTIFY],
    }


def test_an_incident_kept_open_by_the_monitors_persists_and_tightens_again_after_the_last_action():
    engine = PolicyEngine(policy_config_from_dict({"cooldown": {"steps": 5}}))
    key = "kl_change_point/kl"
    got = {}
    for s in range(100, 140):
        alerts = [warn(s, code="change_point", metric="kl", onset=98)] if s == 100 else []
        v = view(s)
        v = type(v)(s, v.constraints, v.initial_constraints, v.checkpoints, open_warnings={key: 98})
        if ds := engine.decide(s, alerts, v):
            got[s] = ds
    # onset 98 + 10 -> tighten at 108; the incident stays open: 10 steps after that action, again.
    assert {s: [d.action for d in ds] for s, ds in got.items()} == {
        100: [Action.NOTIFY],
        108: [Action.TIGHTEN],
        118: [Action.TIGHTEN],
        128: [Action.TIGHTEN],
        138: [Action.TIGHTEN],
    }
    assert got[108][0].reason.startswith(
        "warning change_point on kl persisted 10 steps (since step 98, now 108)"
    )
    assert got[108][0].alerts == ("change_point",)
    assert got[118][0].reason.startswith(
        "warning change_point on kl persisted 10 steps (since step 108, now 118)"
    )


def test_an_open_incident_raised_before_a_supervisor_restart_still_persists_and_tightens():
    """After --resume the engine has not seen the warning that opened the incident: it still
    counts it, under the code `incident_open` (found by the supervisor-kill chaos test, where an
    unknown code once crashed the recovering supervisor)."""
    engine = PolicyEngine(policy_config_from_dict({"cooldown": {"steps": 5}}))
    got = {}
    for s in range(100, 112):
        v = view(s)
        v = type(v)(s, v.constraints, v.initial_constraints, v.checkpoints, open_warnings={"kl_drift/kl": 98})
        if ds := engine.decide(s, [], v):
            got[s] = ds
    assert [d.action for d in got[108]] == [Action.TIGHTEN]
    assert got[108][0].alerts == ("incident_open",)


def test_critical_rolls_back_to_newest_healthy_before_onset_with_numbers():
    engine = PolicyEngine()
    alert = crit(431, onset=418, msg="length +80%, perplexity -40%")
    (d,) = engine.decide(431, [alert], view(431, healthy=[300, 400, 418, 450]))
    assert d.action is Action.ROLLBACK and d.target_step == 400 and d.skip_batches == 0
    assert d.params == {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    assert d.reason == (
        "critical pattern_collapse on kl at step 431 (onset 418): rollback to step 400, "
        "kl_coef 0.05 -> 0.075, clip_range 0.2 -> 0.16, lr 1e-06 -> 5e-07, rollback 1 of 3 in 500 steps; "
        "alert: length +80%, perplexity -40%"
    )


def test_rollback_skips_pending_and_suspect_and_honours_margin_and_skip_batches():
    cfg = policy_config_from_dict({"rollback": {"margin_steps": 50, "skip_batches": 200, "tighten": False}})
    (d,) = PolicyEngine(cfg).decide(
        431,
        [crit(431, onset=418)],
        view(431, healthy=[300, 350, 380], other=[(360, "suspect"), (365, "pending")]),
    )
    # onset 418 - margin 50 = 368: 350 is the newest healthy strictly before it.
    assert (d.action, d.target_step, d.skip_batches, d.params) == (Action.ROLLBACK, 350, 200, {})
    assert "rollback to step 350, skip 200 batches, rollback 1 of 3" in d.reason


def test_earliest_onset_leads_when_several_criticals_arrive():
    (d,) = PolicyEngine().decide(
        500,
        [crit(500, onset=480, metric="kl"), crit(500, onset=440, metric="response_length")],
        view(500, [420, 460]),
    )
    assert d.target_step == 420 and "on response_length" in d.reason
    assert d.alerts == ("pattern_collapse", "pattern_collapse")


def test_rollback_budget_spent_halts_and_window_refills_it():
    cfg = policy_config_from_dict(
        {"rollback": {"budget": 2, "budget_window_steps": 100}, "cooldown": {"steps": 0}}
    )
    engine = PolicyEngine(cfg)
    first = engine.decide(150, [crit(150, onset=140)], view(150, [100]))
    assert first[0].action is Action.ROLLBACK and "rollback 1 of 2 in 100 steps" in first[0].reason
    # Back at 100 after the rollback; 30 trained steps later it collapses again.
    run(engine, {}, range(101, 130), healthy=[100])
    second = engine.decide(130, [crit(130, onset=125)], view(130, [100]))
    assert second[0].action is Action.ROLLBACK and "rollback 2 of 2" in second[0].reason
    run(engine, {}, range(101, 120), healthy=[100])
    (halt,) = engine.decide(120, [crit(120, onset=118)], view(120, [100]))
    assert halt.action is Action.HALT
    assert halt.reason == (
        "critical pattern_collapse on kl at step 120 (onset 118): halt: rollback budget spent "
        "(2 of 2 in the last 100 steps, at steps 150, 130)"
    )
    assert engine.halted == halt.reason
    assert engine.decide(121, [crit(121, onset=121)], view(121, [100])) == []

    # Same story, but the third collapse comes after the window: the budget has refilled.
    engine = PolicyEngine(cfg)
    engine.decide(150, [crit(150, onset=140)], view(150, [100]))
    run(engine, {}, range(101, 130), healthy=[100])
    engine.decide(130, [crit(130, onset=125)], view(130, [100]))
    run(engine, {}, range(101, 240), healthy=[100])
    # 170 trained steps in: both earlier rollbacks (at clock 0 and 30) left the 100-step window.
    (again,) = engine.decide(240, [crit(240, onset=230)], view(240, [100]))
    assert again.action is Action.ROLLBACK and "rollback 1 of 2" in again.reason


def test_no_healthy_checkpoint_halts_or_tightens_only_as_configured():
    (d,) = PolicyEngine().decide(
        40, [crit(40, onset=35)], view(40, healthy=[40], other=[(20, "pending"), (30, "suspect")])
    )
    assert d.action is Action.HALT
    assert d.reason == (
        "critical pattern_collapse on kl at step 40 (onset 35): halt: no healthy checkpoint before step 35 "
        "(known: 1 healthy, 1 pending, 1 suspect)"
    )
    cfg = policy_config_from_dict({"rollback": {"when_no_healthy_checkpoint": "tighten"}})
    (d,) = PolicyEngine(cfg).decide(40, [crit(40, onset=35)], view(40))
    assert d.action is Action.TIGHTEN and d.params == {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    assert (
        "no healthy checkpoint before step 35 (known: none): tighten only, kl_coef 0.05 -> 0.075" in d.reason
    )


def test_a_missing_rollback_target_names_the_checkpoint_writes_that_failed():
    # A full disk leaves no checkpoint to go back to; "known: none" alone reads like a registry bug.
    failed = dataclasses.replace(view(40), checkpoint_write_failures=3)
    (d,) = PolicyEngine().decide(40, [crit(40, onset=35)], failed)
    assert d.action is Action.HALT
    assert "no healthy checkpoint before step 35 (known: none); 3 checkpoint writes failed" in d.reason
    (d,) = PolicyEngine().decide(40, [crit(40, onset=35)], dataclasses.replace(view(40), checkpoint_write_failures=1))
    assert "; 1 checkpoint write failed (checkpoint_failures" in d.reason
    (d,) = PolicyEngine().decide(40, [crit(40, onset=35)], view(40))
    assert "failed" not in d.reason  # nothing failed: nothing said
    # a rollback target exists: failed writes elsewhere do not change the decision
    ok = dataclasses.replace(view(40, healthy=[20]), checkpoint_write_failures=3)
    (d,) = PolicyEngine().decide(40, [crit(40, onset=35)], ok)
    assert d.action is Action.ROLLBACK and d.target_step == 20


def test_tighten_stops_at_bounds_and_says_so():
    near = {"kl_coef": 0.8, "clip_range": 0.02, "lr": 1e-6}
    engine = PolicyEngine(policy_config_from_dict({"warnings": {"persist_steps": 0}}))
    (d,) = engine.decide(10, [warn(10)], view(10, constraints=near))
    assert d.action is Action.TIGHTEN and d.params == {"kl_coef": 1.0, "lr": 5e-7}
    assert (
        "kl_coef 0.8 -> 1 (at max 1), clip_range 0.02 unchanged (at min 0.02), lr 1e-06 -> 5e-07" in d.reason
    )

    at_bounds = {"kl_coef": 1.0, "clip_range": 0.02, "lr": 1e-8}
    engine = PolicyEngine(policy_config_from_dict({"warnings": {"persist_steps": 0}}))
    (d,) = engine.decide(10, [warn(10)], view(10, constraints=at_bounds))
    assert d.action is Action.NOTIFY and d.params == {}
    assert "cannot tighten further: kl_coef 1 unchanged (at max 1)" in d.reason


def test_cooldown_drops_warnings_and_acts_on_criticals_by_default():
    engine = PolicyEngine(policy_config_from_dict({"warnings": {"persist_steps": 0}}))
    assert engine.decide(10, [warn(10)], view(10))[0].action is Action.TIGHTEN
    assert run(engine, {s: [warn(s)] for s in range(11, 15)}, range(11, 15)) == {}
    assert engine.in_cooldown()
    (d,) = engine.decide(15, [crit(15, onset=14)], view(15, [0]))
    assert d.action is Action.ROLLBACK


def test_cooldown_can_hold_a_single_critical_until_it_repeats():
    cfg = {"warnings": {"persist_steps": 0}, "cooldown": {"critical_repeats": 2}}
    engine = PolicyEngine(policy_config_from_dict(cfg))
    assert engine.decide(10, [warn(10)], view(10))[0].action is Action.TIGHTEN
    got = run(engine, {s: [warn(s)] for s in range(11, 25)}, range(11, 25))
    assert got == {}  # warnings inside the 20-step cooldown are the action's transient
    (held,) = engine.decide(25, [crit(25, onset=24)], view(25, [0]))
    assert held.action is Action.NOTIFY
    assert "in cooldown until about step 30: notify only (1 of 2 repeats before it escalates)" in held.reason
    (broke,) = engine.decide(26, [crit(26, onset=24)], view(26, [0]))
    assert broke.action is Action.ROLLBACK and broke.target_step == 0
    # After the cooldown, warnings count again.
    assert run(engine, {}, range(1, 20), healthy=[0]) == {}
    assert engine.decide(21, [warn(21)], view(21))[0].action is Action.TIGHTEN


def test_non_finite_always_acts_even_as_a_warning_in_cooldown():
    engine = PolicyEngine()
    engine.decide(50, [crit(50, onset=45)], view(50, [40]))
    nan = Alert("non_finite", "non_finite", "policy_loss", 41, Severity.WARNING, 41, "policy_loss = nan")
    (d,) = engine.decide(41, [nan], view(41, [40]))
    assert (
        d.action is Action.ROLLBACK
        and d.target_step == 40
        and "critical non_finite on policy_loss" in d.reason
    )


def test_relax_is_off_by_default_and_walks_back_to_initial_when_on():
    tight = {"kl_coef": 0.1125, "clip_range": 0.128, "lr": 2.5e-7}
    assert run(PolicyEngine(), {}, range(0, 400), constraints=tight) == {}

    cfg = policy_config_from_dict({"relax": {"enabled": True, "after_healthy_steps": 100}})
    engine = PolicyEngine(cfg)
    got = run(engine, {50: [warn(50)]}, range(0, 200), constraints=tight)
    assert list(got) == [50, 150]
    (relax,) = got[150]
    assert relax.action is Action.RELAX
    assert relax.params == {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    assert relax.reason == (
        "100 steps without alerts (>= 100): relax kl_coef 0.1125 -> 0.075, clip_range 0.128 -> 0.16, "
        "lr 2.5e-07 -> 5e-07"
    )
    # One step from initial: lands exactly on the initial values, and says so.
    engine = PolicyEngine(cfg)
    near = {"kl_coef": 0.075, "clip_range": 0.16, "lr": 5e-7}
    (last,) = run(engine, {}, range(0, 101), constraints=near)[100]
    assert last.params == INITIAL and last.reason.count("back at initial value") == 3


def test_modes_are_stamped_and_advised_halt_does_not_stop_the_engine():
    cfg = policy_config_from_dict({"modes": {"rollback": "approve", "halt": "advise", "tighten": "advise"}})
    engine = PolicyEngine(cfg)
    (d,) = engine.decide(100, [crit(100, onset=90)], view(100, [50]))
    assert (d.action, d.mode) == (Action.ROLLBACK, "approve")
    (h,) = PolicyEngine(cfg).decide(100, [crit(100, onset=90)], view(100))
    assert (h.action, h.mode) == (Action.HALT, "advise")
    engine = PolicyEngine(cfg)
    engine.decide(100, [crit(100, onset=90)], view(100))
    assert engine.halted is None


def test_denied_rollback_refunds_the_budget_and_denied_halt_lifts_it():
    cfg = policy_config_from_dict({"rollback": {"budget": 1}, "cooldown": {"steps": 0}})
    engine = PolicyEngine(cfg)
    (rb,) = engine.decide(100, [crit(100, onset=90)], view(100, [50]))
    engine.note_outcome(rb, "denied")
    (again,) = engine.decide(101, [crit(101, onset=90)], view(101, [50]))
    assert again.action is Action.ROLLBACK and "rollback 1 of 1" in again.reason
    engine.note_outcome(again, "done")
    (halt,) = engine.decide(60, [crit(60, onset=55)], view(60, [50]))
    assert halt.action is Action.HALT
    engine.note_outcome(halt, "denied")
    assert engine.halted is None
    with pytest.raises(ValueError, match="phase"):
        engine.note_outcome(halt, "finished")


def test_state_dict_round_trip_continues_identically():
    script = {5: [warn(5)], 9: [warn(9)], 16: [warn(16)], 40: [crit(40, onset=30)], 45: [crit(45, onset=44)]}
    a = PolicyEngine()
    run(a, script, range(0, 41), healthy=[10])
    b = PolicyEngine()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    rest = {**script, 12: [warn(12)], 13: [crit(13, onset=13)]}
    assert run(a, rest, range(11, 60), healthy=[10]) == run(b, rest, range(11, 60), healthy=[10])
    with pytest.raises(ValueError, match="version-1"):
        PolicyEngine().load_state_dict({"clock": 3})


def test_replay_journal_restores_budget_cooldown_and_halt():
    cfg = policy_config_from_dict({"rollback": {"budget": 2}})
    live = PolicyEngine(cfg)
    history = []
    for s, onset in ((150, 140), (190, 180)):
        run(live, {}, range(101, s), healthy=[100])
        history += [(d, "done") for d in live.decide(s, [crit(s, onset=onset)], view(s, [100]))]
    assert [d.action for d, _ in history] == [Action.ROLLBACK, Action.ROLLBACK]

    rebuilt = PolicyEngine(cfg)
    rebuilt.replay_journal([(d.to_dict(), phase) for d, phase in history])
    assert rebuilt.in_cooldown()
    (d,) = rebuilt.decide(130, [crit(130, onset=125)], view(130, [100]))
    assert d.action is Action.HALT and "2 of 2" in d.reason

    # A rollback journaled as denied gives its budget back on replay.
    rebuilt = PolicyEngine(cfg)
    rebuilt.replay_journal([history[0], (history[1][0], "denied")])
    (d,) = rebuilt.decide(230, [crit(230, onset=225)], view(230, [100]))
    assert d.action is Action.ROLLBACK and "rollback 2 of 2" in d.reason

    # A halt decided but never carried out stays in force; one carried out ended the run, and a
    # run resumed after it is guarded again, with a fresh budget.
    halted = PolicyEngine(cfg)
    halted.replay_journal([*history, (Decision(Action.HALT, 130, "halt: x"), None)])
    assert halted.halted == "halt: x" and halted.decide(131, [crit(131, onset=131)], view(131)) == []
    resumed = PolicyEngine(cfg)
    resumed.replay_journal([*history, (Decision(Action.HALT, 130, "halt: x"), "done")])
    assert resumed.halted is None
    (d,) = resumed.decide(131, [crit(131, onset=120)], view(131, [100]))
    assert d.action is Action.ROLLBACK and "rollback 1 of 2" in d.reason


def test_decide_rejects_bad_input_by_name():
    engine = PolicyEngine(PolicyConfig())
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        engine.decide(-1, [], view(0))
    with pytest.raises(TypeError, match="rlguard.monitors.alerts.Alert"):
        engine.decide(1, [{"code": "spike"}], view(1))


def test_stall_only_notifies_and_does_not_block_a_real_action():
    stall = Alert("stall", "stall", "", 80, Severity.CRITICAL, 80, "no event for 900 s since step 80")
    (d,) = PolicyEngine().decide(80, [stall], view(80, [50]))
    assert d.action is Action.NOTIFY
    assert d.reason == (
        "critical stall at step 80 (onset 80); alert: no event for 900 s since step 80; notify only (stall)"
    )
    (d,) = PolicyEngine().decide(81, [stall, crit(81, onset=75)], view(81, [50]))
    assert d.action is Action.ROLLBACK and d.alerts == ("stall", "pattern_collapse")
