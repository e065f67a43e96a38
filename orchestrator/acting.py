"""Carrying out decisions: the `act` of the loop, and the one applier of a decision.

Whoever makes a decision (the policies, an operator, the supervisor itself, or `rlguard watch`)
hands it to an `Applier`: it is journaled `decided` before anything happens, its mode is read
once (policies.decision.disposition: advise -> skipped, approve -> ask, auto -> act), and it
ends with exactly one outcome: done | failed | skipped | denied.

Under the supervisor, acting means (`execute`):

    notify    -> done at once (the sinks carry it to people)
    tighten / relax -> set_constraints command; done when the worker acknowledges it
    rollback  -> verify the target checkpoint (registry; a corrupt one falls back to the
                 previous healthy one), then in-process `load` (fast), or kill + relaunch with
                 --resume when the worker is dead, hung, in restart mode, or failed the load.
                 The target is HELD in the registry (never pruned, not demoted by a later
                 alert whose onset is after it) until the rollback is done or given up. A
                 failed load falls back to the next older healthy checkpoint (in-process if the
                 worker is intact, else by relaunch), or to a relaunch from the start; either
                 way with the decision's tightened constraints (journaled: rollback_fallback).
                 An operator's rollback goes to exactly the step asked for (verified first).
    halt      -> stop command; the worker's process group is killed after stop_grace_s
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from rlguard.orchestrator.commands import Ack, Command, CommandKind
from rlguard.orchestrator.live import PendingApproval, SentCommand, format_values
from rlguard.orchestrator.recorder import Recorder
from rlguard.orchestrator.restarts import restart
from rlguard.orchestrator.run_context import RunContext
from rlguard.orchestrator.state import RunState
from rlguard.policies.decision import Action, Decision, Disposition, Phase, disposition
from rlguard.policies.view import Health
from rlguard.ppo.checkpoint_files import CheckpointError, verify_checkpoint


class DecisionSource(StrEnum):
    """Who made a decision. Only the policies' own count toward their budgets (the engine learns
    their outcomes; `--resume` rebuilds the rollback budget from the journal's `policy` ones)."""

    POLICY = "policy"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"  # e.g. the halt after a rollback proved impossible

    @property
    def journaled_as(self) -> str:
        return "operator" if self is DecisionSource.OPERATOR else "policy"


@dataclass
class Applier:
    """decided -> read the mode -> act, ask or skip -> one outcome (recorded by `finish`, now or
    when the act ends). `ask` is None where nobody can answer an approval (watch, replay)."""

    recorder: Recorder
    act: Callable[[Decision, str, DecisionSource], None]
    finish: Callable[[Decision, str, Phase, str], None]
    ask: Callable[[Decision, str], None] | None = None
    approve_on_timeout: bool = False
    not_by_policy: set[str] = field(default_factory=set)  # decision ids the policy engine did not make

    def apply(self, d: Decision, *, source: DecisionSource = DecisionSource.POLICY, alerts=(),
              constraints: dict | None = None, target: dict | None = None) -> str:
        did = self.recorder.decided(d, alerts=alerts, constraints=constraints, target=target,
                                    source=source.journaled_as)
        if source is not DecisionSource.POLICY:
            self.not_by_policy.add(did)
        how, why = disposition(d, someone_can_approve=self.ask is not None,
                               approve_on_timeout=self.approve_on_timeout)
        if how is Disposition.SKIP:
            self.finish(d, did, Phase.SKIPPED, why)
        elif how is Disposition.ASK:
            self.ask(d, did)
        else:
            self.act(d, did, source)
        return did


