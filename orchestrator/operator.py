"""Operator requests (CLI, API, dashboard buttons) and the public status snapshot.

Runs on the loop thread (the HTTP handler waits for the answer). Operator actions become
journaled decisions like the policies' own, so the journal alone tells who did what:
the decision's reason starts with "operator".

    pause     -> pause command; the worker blocks at its next step boundary   (202)
    resume    -> resume command                                              (200)
    rollback  {"to_step": N}: N must be a known, non-corrupt checkpoint      (202)
    relax     -> constraints back to the run's initial values                (202)
    halt      -> stop the worker; the run ends with exit code 3              (202)
    approve   {"decision_id": "...", "approve": true|false}                  (200)
Errors: 400 (bad body), 404 (unknown decision/checkpoint), 409 (not possible in this state).
"""

from __future__ import annotations

from rlguard.orchestrator.acting import DecisionSource, answer_approval, carry_out
from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.run_context import RunContext
from rlguard.orchestrator.state import RunState
from rlguard.policies.decision import Action, Decision
from rlguard.policies.view import Health

ACTIVE = (RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.ROLLING_BACK, RunState.RESTARTING)


ACTIONS = ("pause", "resume", "approve", "rollback", "relax", "halt")
TEXT_CHARS = 500  # a reason or source longer than this is cut: it goes into the journal and the decision


def validated_args(action: str, body: dict) -> tuple[dict | None, str]:
    """(the arguments to journal and act on, "") or (None, the 400 error). Only these fields, checked,
    reach the journal: never the body as sent."""
    if action == "approve":
        did, approve = body.get("decision_id"), body.get("approve", True)
        if not isinstance(did, str) or len(did) > 64 or not isinstance(approve, bool):
            return None, 'expected {"decision_id": "d-000123", "approve": true|false}'
        return {"decision_id": did, "approve": approve}, ""
    if action == "rollback":
        to_step = body.get("to_step")
        if isinstance(to_step, bool) or not isinstance(to_step, int):
            return None, 'expected {"to_step": N} with N the step of a known checkpoint'
        skip = body.get("skip_batches", 0)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            return None, (f"'skip_batches' must be an integer >= 0 (batches to skip after the restored step), "
                          f"got {str(skip)[:40]!r}")
        return {"to_step": to_step, "skip_batches": skip}, ""
    if action == "halt":
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            return None, f"'reason' must be a string, got {type(reason).__name__}"
        return ({"reason": reason[:TEXT_CHARS]} if reason else {}), ""
    return {}, ""


def handle_operator(ctx: RunContext, action: str, body: dict) -> tuple[int, dict]:
    live = ctx.live
    if action not in ACTIONS:
        return 404, {"error": f"unknown action {action[:40]!r}"}
    if live.state not in ACTIVE:
        return 409, {"error": f"the run is {live.state.value}: nothing to {action}"}
    args, error = validated_args(action, body)
    if args is None:
        return 400, {"error": error}
    source = str(body.get("source", "api"))[:TEXT_CHARS]
    ctx.recorder.operator(action, args, source=source)  # journaled once valid, before anything is done
    step = live.step or 0
    if action == "pause":
        if not ctx.accepts_commands:
            return 409, {"error": f"a {ctx.sc.launcher} trainer cannot be paused while it runs (it takes no "
                         "commands): halt it, or roll it back to a step"}
        if live.operator_paused:
            return 409, {"error": "already paused"}
        live.operator_paused = True
        if live.approval is None:
            ctx.send(Command(CommandKind.PAUSE, {"reason": "operator"}))
        ctx.set_state(RunState.PAUSED, "paused by an operator")
        return 202, {"ok": True, "state": "paused", "note": "takes effect at the worker's next step boundary"}
    if action == "resume":
        if not live.operator_paused:
            return 409, {"error": "not paused by an operator" + (" (an approval is pending: use approve)"
                                                                 if live.approval else "")}
        live.operator_paused = False
        if live.approval is None:
            ctx.send(Command(CommandKind.RESUME, {}))
            ctx.set_state(RunState.RUNNING, "resumed by an operator")
        return 200, {"ok": True, "state": live.state.value}
    if action == "approve":
        did, approve = args["decision_id"], args["approve"]
        if not answer_approval(ctx, did, approve, by=str(body.get("source", "operator"))[:TEXT_CHARS]):
            pending = live.approval.decision_id if live.approval else None
            return 404, {"error": f"no pending approval {did!r}", "pending": pending}
        return 200, {"ok": True, "decision_id": did, "approved": approve}
    if action == "rollback":
        to_step, skip = args["to_step"], args["skip_batches"]
        entry = ctx.registry.get(to_step)
        known = [e.step for e in ctx.registry.entries() if e.health is not Health.CORRUPT]
        if entry is None or entry.health is Health.CORRUPT:
            return 404, {"error": f"no usable checkpoint at step {to_step}", "known_steps": known}
        d = Decision(Action.ROLLBACK, step, f"operator rollback to step {to_step}", target_step=to_step,
                     skip_batches=skip)
        return _operator_decision(ctx, d)
    if action == "relax":
        d = Decision(Action.RELAX, step, "operator relax to the initial constraints",
                     params=dict(live.initial_constraints))
        return _operator_decision(ctx, d)
    if action == "halt":
        d = Decision(Action.HALT, step, f"operator halt: {args.get('reason') or 'no reason given'}")
        return _operator_decision(ctx, d)
    return 404, {"error": f"unknown action {action!r}"}  # ACTIONS lists one this function does not handle


def _operator_decision(ctx: RunContext, d: Decision) -> tuple[int, dict]:
    did = carry_out(ctx, d, source=DecisionSource.OPERATOR)
    return 202, {"ok": True, "decision_id": did, "state": ctx.live.state.value}


def build_status(ctx: RunContext) -> dict:
    live = ctx.live
    checkpoints = [{"step": e.step, "health": e.health.value, "pinned": e.pinned, "note": e.note,
                    "path": str(ctx.registry.path_of(e))} for e in ctx.registry.entries()]
    approval = None
    if live.approval is not None:
        approval = {"decision_id": live.approval.decision_id, "decision": live.approval.decision.to_dict(),
                    "seconds_left": max(0.0, live.approval.deadline - ctx.clock())}
    w = live.worker
    return {
        "state": live.state.value,
        "reason": live.reason,
        "step": live.step,
        "attempt": live.attempt,
        "paused": live.paused,
        "restarts_left": live.restarts_left,
        "rollbacks": live.rollbacks,
        "constraints": dict(live.constraints),
        "initial_constraints": dict(live.initial_constraints),
        "alerts": list(live.recent_alerts),
        "checkpoints": checkpoints,
        "approval": approval,
        "worker": {"pid": w.pid, "attempt": w.attempt} if w is not None else None,
        "run_dir": str(ctx.files.run_dir),
        "sink_errors": ctx.sinks.error_total,
        "coverage": ctx.coverage.current,
    }
