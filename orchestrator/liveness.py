"""Liveness and deadlines, checked on the supervisor's loop thread.

    check_liveness     a worker that sent nothing since its start, stopped heartbeating (frozen),
                       stopped making steps (hung) or ignores commands is restarted
    check_timers       the relaunch back-off, an approval's deadline, decisions a dead supervisor
                       sent that were never acknowledged, a halt's grace period
    check_worker_exit  a worker process that ended: drain its last messages, then decide

Each function takes the Supervisor and acts through it (restart, journal, sinks), so every
decision still happens in one place, on one thread.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING

from orchestrator.restarts import relaunch
from orchestrator.state import RunState
from policies.decision import Action

if TYPE_CHECKING:
    from orchestrator.supervisor import Supervisor


def check_liveness(sup: Supervisor) -> None:
    live, now = sup.live, sup.clock()
    w = live.worker
    if w is None or live.state not in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED,
                                       RunState.ROLLING_BACK):
        return
    with live.lock:
        hb, progress, hb_paused = live.last_heartbeat, live.last_progress, live.heartbeat_paused
    if hb is None:
        if now - w.started > sup.sc.startup_timeout_s:
            sup.restart(f"worker sent nothing within startup_timeout_s={sup.sc.startup_timeout_s:g}")
        return
    if now - hb > sup.sc.heartbeat_timeout_s:
        sup.restart(f"no heartbeat for {now - hb:.1f} s > heartbeat_timeout_s={sup.sc.heartbeat_timeout_s:g} "
                    "(frozen)")
    elif progress is not None and not (live.paused or hb_paused) and now - progress > sup.sc.step_timeout_s:
        sup.restart(f"no training progress for {now - progress:.1f} s > step_timeout_s="
                    f"{sup.sc.step_timeout_s:g} (hung)")
    else:
        for sent in list(live.unacked.values()):
            if now - sent.sent_at > sup.sc.command_timeout_s:
                sup.restart(f"command {sent.command.kind.value} not applied within command_timeout_s="
                            f"{sup.sc.command_timeout_s:g} (worker suspect)")
                break
    stall = getattr(sup.monitors, "check_stall", None)
    if stall is not None and not live.paused:
        for a in stall(sup.wall()):
            sup.journal.alert(a)
            sup.sinks.on_alert(a)
            live.note_alerts([a])


def check_timers(sup: Supervisor) -> None:
    live, now = sup.live, sup.clock()
    if live.state is RunState.RESTARTING and live.relaunch_at is not None and now >= live.relaunch_at:
        relaunch(sup)
    if live.approval is not None and now >= live.approval.deadline:
        from orchestrator.acting import answer_approval

        approve = getattr(sup.approval_cfg, "on_timeout", "deny") == "approve"
        answer_approval(sup, live.approval.decision_id, approve, by="timeout")
    for did, (decision, deadline) in list(sup.orphan_decisions.items()):
        if now >= deadline or live.worker is None:
            del sup.orphan_decisions[did]
            if decision.action is Action.ROLLBACK and decision.target_step is not None:
                from orchestrator.acting import release_rollback_target

                release_rollback_target(sup, decision.target_step)
            sup.outcome(decision, did, "skipped", "abandoned: sent by a supervisor that died, and the worker "
                        "never acknowledged it")
    if live.halting is not None:
        decision, did, deadline = live.halting
        if live.worker is not None and not live.worker.poll()[0] and now >= deadline:
            live.worker.stop(0.0, clock=sup.clock, sleep=sup.sleep)


def check_worker_exit(sup: Supervisor) -> None:
    w = sup.live.worker
    if w is None:
        return
    exited, rc = w.poll()
    if not exited:
        return
    while True:  # the worker's last words (final sync) may still be queued
        try:
            sup.handle(sup.inbox.get_nowait())
        except queue.Empty:
            break
    if sup.live.worker is not w:
        return
    sup.live.worker = None
    sup._exited_worker = w
    from orchestrator.acting import on_worker_exit

    on_worker_exit(sup, w, rc)