def carry_out(ctx: RunContext, d: Decision, *, alerts=(), source: DecisionSource = DecisionSource.POLICY) -> str:
    """The supervisor's applier: journal `d` as decided, then act according to its mode."""
    target = None
    if d.action is Action.ROLLBACK and d.target_step is not None:
        entry = ctx.registry.get(d.target_step)
        target = {"step": d.target_step, "path": str(ctx.registry.path_of(entry)) if entry else None}
    applier = Applier(ctx.recorder, act=lambda d_, did, src: execute(ctx, d_, did, src), finish=ctx.outcome,
                      ask=lambda d_, did: request_approval(ctx, d_, did),
                      not_by_policy=ctx.operator_decisions)
    return applier.apply(d, source=source, alerts=alerts, constraints=dict(ctx.live.constraints), target=target)


def execute(ctx: RunContext, d: Decision, did: str, source: DecisionSource = DecisionSource.POLICY) -> None:
    live = ctx.live
    if d.action is Action.NOTIFY:
        ctx.outcome(d, did, Phase.DONE, "notified")
    elif d.action in (Action.TIGHTEN, Action.RELAX):
        changes = {k: v for k, v in d.params.items() if live.constraints.get(k) != v}
        if not changes:
            ctx.outcome(d, did, Phase.SKIPPED, "constraints already at these values")
        elif live.worker is None or live.state is RunState.RESTARTING:
            live.constraints.update(changes)  # the relaunch passes them as overrides
            ctx.outcome(d, did, Phase.DONE, f"recorded for the relaunch: {format_values(changes)}")
        elif not ctx.accepts_commands:
            # verl / OpenRLHF read their knobs only at launch: in force from the next relaunch
            # (a rollback's), which passes them as the trainer's own flags.
            live.constraints.update(changes)
            ctx.outcome(d, did, Phase.DONE, f"recorded for the next relaunch ({ctx.sc.launcher} reads its knobs "
                        f"only at launch): {format_values(changes)}")
        else:
            ctx.send(Command(CommandKind.SET_CONSTRAINTS, changes, decision_id=did), d)
    elif d.action is Action.ROLLBACK:
        if source is DecisionSource.OPERATOR:
            # Operators may pick a suspect checkpoint on purpose: exactly that one, verified.
            rollback_to_entry(ctx, d, did)
        else:
            rollback(ctx, d, did)
    elif d.action is Action.HALT:
        halt(ctx, d, did, d.reason)


def rollback(ctx: RunContext, d: Decision, did: str) -> None:
    """A policy rollback: the newest healthy checkpoint at or before the target that verifies."""
    live = ctx.live
    wanted = d.target_step if d.target_step is not None else (live.step or 0)
    if _in_process_possible(ctx):
        # The worker verifies the checksums before it reads anything (and says so if they fail):
        # verifying here too would double the rollback time for large checkpoints.
        entry = _newest_healthy(ctx, wanted)
    else:
        entry = ctx.registry.rollback_target(wanted + 1)  # verifies checksums, skips corrupt ones
        ctx.report_corruptions()
    if entry is None:
        _rollback_impossible(ctx, d, did, f"no loadable healthy checkpoint at or before step {wanted}")
        return
    note = "" if entry.step == wanted else f" (step {wanted} unusable: fell back to step {entry.step})"
    _roll_back(ctx, d, did, entry, note)


def rollback_to_entry(ctx: RunContext, d: Decision, did: str) -> None:
    """An operator rollback to exactly d.target_step (any health but corrupt), verified first."""
    entry = ctx.registry.get(int(d.target_step or 0))
    if entry is None:
        ctx.outcome(d, did, Phase.FAILED, f"checkpoint step {d.target_step} is gone")
        return
    try:
        verify_checkpoint(ctx.registry.path_of(entry))
    except CheckpointError as e:
        ctx.recorder.checkpoint(entry.step, str(ctx.registry.path_of(entry)), "corrupt", note=e.reason)
        ctx.outcome(d, did, Phase.FAILED, f"checkpoint step {entry.step} failed verification: {e.reason}")
        return
    _roll_back(ctx, d, did, entry, "")


