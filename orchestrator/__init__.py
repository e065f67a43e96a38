"""rlguard's supervisor: launches the training worker and keeps the run healthy.

Responsibilities (one module each):
    spec.py          the run config (trainer / monitors / policies / supervisor sections), validated
    state.py         RunState (documented transitions), ExitCode, RunResult
    live.py          LiveRun: what the supervisor knows right now
    supervisor.py    the loop: observe -> detect -> decide -> act -> record
    liveness.py      frozen / hung / silent workers, deadlines (relaunch back-off, approvals, halts)
    restarts.py      kill, back off, relaunch from a checkpoint; the one place the budget is spent
    acting.py        carrying out decisions (modes auto / advise / approve) and their outcomes
    operator.py      operator requests (pause, resume, rollback, relax, halt, approve), status
    recovery.py      `rlguard run --resume`: rebuild from the journal, reattach or relaunch
    launcher.py      the worker as a child in its own process group; exit descriptions
    trainer_launch.py  trainers without an SDK (verl, OpenRLHF): log feeder, checkpoint pointers,
                     rollback by relaunch; verl_launch.py, openrlhf_launch.py, trainer_specs.py,
                     trainer_exit.py (docs/INTEGRATIONS.md)
    control_api.py   the one HTTP port: worker channel, control API (bearer token), extra routes
    periodic.py      APScheduler jobs (liveness, checkpoint cadence, disk, evaluation requests)
    sinks.py         RunSink protocol + a fan-out that isolates sink failures
    commands.py      Command / Ack: what travels to the worker and back
    sdk.py           the worker side: connect(), report(), commands(), checkpoint_written()
    ppo_worker.py    the built-in PPO-max worker (ppo.trainer + the SDK)
    run_cli.py, control_cli.py   `rlguard run`, `rlguard status|pause|resume|rollback|relax|halt|approve`
    registry.py, journal.py      checkpoint health/retention; the fsynced decision journal

The supervisor must never be the reason a run dies: the worker runs in its own process
group and keeps training (buffering its events) if the supervisor goes away; a restarted
supervisor reattaches. Sinks, periodic jobs and the HTTP server fail without taking the
run down.
"""
