"""Restarting the worker group: kill, back off, relaunch from a checkpoint.

`restart` stops the worker and schedules a relaunch after an exponential back-off, from the
checkpoint it is given or else the last healthy one that verifies; `relaunch` (called by the
                                                                               timer) is the one place the restart budget is spent; `launch` starts a worker attempt with the
constraints in force. Constraints of decisions the dead worker never applied are carried over.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.commands import CommandKind
from orchestrator.launcher import tail
from orchestrator.live import format_values
from orchestrator.state import RunState

if TYPE_CHECKING:
    from orchestrator.supervisor import Supervisor
    from policies.decision import Decision


def restart(sup: Supervisor, reason: str, *, resume: str | None = None, decision: tuple[Decision, str] | None = None,
            skip_batches: int = 0) -> None:
    """Kill the worker group; relaunch after the backoff from `resume` ("": from the start) or,
    when None, the last healthy checkpoint. Constraints in force, including those of decisions
    not yet applied, go to the relaunch."""
    live = sup.live
    if live.halting is not None:  # a halt in progress wins: finish it instead of relaunching
        w = live.worker
        if w is not None:
            w.stop(sup.sc.stop_grace_s, clock=sup.clock, sleep=sup.sleep)
            live.worker = None
            from orchestrator.acting import on_worker_exit

            on_worker_exit(sup, w, w.poll()[1])
        return
    load = next((s for s in live.unacked.values() if s.command.kind is CommandKind.LOAD and s.decision), None)
    if load is not None and decision is None:  # an in-process rollback was under way: finish it by relaunch
        live.unacked.pop(load.command.id, None)
        decision = (load.decision, load.command.decision_id)
        resume = load.command.params["path"]
        skip_batches = int(load.command.params.get("skip_batches", 0))
        live.constraints.update(load.command.params.get("constraints") or {})
    from orchestrator.acting import carry_pending_constraints

    carry_pending_constraints(sup, reason)
    if live.worker is not None:
        live.worker.stop(sup.sc.stop_grace_s, clock=sup.clock, sleep=sup.sleep)
        sup._exited_worker, live.worker = live.worker, None
    sup.files.remove_partial_checkpoints()  # the worker group is gone: any temp dir is a torn save
    log_tail = tail(sup._exited_worker.log_path) if sup._exited_worker else ""
    if resume is None:
        entry = sup.registry.rollback_target(1 << 62)  # the last healthy one that verifies
        sup.report_corruptions()
        resume = str(sup.registry.path_of(entry)) if entry else None
    sup.journal.restart(reason, attempt=live.launch_attempt, resume=resume or None,
                        restarts_left=live.restarts_left, constraints=dict(live.constraints),
                        worker_log_tail=log_tail[-2000:])
    sup.sinks.on_restart(reason)
    sup._fail_unacked(f"worker restarted: {reason}")
    if live.restarts_left <= 0:
        sup.set_state(RunState.FAILED, f"restart budget spent ({sup.sc.max_restarts}); last: {reason}")
        return
    used = sup.sc.max_restarts - live.restarts_left
    delay = min(sup.sc.restart_backoff_max_s,
                sup.sc.restart_backoff_initial_s * sup.sc.restart_backoff_factor ** used)
    live.relaunch_at = sup.clock() + delay
    live.relaunch_resume = resume
    live.relaunch_decision = decision
    live.relaunch_skip = skip_batches
    sup.set_state(RunState.RESTARTING, f"{reason}; relaunch in {delay:.1f} s from {resume or 'the start'}")


def relaunch(sup: Supervisor) -> None:
    live = sup.live
    live.restarts_left -= 1  # the one place the restart budget is spent
    live.relaunch_at = None
    try:
        launch(sup, resume=live.relaunch_resume, reason="restart", skip_batches=live.relaunch_skip)
    except OSError as e:  # could not even start it (no memory for fork, disk full, ...): a failed attempt
        resume = live.relaunch_resume
        bad_step = getattr(e, "checkpoint_step", None)
        if bad_step is not None:  # a trainer launcher found its resume target gone or rewritten
            sup.registry.mark_corrupt(bad_step, str(e))
            sup.report_corruptions()
            entry = sup.registry.rollback_target(bad_step)  # the next older healthy one, else the start
            sup.report_corruptions()
            resume = str(sup.registry.path_of(entry)) if entry is not None else ""
        restart(sup, f"relaunch failed: {e}", resume=resume, decision=live.relaunch_decision,
                skip_batches=live.relaunch_skip)
        return
    live.relaunch_skip = 0
    if live.relaunch_decision is not None:
        decision, did = live.relaunch_decision
        live.relaunch_decision = None
        live.rollbacks += 1
        sup.outcome(decision, did, "done", f"relaunched attempt {live.launch_attempt} from "
                    f"{live.relaunch_resume or 'the start'} with constraints {format_values(live.constraints)}")


def launch(sup: Supervisor, *, resume: str | None, reason: str, skip_batches: int = 0) -> None:
    live = sup.live
    attempt = max(live.attempt, live.launch_attempt) + (1 if live.attempts_started else 0)
    live.worker = sup.launcher.start(attempt, resume=Path(resume) if resume else None,
                                     constraints=sup._constraint_overrides(), skip_batches=skip_batches,
                                     all_constraints=dict(live.constraints) if live.attempts_started else None,
                                     clock=sup.clock)
    live.launch_attempt = live.attempt = attempt
    live.attempts_started += 1
    live.step = None
    live.worker_final_status = None
    with live.lock:
        live.last_heartbeat = live.last_progress = None
        live.outbox = []
    live.unacked.clear()
    sup.journal.note(f"launched worker attempt {attempt} ({reason})", event="launch", reason=reason, attempt=attempt,
                     resume=resume or None, argv=live.worker.argv, pid=live.worker.pid,
                     constraints=dict(live.constraints), skip_batches=skip_batches)
    sup.files.write_supervisor_info(sup.url, sup.port,
                                    worker=live.worker.to_dict())
    sup.set_state(RunState.STARTING, f"launched attempt {attempt} ({reason})")

