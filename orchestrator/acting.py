"""Carrying out decisions: the `act` of the supervisor's loop, and how each one ends.

Every decision is journaled as `decided` before anything happens, then exactly one outcome:
done | failed | skipped | denied. Modes: `advise` only records what would be done
(skipped); `approve` pauses the worker at its next step boundary and waits for an operator
(or the policies' approval timeout rule); `auto` acts.

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
    halt      -> stop command; the worker's process group is killed after stop_grace_s
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from orchestrator.commands import Ack, Command, CommandKind
from orchestrator.launcher import WorkerProcess, describe_exit, tail
from orchestrator.live import PendingApproval, SentCommand, format_values
from orchestrator.state import ExitCode, RunState
from policies.decision import Action, Decision
from policies.view import Health
from ppo.checkpoint_files import CheckpointError, verify_checkpoint

if TYPE_CHECKING:
    from orchestrator.supervisor import Supervisor


def carry_out(sup: Supervisor, d: Decision, *, alerts=(), source: str = "policy") -> str:
    """Journal `d` as decided, then act according to its mode. Returns the decision_id."""
    live = sup.live
    target = None
    if d.action is Action.ROLLBACK and d.target_step is not None:
        entry = sup.registry.get(d.target_step)
        target = {"step": d.target_step, "path": str(sup.registry.path_of(entry)) if entry else None}
    did = sup.journal.decided(d, alerts=alerts, constraints=live.constraints, target=target,
                              source="operator" if source == "operator" else "policy")
    if source != "policy":
        sup.operator_decisions.add(did)
    sup.sinks.on_decision(d, "decided", "", decision_id=did, reason=d.reason)
    if d.mode == "advise" and d.action is not Action.NOTIFY:
        sup.outcome(d, did, "skipped", f"advise mode: would {d.action.value}; not carried out")
    elif d.mode == "approve" and d.action is not Action.NOTIFY:
        request_approval(sup, d, did)
    else:
        execute(sup, d, did)
    return did


def execute(sup: Supervisor, d: Decision, did: str) -> None:
    live = sup.live
    if d.action is Action.NOTIFY:
        sup.outcome(d, did, "done", "notified")
    elif d.action in (Action.TIGHTEN, Action.RELAX):
        changes = {k: v for k, v in d.params.items() if live.constraints.get(k) != v}
        if not changes:
            sup.outcome(d, did, "skipped", "constraints already at these values")
        elif live.worker is None or live.state is RunState.RESTARTING:
            live.constraints.update(changes)  # the relaunch passes them as overrides
            sup.outcome(d, did, "done", f"recorded for the relaunch: {format_values(changes)}")
        elif not getattr(sup.launcher, "accepts_commands", True):
            # verl / OpenRLHF read their knobs only at launch: in force from the next relaunch
            # (a rollback's), which passes them as the trainer's own flags.
            live.constraints.update(changes)
            sup.outcome(d, did, "done", f"recorded for the next relaunch ({sup.sc.launcher} reads its knobs only "
                        f"at launch): {format_values(changes)}")
        else:
            sup.send(Command(CommandKind.SET_CONSTRAINTS, changes, decision_id=did), d)
    elif d.action is Action.ROLLBACK:
        rollback(sup, d, did)
    elif d.action is Action.HALT:
        halt(sup, d, did, d.reason)


def rollback(sup: Supervisor, d: Decision, did: str) -> None:
    """A policy rollback: the newest healthy checkpoint at or before the target that verifies."""
    live = sup.live
    wanted = d.target_step if d.target_step is not None else (live.step or 0)
    if _in_process_possible(sup):
        # The worker verifies the checksums before it reads anything (and says so if they fail):
        # verifying here too would double the rollback time for large checkpoints.
        entry = _newest_healthy(sup, wanted)
    else:
        entry = sup.registry.rollback_target(wanted + 1)  # verifies checksums, skips corrupt ones
        sup.report_corruptions()
    if entry is None:
        _rollback_impossible(sup, d, did, f"no loadable healthy checkpoint at or before step {wanted}")
        return
    note = "" if entry.step == wanted else f" (step {wanted} unusable: fell back to step {entry.step})"
    _roll_back(sup, d, did, entry, note)


def rollback_to_entry(sup: Supervisor, d: Decision, did: str) -> None:
    """An operator rollback to exactly d.target_step (any health but corrupt), verified first."""
    entry = sup.registry.get(int(d.target_step or 0))
    if entry is None:
        sup.outcome(d, did, "failed", f"checkpoint step {d.target_step} is gone")
        return
    try:
        verify_checkpoint(sup.registry.path_of(entry))
    except CheckpointError as e:
        sup.journal.checkpoint(entry.step, str(sup.registry.path_of(entry)), "corrupt", note=e.reason)
        sup.outcome(d, did, "failed", f"checkpoint step {entry.step} failed verification: {e.reason}")
        return
    _roll_back(sup, d, did, entry, "")


def _rollback_impossible(sup: Supervisor, d: Decision, did: str, why: str) -> None:
    sup.outcome(d, did, "failed", why)
    carry_out(sup, Decision(Action.HALT, d.step, f"rollback impossible: {why} (decision {did})", alerts=d.alerts),
              source="supervisor")


def _roll_back(sup: Supervisor, d: Decision, did: str, entry, note: str) -> None:
    live = sup.live
    path = str(sup.registry.path_of(entry))
    new_constraints = {**live.constraints, **d.params}
    sup.registry.hold(entry.step)  # retention and later alerts must leave the target alone until it is loaded
    if _in_process_possible(sup):
        params = {"path": path, "step": entry.step, "skip_batches": d.skip_batches, "constraints": new_constraints,
                  "attempt": max(live.attempt, live.launch_attempt) + 1}
        sup.send(Command(CommandKind.LOAD, params, decision_id=did), d)
        sup.set_state(RunState.ROLLING_BACK, f"in-process rollback to step {entry.step}{note}")
    else:
        live.constraints = new_constraints
        why = "restart mode" if sup.sc.rollback_mode == "restart" else "worker not running"
        sup.restart(f"rollback to step {entry.step}{note} by relaunch ({why})", resume=path, decision=(d, did),
                    skip_batches=d.skip_batches)


def _in_process_possible(sup: Supervisor) -> bool:
    live = sup.live
    return (sup.sc.rollback_mode == "in_process" and live.worker is not None
            and live.state in (RunState.RUNNING, RunState.PAUSED))


def _newest_healthy(sup: Supervisor, at_or_before: int):
    healthy = [e for e in sup.registry.entries() if e.health is Health.HEALTHY and e.step <= at_or_before]
    return healthy[-1] if healthy else None


def halt(sup: Supervisor, d: Decision | None, did: str, reason: str) -> None:
    live = sup.live
    if live.worker is None or live.worker.poll()[0]:
        if d is not None:
            sup.outcome(d, did, "done", "no worker running")
        sup.set_state(RunState.HALTED, reason)
        return
    live.halting = (d, did, sup.clock() + sup.sc.stop_grace_s)
    if not getattr(sup.launcher, "accepts_commands", True):
        # No stop command to send: SIGTERM the trainer's process group now (SIGKILL after
        # stop_grace_s); the exit is then handled as a halt (on_worker_exit).
        live.worker.stop(sup.sc.stop_grace_s, clock=sup.clock, sleep=sup.sleep)
        return
    sup.send(Command(CommandKind.STOP, {"reason": reason}, decision_id=did), d)


def request_approval(sup: Supervisor, d: Decision, did: str) -> None:
    live = sup.live
    timeout_s = float(getattr(sup.approval_cfg, "timeout_s", 1800.0))
    live.approval = PendingApproval(d, did, sup.clock() + timeout_s)
    sup.journal.note(f"waiting up to {timeout_s:g} s for an operator to approve {d.action.value} ({did})",
                     event="approval_requested", decision_id=did)
    sup.send(Command(CommandKind.PAUSE, {"reason": f"approval of {did}"}))
    sup.set_state(RunState.PAUSED, f"awaiting approval of {d.action.value} ({did})")


def answer_approval(sup: Supervisor, decision_id: str, approve: bool, by: str) -> bool:
    live = sup.live
    pa = live.approval
    if pa is None or pa.decision_id != decision_id:
        return False
    live.approval = None
    sup.journal.operator("approve" if approve else "deny", {"decision_id": decision_id}, source=by)
    if not live.operator_paused:
        sup.send(Command(CommandKind.RESUME, {}))
        sup.set_state(RunState.RUNNING, f"{decision_id} {'approved' if approve else 'denied'} by {by}")
    if approve:
        execute(sup, pa.decision, pa.decision_id)
    else:
        sup.outcome(pa.decision, pa.decision_id, "denied", f"denied by {by}")
    return True


def on_command_outcome(sup: Supervisor, sent: SentCommand, ack: Ack) -> None:
    """The worker applied a command (ack.ok) or could not; finish its decision."""
    live, cmd, d = sup.live, sent.command, sent.decision
    if cmd.kind is CommandKind.LOAD:
        step = int(cmd.params["step"])
        if ack.ok:
            live.attempt = int(cmd.params["attempt"])
            live.constraints.update(cmd.params.get("constraints") or {})
            live.rollbacks += 1
            live.step = step
            sup.apply_registry_change(sup.registry.note_rollback(step))
            if d is not None:
                sup.outcome(d, cmd.decision_id, "done", f"restored step {step} in-process as attempt {live.attempt}, "
                            f"skipped {cmd.params.get('skip_batches', 0)} batches, constraints "
                            f"{format_values(cmd.params.get('constraints') or {})}")
            sup.set_state(RunState.RUNNING, f"rolled back in-process to step {step} (attempt {live.attempt})")
            release_rollback_target(sup, step)  # after the outcome is journaled: pruning does disk I/O
            return
        # The worker could not load it. A checkpoint that fails verification here was refused
        # before anything was read: the worker is intact, load the previous healthy one in-process.
        # One that verifies failed for another reason: the worker's state is suspect, relaunch.
        entry = sup.registry.rollback_target(step + 1)
        sup.report_corruptions()
        if entry is not None:
            sup.registry.hold(entry.step)
        if entry is None or entry.step != step:
            release_rollback_target(sup, step)
        if (entry is not None and entry.step != step and d is not None and live.worker is not None
                and live.state is RunState.ROLLING_BACK):
            params = dict(cmd.params, path=str(sup.registry.path_of(entry)), step=entry.step)
            sup.send(Command(CommandKind.LOAD, params, decision_id=cmd.decision_id), d)
            sup.journal.note(f"checkpoint step {step} refused by the worker ({ack.detail}); loading step "
                             f"{entry.step} instead", event="rollback_fallback", decision_id=cmd.decision_id)
            return
        # The decision's constraints stay in force whatever happens next: a relaunch without them
        # would replay the collapse the rollback was meant to stop.
        constraints = cmd.params.get("constraints") or {}
        live.constraints.update(constraints)
        where = f"step {entry.step}" if entry is not None else "the start (no older healthy checkpoint)"
        sup.journal.note(f"worker could not load step {step} ({ack.detail}): relaunching from {where} with "
                         f"constraints {format_values(constraints)}", event="rollback_fallback",
                         decision_id=cmd.decision_id, resume_step=entry.step if entry is not None else None,
                         constraints=dict(constraints))
        resume = str(sup.registry.path_of(entry)) if entry is not None else ""  # "": from the start
        sup.restart(f"in-process rollback failed ({ack.detail})", resume=resume,
                    decision=(d, cmd.decision_id) if d is not None else None,
                    skip_batches=int(cmd.params.get("skip_batches", 0)) if entry is not None else 0)
        return
    if d is None:
        sup.journal.note(f"command {cmd.kind.value} {'applied' if ack.ok else 'failed'}: {ack.detail}",
                         event="command", command=cmd.to_dict(), ok=ack.ok, step=ack.step)
        return
    if cmd.kind is CommandKind.STOP:
        return  # the halt finishes when the worker exits
    if cmd.kind is CommandKind.SET_CONSTRAINTS and ack.ok:
        live.constraints.update(cmd.params)
    phase = "done" if ack.ok else "failed"
    sup.outcome(d, cmd.decision_id, phase, f"{format_values(cmd.params)} at step {ack.step}" if ack.ok else ack.detail)


def on_worker_exit(sup: Supervisor, w: WorkerProcess, rc: int | None) -> None:
    live = sup.live
    desc = describe_exit(rc)
    if live.halting is not None:
        d, did, _ = live.halting
        live.halting = None
        if d is not None:
            sup.outcome(d, did, "done", f"worker stopped ({desc})")
        sup.set_state(RunState.HALTED, d.reason if d is not None else "halted")
        return
    if live.state.is_final:
        return
    if rc is None and live.worker_final_status is None:
        live.worker_final_status = _status_file(sup, w)  # a reattached worker's last words
    pending_load = next((s for s in live.unacked.values() if s.command.kind is CommandKind.LOAD), None)
    finished = live.worker_final_status == "completed" and (rc == 0 or rc is None)
    if finished or (rc == 0 and pending_load is None and live.worker_final_status is None):
        _skip_unapplied(sup, f"the worker finished at step {live.step} before applying it")
        sup.set_state(RunState.COMPLETED, f"worker attempt {live.attempt} finished at step {live.step} ({desc})")
        return
    if rc is None and live.worker_final_status is None:
        sup.set_state(RunState.UNKNOWN, f"worker pid {w.pid} is gone and left no status")
    if pending_load is not None and pending_load.decision is not None:
        live.unacked.pop(pending_load.command.id, None)
        p = pending_load.command.params
        live.constraints.update(p.get("constraints") or {})
        sup.restart(f"worker {desc} during in-process rollback", resume=p["path"],
                    decision=(pending_load.decision, pending_load.command.decision_id),
                    skip_batches=int(p.get("skip_batches", 0)))
        return
    if rc == int(ExitCode.USAGE) and live.step is None:
        fail_bad_config(sup, w, desc)
        return
    sup.restart(f"worker {desc}")


def release_rollback_target(sup: Supervisor, step: int | None) -> None:
    """A held rollback target is no longer needed: retention may now prune it (journaled)."""
    from orchestrator.registry import RegistryChange

    pruned = sup.registry.release(step)
    if pruned:
        sup.apply_registry_change(RegistryChange(pruned=pruned))


def release_relaunch_target(sup: Supervisor) -> None:
    """The relaunched worker is up (it loaded its checkpoint): release what was held for it."""
    release_rollback_target(sup, None)


def carry_pending_constraints(sup: Supervisor, why: str) -> None:
    """set_constraints decisions the worker never applied before it was stopped: the relaunch
    applies them (RLGUARD_CONSTRAINTS / --set), so they are done, not lost."""
    live = sup.live
    for cid, sent in list(live.unacked.items()):
        if sent.command.kind is CommandKind.SET_CONSTRAINTS and sent.decision is not None:
            live.unacked.pop(cid, None)
            live.constraints.update(sent.command.params)
            sup.outcome(sent.decision, sent.command.decision_id, "done",
                        f"recorded for the relaunch ({why}): {format_values(sent.command.params)}")
    with live.lock:
        live.outbox = [c for c in live.outbox if c.kind is not CommandKind.SET_CONSTRAINTS or c.id in live.unacked]


def _skip_unapplied(sup: Supervisor, why: str) -> None:
    """Decisions whose command the worker never acknowledged before it finished: each still gets
    its one outcome (skipped), so no decision is left open in the journal."""
    live = sup.live
    with live.lock:
        pending, live.outbox = list(live.unacked.values()), []
        live.unacked.clear()
    for sent in pending:
        if sent.decision is not None and sent.command.kind is not CommandKind.STOP:
            sup.outcome(sent.decision, sent.command.decision_id, "skipped", why)


def fail_bad_config(sup: Supervisor, w: WorkerProcess, desc: str) -> None:
    """The worker exited 2 (bad usage/config, the `rlguard run` convention) before its first step:
    a relaunch would fail the same way, so the run fails now instead of spending the restart
    budget with backoff. The worker's last log lines go to the journal: they name the problem."""
    log_tail = tail(w.log_path)[-2000:]
    last_line = next((x.strip() for x in reversed(log_tail.splitlines()) if x.strip()), "")
    reason = (f"worker attempt {w.attempt} {desc} before its first step: bad worker configuration or command "
              f"line, not retried (fix it, then start the run again)" + (f"; worker said: {last_line}" if last_line
                                                                           else ""))
    sup.journal.note(reason, event="worker_bad_config", attempt=w.attempt, exit_code=int(ExitCode.USAGE),
                     worker_log_tail=log_tail)
    sup.set_state(RunState.FAILED, reason)


def _status_file(sup: Supervisor, w: WorkerProcess) -> str | None:
    """RUN/worker-status.json, when it was written by this very worker process."""
    try:
        doc = json.loads((sup.files.run_dir / "worker-status.json").read_text())
    except (OSError, ValueError):
        return None
    # pid: a plain worker; attempt: torchrun, whose rank 0 is a grandchild with another pid
    mine = doc.get("pid") == w.pid or int(doc.get("attempt") or -1) >= w.attempt
    return str(doc.get("status")) if mine else None