def _rollback_impossible(ctx: RunContext, d: Decision, did: str, why: str) -> None:
    ctx.outcome(d, did, Phase.FAILED, why)
    carry_out(ctx, Decision(Action.HALT, d.step, f"rollback impossible: {why} (decision {did})", alerts=d.alerts),
              source=DecisionSource.SUPERVISOR)


def _roll_back(ctx: RunContext, d: Decision, did: str, entry, note: str) -> None:
    live = ctx.live
    path = str(ctx.registry.path_of(entry))
    new_constraints = {**live.constraints, **d.params}
    ctx.registry.hold(entry.step)  # retention and later alerts must leave the target alone until it is loaded
    ctx.registry.use(entry.step)  # and retention keeps it afterwards: the base of the new timeline
    if _in_process_possible(ctx):
        params = {"path": path, "step": entry.step, "skip_batches": d.skip_batches, "constraints": new_constraints,
                  "attempt": max(live.attempt, live.launch_attempt) + 1}
        ctx.send(Command(CommandKind.LOAD, params, decision_id=did), d)
        ctx.set_state(RunState.ROLLING_BACK, f"in-process rollback to step {entry.step}{note}")
    else:
        live.constraints = new_constraints
        why = "restart mode" if ctx.sc.rollback_mode == "restart" else "worker not running"
        restart(ctx, f"rollback to step {entry.step}{note} by relaunch ({why})", resume=path, decision=(d, did),
                    skip_batches=d.skip_batches)


def _in_process_possible(ctx: RunContext) -> bool:
    live = ctx.live
    return (ctx.sc.rollback_mode == "in_process" and live.worker is not None
            and live.state in (RunState.RUNNING, RunState.PAUSED))


def _newest_healthy(ctx: RunContext, at_or_before: int):
    healthy = [e for e in ctx.registry.entries() if e.health is Health.HEALTHY and e.step <= at_or_before]
    return healthy[-1] if healthy else None


def halt(ctx: RunContext, d: Decision | None, did: str, reason: str) -> None:
    live = ctx.live
    if live.worker is None or live.worker.poll()[0]:
        if d is not None:
            ctx.outcome(d, did, Phase.DONE, "no worker running")
        ctx.set_state(RunState.HALTED, reason)
        return
    live.halting = (d, did, ctx.clock() + ctx.sc.stop_grace_s)
    if not ctx.accepts_commands:
        # No stop command to send: SIGTERM the trainer's process group now (SIGKILL after
        # stop_grace_s); the exit is then handled as a halt (on_worker_exit).
        live.worker.stop(ctx.sc.stop_grace_s, clock=ctx.clock, sleep=ctx.sleep)
        return
    ctx.send(Command(CommandKind.STOP, {"reason": reason}, decision_id=did), d)


def request_approval(ctx: RunContext, d: Decision, did: str) -> None:
    live = ctx.live
    timeout_s = float(getattr(ctx.approval_cfg, "timeout_s", 1800.0))
    live.approval = PendingApproval(d, did, ctx.clock() + timeout_s)
    ctx.recorder.note(f"waiting up to {timeout_s:g} s for an operator to approve {d.action.value} ({did})",
                     event="approval_requested", decision_id=did)
    ctx.send(Command(CommandKind.PAUSE, {"reason": f"approval of {did}"}))
    ctx.set_state(RunState.PAUSED, f"awaiting approval of {d.action.value} ({did})")


def answer_approval(ctx: RunContext, decision_id: str, approve: bool, by: str) -> bool:
    live = ctx.live
    pa = live.approval
    if pa is None or pa.decision_id != decision_id:
        return False
    live.approval = None
    ctx.recorder.operator("approve" if approve else "deny", {"decision_id": decision_id}, source=by)
    if not live.operator_paused:
        ctx.send(Command(CommandKind.RESUME, {}))
        ctx.set_state(RunState.RUNNING, f"{decision_id} {'approved' if approve else 'denied'} by {by}")
    if approve:
        execute(ctx, pa.decision, pa.decision_id)
    else:
        ctx.outcome(pa.decision, pa.decision_id, Phase.DENIED, f"denied by {by}")
    return True


