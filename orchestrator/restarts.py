"""Restarting the worker group: kill, back off, relaunch from a checkpoint.

`restart` stops the worker and schedules a relaunch after an exponential back-off, from the
checkpoint it is given or else the last healthy one that verifies; `relaunch` (called by the
timer) is the one place the restart budget is spent; `launch` starts a worker attempt with the
constraints in force. Constraints of decisions the dead worker never applied are carried over;
other decisions it never acknowledged fail. A halt under way is finished instead (`finish_halt`).
"""

from __future__ import annotations

from pathlib import Path

from rlguard.orchestrator.commands import CommandKind
from rlguard.orchestrator.launcher import describe_exit, tail
from rlguard.orchestrator.live import SentCommand, format_values
from rlguard.orchestrator.run_context import RunContext
from rlguard.orchestrator.state import RunState
from rlguard.policies.decision import Decision, Phase


def restart(ctx: RunContext, reason: str, *, resume: str | None = None,
            decision: tuple[Decision, str] | None = None, skip_batches: int = 0) -> None:
    """Kill the worker group; relaunch after the backoff from `resume` ("": from the start) or,
    when None, the last healthy checkpoint. Constraints in force, including those of decisions
    not yet applied, go to the relaunch."""
    live = ctx.live
    if live.halting is not None:  # a halt in progress wins: finish it instead of relaunching
        w = live.worker
        if w is not None:
            w.stop(ctx.sc.stop_grace_s, clock=ctx.clock, sleep=ctx.sleep)
            live.worker = None
            finish_halt(ctx, describe_exit(w.poll()[1]))
        return
    load = next((s for s in live.unacked.values() if s.command.kind is CommandKind.LOAD and s.decision), None)
    if load is not None and decision is None:  # an in-process rollback was under way: finish it by relaunch
        live.unacked.pop(load.command.id, None)
        decision = (load.decision, load.command.decision_id)
        resume = load.command.params["path"]
        skip_batches = int(load.command.params.get("skip_batches", 0))
        live.constraints.update(load.command.params.get("constraints") or {})
    carry_pending_constraints(ctx, reason)
    if live.worker is not None:
        live.worker.stop(ctx.sc.stop_grace_s, clock=ctx.clock, sleep=ctx.sleep)
        ctx.exited_worker, live.worker = live.worker, None
    ctx.files.remove_partial_checkpoints()  # the worker group is gone: any temp dir is a torn save
    log_tail = tail(ctx.exited_worker.log_path) if ctx.exited_worker else ""
    if resume is None:
        entry = ctx.registry.rollback_target(1 << 62)  # the last healthy one that verifies
        ctx.report_corruptions()
        resume = str(ctx.registry.path_of(entry)) if entry else None
    ctx.recorder.restart(reason, attempt=live.launch_attempt, resume=resume or None,
                         restarts_left=live.restarts_left, constraints=dict(live.constraints),
                         worker_log_tail=log_tail[-2000:])
    fail_unacked(ctx, f"worker restarted: {reason}")
    if live.restarts_left <= 0:
        ctx.set_state(RunState.FAILED, f"restart budget spent ({ctx.sc.max_restarts}); last: {reason}")
        return
    used = ctx.sc.max_restarts - live.restarts_left
    delay = min(ctx.sc.restart_backoff_max_s,
                ctx.sc.restart_backoff_initial_s * ctx.sc.restart_backoff_factor ** used)
    live.relaunch_at = ctx.clock() + delay
    live.relaunch_resume = resume
    live.relaunch_decision = decision
    live.relaunch_skip = skip_batches
    ctx.set_state(RunState.RESTARTING, f"{reason}; relaunch in {delay:.1f} s from {resume or 'the start'}")


