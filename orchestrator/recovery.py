"""`rlguard run --resume RUN`: rebuild a supervisor's state after it died, then reattach.

What comes back from where:
- policy engine (rollback budget, cooldown, halt): the journal's decisions and outcomes
  (`PolicyEngine.replay_journal`);
- decisions decided but never finished: abandoned with outcome `skipped` (never done twice;
  if the trouble persists the detectors raise it again);
- checkpoint health: registry.json, reconciled with the directories and the journal;
- restart budget and rollback count: the journal's launch notes and rollback outcomes;
- detector state: metrics.jsonl replayed silently through the monitors (alerts already
  handled are not raised twice; events newer than the file arrive from the worker's buffer);
- the worker: still alive -> reattached (its SDK finds the new address in supervisor.json);
  gone -> worker-status.json says whether it completed, else UNKNOWN -> restart from the
  last healthy checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from rlguard.monitors.events import BadEvent, MetricEvent, parse_event_line
from rlguard.orchestrator.restarts import restart
from rlguard.orchestrator.run_context import RunContext
from rlguard.orchestrator.state import RunState
from rlguard.policies.decision import Action, Decision, Phase

log = logging.getLogger("rlguard.recovery")

FINAL_STATES = {"completed": RunState.COMPLETED, "halted": RunState.HALTED, "failed": RunState.FAILED}


def recover(ctx: RunContext, observe: Callable[[MetricEvent], None]) -> None:
    """Rebuild `ctx` from the run directory; events the dead supervisor never saw go to
    `observe` (the loop's full observe -> act path) once the worker is reattached."""
    live, journal = ctx.live, ctx.journal
    entries = journal.recovered.entries
    if journal.recovered.bad_lines:
        ctx.recorder.note(f"journal had {len(journal.recovered.bad_lines)} unreadable line(s) (torn tail: "
                     f"{journal.recovered.torn_tail}); ignored", event="journal_repair")
    last_state = next((e for e in reversed(entries) if e.get("kind") == "state"), None)
    if last_state is not None and last_state.get("state") in FINAL_STATES:
        live.state = FINAL_STATES[last_state["state"]]
        live.reason = f"already {last_state['state']}: {last_state.get('reason', '')}"
        return

    ctx.engine.replay_journal(journal.decision_history())
    events = _read_metrics(ctx)
    for e in journal.pending_decisions():
        d = Decision.from_dict(e["decision"])
        if e.get("source", "policy") != "policy":
            ctx.operator_decisions.add(e["decision_id"])
        done = _carried_out_meanwhile(d, e, events)
        if done:
            ctx.outcome(d, e["decision_id"], Phase.DONE, done)
        elif d.action in (Action.ROLLBACK, Action.TIGHTEN, Action.RELAX):
            # The command may be in the worker's hands: its ack (named after the decision) decides.
            ctx.orphan_decisions[e["decision_id"]] = (d, ctx.clock() + ctx.sc.command_timeout_s)
        else:
            ctx.outcome(d, e["decision_id"], "skipped",
                        "abandoned: the supervisor stopped before finishing it (a persisting problem is raised again)")

    launches = [e for e in entries if e.get("kind") == "note" and e.get("event") == "launch"]
    restarts = sum(1 for e in launches if e.get("reason") == "restart")
    live.restarts_left = max(0, ctx.sc.max_restarts - restarts)
    live.attempts_started = len(launches)
    live.rollbacks = sum(1 for d, phase in journal.decision_history(("policy", "operator")) if d.action is Action.ROLLBACK and phase == "done")
    live.initial_constraints = ctx.initial_constraints()
    live.constraints = ctx.starting_constraints()
    if launches:
        live.constraints.update(launches[-1].get("constraints") or {})
    max_attempt = max((int(e.get("attempt") or 0) for e in launches), default=0)
    live.attempt = live.launch_attempt = max_attempt

    # Events up to the dead supervisor's last journal line were seen by it (any alert they raised
    # is in the journal): they only warm the detectors. Later ones arrived while no supervisor ran:
    # they go through the full loop once the worker is reattached, so a collapse that began
    # meanwhile is acted on.
    cutoff = max((float(e.get("time") or 0) for e in entries), default=0.0)
    seen = [ev for ev in events if (ev.time or 0) <= cutoff]
    unseen = [ev for ev in events if (ev.time or 0) > cutoff]
    _replay_metrics(ctx, seen)
    # Rollback targets the dead supervisor held: keep those of rollbacks still awaiting an ack.
    awaited = {d.target_step for d, _ in ctx.orphan_decisions.values() if d.action is Action.ROLLBACK}
    for step in sorted(set(ctx.registry.held) - awaited):
        ctx.release_rollback_target(step)
    _reattach(ctx)
    for ev in unseen:
        try:
            observe(ev)
        except Exception as e:  # a supervisor bug must not stop the recovery (nor the run): log, go on
            log.exception("could not handle step %s while recovering; the run goes on", ev.step)
            ctx.recorder.note(f"supervisor internal error while recovering at step {ev.step}: "
                              f"{type(e).__name__}: {e}", event="internal_error")


def _read_metrics(ctx: RunContext) -> list:
    path = ctx.files.run_dir / "metrics.jsonl"
    out = []
    if path.exists():
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                try:
                    out.append(parse_event_line(line, lineno))
                except BadEvent:
                    continue
    return out


def _carried_out_meanwhile(d: Decision, decided: dict, events: list) -> str:
    """Evidence in metrics.jsonl that the worker carried out a decision whose outcome the dead
    supervisor never journaled: a new attempt starting right after a rollback's target, or the
    tightened values in force. "" when there is none."""
    t = float(decided.get("time") or 0)
    before = [ev for ev in events if (ev.time or 0) < t]
    after = [ev for ev in events if (ev.time or 0) >= t]
    if d.action is Action.ROLLBACK and d.target_step is not None:
        last_attempt = max((ev.attempt or 0 for ev in before), default=0)
        first_new = next((ev for ev in after if (ev.attempt or 0) > last_attempt), None)
        if first_new is not None and first_new.step == d.target_step + 1:
            return (f"carried out while no supervisor ran: metrics.jsonl shows attempt {first_new.attempt} "
                    f"resuming at step {first_new.step}")
    if d.action in (Action.TIGHTEN, Action.RELAX) and d.params:
        for ev in after:
            if all(ev.metrics.get(k) is not None and abs(float(ev.metrics[k]) - float(v)) <= 1e-12 * max(1.0, abs(v))
                   for k, v in d.params.items()):
                return f"carried out while no supervisor ran: in force at step {ev.step} (metrics.jsonl)"
    return ""


def _replay_metrics(ctx: RunContext, events: list) -> None:
    """Warm the detectors on events the previous supervisor already handled, silently."""
    live = ctx.live
    # A trainer launcher's knobs are the ones it put on the command line (journaled with each
    # launch), not what the trainer logs (a scheduled lr, an adaptive KL beta).
    for event in events:
        attempt = event.attempt or 0
        live.last_seen[attempt] = max(event.step, live.last_seen.get(attempt, -1))
        live.attempt = max(live.attempt, attempt)
        live.step = event.step
        ctx.adopt_constraints(event.metrics, in_force=True)
        ctx.monitors.update(event)


def _reattach(ctx: RunContext) -> None:
    live = ctx.live
    info = (ctx.previous_info or {}).get("worker") or {}
    # a trainer launcher's reattach adds its log feeder
    worker = ctx.launcher.reattach(info, clock=ctx.clock, run_dir=ctx.files.run_dir) if info else None
    if worker is not None:
        live.worker = worker
        live.launch_attempt = worker.attempt
        live.attempt = max(live.attempt, worker.attempt)
        live.note_heartbeat(ctx.clock(), 0.0, False)  # grace: a full heartbeat timeout to hear from it
        ctx.files.write_supervisor_info(ctx.url, ctx.port, worker=worker.to_dict())
        ctx.set_state(RunState.RUNNING, f"reattached to worker pid {worker.pid} (attempt {worker.attempt})")
        return
    status = {}
    try:
        status = json.loads((ctx.files.run_dir / "worker-status.json").read_text())
    except (OSError, ValueError):
        pass
    if status.get("status") == "completed" and int(status.get("attempt", -1)) >= live.launch_attempt:
        ctx.set_state(RunState.COMPLETED, f"the worker completed at step {status.get('step')} while no "
                      "supervisor was running")
        return
    ctx.set_state(RunState.UNKNOWN, "the worker is gone and did not record completing: restarting it")
    restart(ctx, "worker gone while the supervisor was down")


def on_orphan_ack(ctx: RunContext, ack) -> None:
    """An ack for a command a previous supervisor sent: finish the decision it carried out."""
    did = ack.command_id.rsplit(":", 1)[0] if ":" in ack.command_id else ""
    orphan = ctx.orphan_decisions.pop(did, None)
    if orphan is None:
        return
    d, _ = orphan
    try:
        _finish_orphan(ctx, d, did, ack)
    finally:
        if d.action is Action.ROLLBACK and d.target_step is not None:
            ctx.release_rollback_target(d.target_step)  # held by the previous supervisor until this rollback ended


def _finish_orphan(ctx: RunContext, d: Decision, did: str, ack) -> None:
    if not ack.ok:
        ctx.outcome(d, did, Phase.FAILED, f"the worker could not apply it (after a supervisor restart): {ack.detail}")
        return
    if d.action is Action.ROLLBACK and d.target_step is not None:
        ctx.live.rollbacks += 1
        ctx.apply_registry_change(ctx.registry.note_rollback(d.target_step))
    ctx.outcome(d, did, Phase.DONE, f"acknowledged by the worker after a supervisor restart: {ack.detail}")