def on_command_outcome(ctx: RunContext, sent: SentCommand, ack: Ack) -> None:
    """The worker applied a command (ack.ok) or could not; finish its decision."""
    live, cmd, d = ctx.live, sent.command, sent.decision
    if cmd.kind is CommandKind.LOAD:
        step = int(cmd.params["step"])
        if ack.ok:
            live.attempt = int(cmd.params["attempt"])
            live.constraints.update(cmd.params.get("constraints") or {})
            live.rollbacks += 1
            live.step = step
            ctx.apply_registry_change(ctx.registry.note_rollback(step))
            if d is not None:
                ctx.outcome(d, cmd.decision_id, Phase.DONE, f"restored step {step} in-process as attempt {live.attempt}, "
                            f"skipped {cmd.params.get('skip_batches', 0)} batches, constraints "
                            f"{format_values(cmd.params.get('constraints') or {})}")
            ctx.set_state(RunState.RUNNING, f"rolled back in-process to step {step} (attempt {live.attempt})")
            ctx.release_rollback_target(step)  # after the outcome is journaled: pruning does disk I/O
            return
        # The worker could not load it. A checkpoint that fails verification here was refused
        # before anything was read: the worker is intact, load the previous healthy one in-process.
        # One that verifies failed for another reason: the worker's state is suspect, relaunch.
        entry = ctx.registry.rollback_target(step + 1)
        ctx.report_corruptions()
        if entry is not None:
            ctx.registry.hold(entry.step)
        if entry is None or entry.step != step:
            ctx.release_rollback_target(step)
        if (entry is not None and entry.step != step and d is not None and live.worker is not None
                and live.state is RunState.ROLLING_BACK):
            params = dict(cmd.params, path=str(ctx.registry.path_of(entry)), step=entry.step)
            ctx.send(Command(CommandKind.LOAD, params, decision_id=cmd.decision_id), d)
            ctx.recorder.note(f"checkpoint step {step} refused by the worker ({ack.detail}); loading step "
                             f"{entry.step} instead", event="rollback_fallback", decision_id=cmd.decision_id)
            return
        # The decision's constraints stay in force whatever happens next: a relaunch without them
        # would replay the collapse the rollback was meant to stop.
        constraints = cmd.params.get("constraints") or {}
        live.constraints.update(constraints)
        where = f"step {entry.step}" if entry is not None else "the start (no older healthy checkpoint)"
        ctx.recorder.note(f"worker could not load step {step} ({ack.detail}): relaunching from {where} with "
                         f"constraints {format_values(constraints)}", event="rollback_fallback",
                         decision_id=cmd.decision_id, resume_step=entry.step if entry is not None else None,
                         constraints=dict(constraints))
        resume = str(ctx.registry.path_of(entry)) if entry is not None else ""  # "": from the start
        restart(ctx, f"in-process rollback failed ({ack.detail})", resume=resume,
                    decision=(d, cmd.decision_id) if d is not None else None,
                    skip_batches=int(cmd.params.get("skip_batches", 0)) if entry is not None else 0)
        return
    if d is None:
        ctx.recorder.note(f"command {cmd.kind.value} {'applied' if ack.ok else 'failed'}: {ack.detail}",
                         event="command", command=cmd.to_dict(), ok=ack.ok, step=ack.step)
        return
    if cmd.kind is CommandKind.STOP:
        return  # the halt finishes when the worker exits
    if cmd.kind is CommandKind.SET_CONSTRAINTS and ack.ok:
        live.constraints.update(cmd.params)
    phase = Phase.DONE if ack.ok else Phase.FAILED
    ctx.outcome(d, cmd.decision_id, phase, f"{format_values(cmd.params)} at step {ack.step}" if ack.ok else ack.detail)