def relaunch(ctx: RunContext) -> None:
    live = ctx.live
    live.restarts_left -= 1  # the one place the restart budget is spent
    live.relaunch_at = None
    try:
        launch(ctx, resume=live.relaunch_resume, reason="restart", skip_batches=live.relaunch_skip)
    except OSError as e:  # could not even start it (no memory for fork, disk full, ...): a failed attempt
        resume = live.relaunch_resume
        bad_step = getattr(e, "checkpoint_step", None)
        if bad_step is not None:  # a trainer launcher found its resume target gone or rewritten
            ctx.registry.mark_corrupt(bad_step, str(e))
            ctx.report_corruptions()
            entry = ctx.registry.rollback_target(bad_step)  # the next older healthy one, else the start
            ctx.report_corruptions()
            resume = str(ctx.registry.path_of(entry)) if entry is not None else ""
        restart(ctx, f"relaunch failed: {e}", resume=resume, decision=live.relaunch_decision,
                skip_batches=live.relaunch_skip)
        return
    live.relaunch_skip = 0
    if live.relaunch_decision is not None:
        decision, did = live.relaunch_decision
        live.relaunch_decision = None
        live.rollbacks += 1
        ctx.outcome(decision, did, Phase.DONE, f"relaunched attempt {live.launch_attempt} from "
                    f"{live.relaunch_resume or 'the start'} with constraints {format_values(live.constraints)}")


def launch(ctx: RunContext, *, resume: str | None, reason: str, skip_batches: int = 0) -> None:
    live = ctx.live
    attempt = max(live.attempt, live.launch_attempt) + (1 if live.attempts_started else 0)
    live.worker = ctx.launcher.start(attempt, resume=Path(resume) if resume else None,
                                     constraints=ctx.constraint_overrides(), skip_batches=skip_batches,
                                     all_constraints=dict(live.constraints) if live.attempts_started else None,
                                     clock=ctx.clock)
    live.launch_attempt = live.attempt = attempt
    live.attempts_started += 1
    live.step = None
    live.worker_final_status = None
    with live.lock:
        live.last_heartbeat = live.last_progress = None
        live.outbox = []
    live.unacked.clear()
    ctx.recorder.note(f"launched worker attempt {attempt} ({reason})", event="launch", reason=reason,
                      attempt=attempt, resume=resume or None, argv=live.worker.argv, pid=live.worker.pid,
                      constraints=dict(live.constraints), skip_batches=skip_batches)
    ctx.files.write_supervisor_info(ctx.url, ctx.port, worker=live.worker.to_dict())
    ctx.set_state(RunState.STARTING, f"launched attempt {attempt} ({reason})")


def finish_halt(ctx: RunContext, exit_description: str) -> None:
    """The worker of a halt under way is gone: the halt decision is done, the run HALTED."""
    d, did, _ = ctx.live.halting
    ctx.live.halting = None
    if d is not None:
        ctx.outcome(d, did, Phase.DONE, f"worker stopped ({exit_description})")
    ctx.set_state(RunState.HALTED, d.reason if d is not None else "halted")


def carry_pending_constraints(ctx: RunContext, why: str) -> None:
    """set_constraints decisions the worker never applied before it was stopped: the relaunch
    applies them (RLGUARD_CONSTRAINTS / --set), so they are done, not lost."""
    live = ctx.live
    for cid, sent in list(live.unacked.items()):
        if sent.command.kind is CommandKind.SET_CONSTRAINTS and sent.decision is not None:
            live.unacked.pop(cid, None)
            live.constraints.update(sent.command.params)
            ctx.outcome(sent.decision, sent.command.decision_id, Phase.DONE,
                        f"recorded for the relaunch ({why}): {format_values(sent.command.params)}")
    with live.lock:
        live.outbox = [c for c in live.outbox if c.kind is not CommandKind.SET_CONSTRAINTS or c.id in live.unacked]


def fail_unacked(ctx: RunContext, why: str) -> None:
    """Commands the stopped worker never acknowledged: their decisions fail (a halt's STOP and a
    rollback's LOAD are finished by the halt and the relaunch instead)."""
    live = ctx.live
    pending = list(live.unacked.values()) + [SentCommand(c, 0.0) for c in live.outbox if c.id not in live.unacked]
    live.unacked.clear()
    with live.lock:
        live.outbox = []
    for sent in pending:
        if sent.decision is not None and sent.command.kind not in (CommandKind.LOAD, CommandKind.STOP):
            ctx.outcome(sent.decision, sent.command.decision_id, Phase.FAILED, why)
