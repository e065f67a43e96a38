"""Liveness, deadlines and worker exits, checked on the supervisor's loop thread.

    check_liveness   a worker that sent nothing since its start, stopped heartbeating (frozen),
                     stopped making steps (hung) or ignores commands is restarted
    check_timers     the relaunch back-off, an approval's deadline, decisions a dead supervisor
                     sent that were never acknowledged, a halt's grace period
    exited_worker    a worker process that ended (the loop drains its last messages first)
    on_worker_exit   what its end means: a halt done, the run completed, a bad config, a crash
"""

from __future__ import annotations

import json

from rlguard.orchestrator.acting import answer_approval
from rlguard.orchestrator.commands import CommandKind
from rlguard.orchestrator.launcher import WorkerProcess, describe_exit, tail
from rlguard.orchestrator.restarts import finish_halt, relaunch, restart
from rlguard.orchestrator.run_context import RunContext
from rlguard.orchestrator.state import ExitCode, RunState
from rlguard.policies.decision import Action, Phase


def check_liveness(ctx: RunContext) -> None:
    live, now = ctx.live, ctx.clock()
    w = live.worker
    if w is None or live.state not in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED,
                                       RunState.ROLLING_BACK):
        return
    with live.lock:
        hb, progress, hb_paused = live.last_heartbeat, live.last_progress, live.heartbeat_paused
    if hb is None:
        if now - w.started > ctx.sc.startup_timeout_s:
            restart(ctx, f"worker sent nothing within startup_timeout_s={ctx.sc.startup_timeout_s:g}")
        return
    if now - hb > ctx.sc.heartbeat_timeout_s:
        restart(ctx, f"no heartbeat for {now - hb:.1f} s > heartbeat_timeout_s={ctx.sc.heartbeat_timeout_s:g} "
                "(frozen)")
    elif progress is not None and not (live.paused or hb_paused) and now - progress > ctx.sc.step_timeout_s:
        restart(ctx, f"no training progress for {now - progress:.1f} s > step_timeout_s="
                f"{ctx.sc.step_timeout_s:g} (hung)")
    else:
        for sent in list(live.unacked.values()):
            if now - sent.sent_at > ctx.sc.command_timeout_s:
                restart(ctx, f"command {sent.command.kind.value} not applied within command_timeout_s="
                        f"{ctx.sc.command_timeout_s:g} (worker suspect)")
                break
    stall = getattr(ctx.monitors, "check_stall", None)
    if stall is not None and not live.paused:
        ctx.recorder.alerts(stall(ctx.wall()))


def check_timers(ctx: RunContext) -> None:
    live, now = ctx.live, ctx.clock()
    if live.state is RunState.RESTARTING and live.relaunch_at is not None and now >= live.relaunch_at:
        relaunch(ctx)
    if live.approval is not None and now >= live.approval.deadline:
        approve = getattr(ctx.approval_cfg, "on_timeout", "deny") == "approve"
        answer_approval(ctx, live.approval.decision_id, approve, by="timeout")
    for did, (decision, deadline) in list(ctx.orphan_decisions.items()):
        if now >= deadline or live.worker is None:
            del ctx.orphan_decisions[did]
            if decision.action is Action.ROLLBACK and decision.target_step is not None:
                ctx.release_rollback_target(decision.target_step)
            ctx.outcome(decision, did, Phase.SKIPPED, "abandoned: sent by a supervisor that died, and the worker "
                        "never acknowledged it")
    if live.halting is not None:
        decision, did, deadline = live.halting
        if live.worker is not None and not live.worker.poll()[0] and now >= deadline:
            live.worker.stop(0.0, clock=ctx.clock, sleep=ctx.sleep)


def exited_worker(ctx: RunContext) -> tuple[WorkerProcess, int | None] | None:
    """The worker process and its exit code once it has ended, else None."""
    w = ctx.live.worker
    if w is None:
        return None
    exited, rc = w.poll()
    return (w, rc) if exited else None


def on_worker_exit(ctx: RunContext, w: WorkerProcess, rc: int | None) -> None:
    live = ctx.live
    desc = describe_exit(rc)
    if live.halting is not None:
        finish_halt(ctx, desc)
        return
    if live.state.is_final:
        return
    if rc is None and live.worker_final_status is None:
        live.worker_final_status = _status_file(ctx, w)  # a reattached worker's last words
    pending_load = next((s for s in live.unacked.values() if s.command.kind is CommandKind.LOAD), None)
    finished = live.worker_final_status == "completed" and (rc == 0 or rc is None)
    if finished or (rc == 0 and pending_load is None and live.worker_final_status is None):
        _skip_unapplied(ctx, f"the worker finished at step {live.step} before applying it")
        ctx.set_state(RunState.COMPLETED, f"worker attempt {live.attempt} finished at step {live.step} ({desc})")
        return
    if rc is None and live.worker_final_status is None:
        ctx.set_state(RunState.UNKNOWN, f"worker pid {w.pid} is gone and left no status")
    if pending_load is not None and pending_load.decision is not None:
        live.unacked.pop(pending_load.command.id, None)
        p = pending_load.command.params
        live.constraints.update(p.get("constraints") or {})
        restart(ctx, f"worker {desc} during in-process rollback", resume=p["path"],
                    decision=(pending_load.decision, pending_load.command.decision_id),
                    skip_batches=int(p.get("skip_batches", 0)))
        return
    if rc == int(ExitCode.USAGE) and live.step is None:
        fail_bad_config(ctx, w, desc)
        return
    restart(ctx, f"worker {desc}")


def _skip_unapplied(ctx: RunContext, why: str) -> None:
    """Decisions whose command the worker never acknowledged before it finished: each still gets
    its one outcome (skipped), so no decision is left open in the journal."""
    live = ctx.live
    with live.lock:
        pending, live.outbox = list(live.unacked.values()), []
        live.unacked.clear()
    for sent in pending:
        if sent.decision is not None and sent.command.kind is not CommandKind.STOP:
            ctx.outcome(sent.decision, sent.command.decision_id, Phase.SKIPPED, why)


def fail_bad_config(ctx: RunContext, w: WorkerProcess, desc: str) -> None:
    """The worker exited 2 (bad usage/config, the `rlguard run` convention) before its first step:
    a relaunch would fail the same way, so the run fails now instead of spending the restart
    budget with backoff. The worker's last log lines go to the journal: they name the problem."""
    log_tail = tail(w.log_path)[-2000:]
    last_line = next((x.strip() for x in reversed(log_tail.splitlines()) if x.strip()), "")
    reason = (f"worker attempt {w.attempt} {desc} before its first step: bad worker configuration or command "
              f"line, not retried (fix it, then start the run again)" + (f"; worker said: {last_line}" if last_line
                                                                           else ""))
    ctx.recorder.note(reason, event="worker_bad_config", attempt=w.attempt, exit_code=int(ExitCode.USAGE),
                     worker_log_tail=log_tail)
    ctx.set_state(RunState.FAILED, reason)


def _status_file(ctx: RunContext, w: WorkerProcess) -> str | None:
    """RUN/worker-status.json, when it was written by this very worker process."""
    try:
        doc = json.loads((ctx.files.run_dir / "worker-status.json").read_text())
    except (OSError, ValueError):
        return None
    # pid: a plain worker; attempt: torchrun, whose rank 0 is a grandchild with another pid
    mine = doc.get("pid") == w.pid or int(doc.get("attempt") or -1) >= w.attempt
    return str(doc.get("status")) if mine else None
