"""`rlguard watch METRICS.jsonl`: supervise a run rlguard did not start, by its metrics file.

The file may also be a trainer's own log, tailed as it grows (orchestrator/logformats: verl's
file-logger JSONL or console log, OpenRLHF stdout, trl console output, a TensorBoard
directory, trainer_state.json, a W&B run directory): its format is detected once it has
content, or forced with --format NAME. Such logs are merged per step, so a step is handed to
the monitors when the next one starts (or when watch ends).

    rlguard watch runs/verl-7b/metrics.jsonl --config guard.yaml --out runs/verl-7b/watch \\
        --port 9400 --checkpoint-every 100 \\
        --hook rollback='ops/rollback.sh' --hook halt='ops/stop-job.sh' --hook notify='ops/page.sh'

The file is tailed (followed as it grows); each event goes through the same monitors
(MonitorStack) and policies as under `rlguard run`. rlguard cannot load a checkpoint into
somebody else's trainer, so actions are carried out by the user's hook commands:

- a hook is a shell command, run with the decision as JSON on stdin and the environment
  RLGUARD_ACTION, RLGUARD_STEP, RLGUARD_TARGET_STEP (rollback target, or empty),
  RLGUARD_PARAMS (JSON of the new constraint values), RLGUARD_REASON, RLGUARD_DECISION_ID,
  RLGUARD_RUN_DIR, RLGUARD_METRICS;
- exit 0 -> the decision is journaled `done`, anything else (or a timeout) -> `failed` with
  the exit status and the end of its output. A hook failure is journaled, never fatal;
  control characters in the environment values are spelled out (`\\x00`); watch waits for the
  hook's own shell only: a child it leaves running is not waited for (its output is not read);
- an action without a hook is journaled `skipped` ("no hook"), except notify, which is done by
  the journal, the dashboards and /metrics themselves;
- hooks run one at a time on the watch loop (the decision order is the action order): the
  file is read on when the hook returns, so keep them short (--hook-timeout-s bounds them);
- `advise` decisions are journaled `skipped`; `approve` ones too unless the policies say
  `approval.on_timeout: approve` (nobody can approve inside watch: use `rlguard run` for that).

Checkpoints: the watched trainer's checkpoints are unknown to rlguard, so the rollback target
is chosen among steps the trainer is *assumed* to checkpoint (--checkpoint-every N, with the
registry's health rule; policies/replay.py ReplaySimulator): the hook maps the target step to
its own checkpoint. When the trainer rolls back, the metrics' step goes back and a new
segment starts, as the monitors expect.

Config: a run config (orchestrator/spec.py); its monitors and policies sections are used,
`trainer:` kl_coef/clip_range/lr are the starting constraint values when the stream does not
carry them, `supervisor.checkpoints.confirm_steps` the confirmation window.
Exit codes: 0 stopped (idle timeout, SIGINT/SIGTERM), 2 bad usage/config, 3 a halt decision was
carried out by its hook.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.acting import Applier
from rlguard.orchestrator.coverage_log import CoverageLog
from rlguard.orchestrator.recorder import Recorder
from rlguard.orchestrator.spec import ConfigError, RunConfig, load_run_config, parse_run_config
from rlguard.policies.decision import CONSTRAINT_NAMES, Action, Decision, Phase

log = logging.getLogger("rlguard.watch")

EXIT_OK, EXIT_USAGE, EXIT_HALTED = 0, 2, 3
OUTPUT_TAIL_CHARS = 2000
# A file of garbage is thousands of bad lines: the first few are journaled (each an fsynced
# line), the rest counted in the watch_stopped note.
MAX_BAD_LINE_NOTES = 20
BAD_LINE_REASON_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HookRunner:
    """Runs the user's command for an action; returns (phase, outcome line). Never raises."""

    def __init__(self, hooks: dict[str, str], env: dict[str, str], timeout_s: float = 300.0):
        self.hooks = dict(hooks)
        self.env = dict(env)
        self.timeout_s = timeout_s

    def run(self, d: Decision, decision_id: str) -> tuple[Phase, str]:
        cmd = self.hooks.get(d.action.value)
        if cmd is None:
            if d.action is Action.NOTIFY:
                return Phase.DONE, "notified (journal, dashboards, /metrics)"
            return Phase.SKIPPED, (f"no hook for {d.action.value}: rlguard watch cannot act on this run itself; "
                               f"add --hook {d.action.value}='COMMAND'")
        env = {**os.environ, **{k: _printable(v) for k, v in self.env.items()},
               "RLGUARD_ACTION": d.action.value, "RLGUARD_STEP": str(d.step),
               "RLGUARD_TARGET_STEP": "" if d.target_step is None else str(d.target_step),
               "RLGUARD_PARAMS": json.dumps(d.params), "RLGUARD_REASON": _printable(d.reason),
               "RLGUARD_DECISION_ID": _printable(decision_id)}
        body = json.dumps({**d.to_dict(), "decision_id": decision_id}, allow_nan=True)
        try:
            return self._run(cmd, env, body)
        except Exception as e:  # noqa: BLE001 - a hook never takes the guard down: the decision gets an outcome
            return Phase.FAILED, f"hook {cmd!r} could not run: {type(e).__name__}: {e}"

    def _run(self, cmd: str, env: dict[str, str], body: str) -> tuple[Phase, str]:
        # Files, not pipes, for stdin and the output: a child the hook leaves behind (backgrounded,
        # or escaped from the group with setsid) can then hold nothing watch waits on; watch waits
        # for the hook's shell only, and no longer than the timeout.
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as output:
            stdin.write(body.encode("utf-8"))
            stdin.seek(0)
            try:
                # Its own process group: a timeout kills the shell *and* what it started.
                proc = subprocess.Popen(cmd, shell=True, stdin=stdin, stdout=output, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
            except OSError as e:
                return Phase.FAILED, f"hook {cmd!r} could not start: {e}"
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()  # the shell itself: SIGKILLed, it ends at once
                return Phase.FAILED, f"hook {cmd!r} timed out after {self.timeout_s:g} s (killed){_tail(_read_tail(output))}"
            text = _read_tail(output)
        if proc.returncode != 0:
            return Phase.FAILED, f"hook {cmd!r} exited {proc.returncode}{_tail(text)}"
        return Phase.DONE, f"hook {cmd!r} exited 0{_tail(text)}"


def _printable(text: str) -> str:
    """Control characters spelled out (\\x00): an environment value cannot hold a NUL, and a
    newline or an escape sequence in a reason should not reach a shell or a terminal raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _read_tail(f) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * OUTPUT_TAIL_CHARS))
    return f.read().decode("utf-8", "replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(text: str) -> str:
    text = (text or "").strip()
    return f": {text[-OUTPUT_TAIL_CHARS:]}" if text else ""


class Watcher:
    """observe (a metrics event) -> detect -> decide -> act (hooks) -> record (journal, sinks)."""

    def __init__(self, metrics_path: str | Path, run_dir: str | Path, config: RunConfig, *,
                 hooks: dict[str, str] | None = None, names: str = "rlguard", checkpoint_every: int = 50,
                 hook_timeout_s: float = 300.0, sinks: list | None = None):
        from rlguard.orchestrator.components import build_monitors
        from rlguard.orchestrator.journal import Journal
        from rlguard.orchestrator.sinks import SinkFanout
        from rlguard.policies.replay import ReplaySimulator

        self.metrics_path = Path(metrics_path).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.names = names
        self.monitors = build_monitors(config.monitors)
        self.policy_cfg = config.policies
        self.sim = ReplaySimulator(self.policy_cfg, checkpoint_every=checkpoint_every,
                                   confirm_steps=config.supervisor.checkpoints.confirm_steps)
        self.default_constraints = {k: float(v) for k, v in config.trainer.items()
                                    if k in CONSTRAINT_NAMES and isinstance(v, (int, float))}
        self.journal = Journal(self.run_dir / "journal.jsonl")
        self.sinks = SinkFanout(sinks)
        self.recorder = Recorder(self.journal, self.sinks, on_alerts=self._remember_alerts)
        self.hooks = HookRunner(hooks or {}, {"RLGUARD_RUN_DIR": str(self.run_dir),
                                              "RLGUARD_METRICS": str(self.metrics_path)}, hook_timeout_s)
        self.halted = False
        self.step: int | None = None
        self.events = 0
        self.bad_lines = 0
        self.recent_alerts: list[dict] = []
        self.coverage = CoverageLog(self.journal, log)  # which failure classes the stream's metrics arm
        self._lock = threading.Lock()  # status() is read from the HTTP thread
        # Acting here is running the user's hook; nobody can answer an approval inside watch.
        self.applier = Applier(self.recorder, act=self._run_hook, finish=self._finish,
                               approve_on_timeout=self.policy_cfg.approval.on_timeout == "approve")

    # ------------------------------------------------------------------ the loop's steps

    def handle(self, event: MetricEvent) -> list[Decision]:
        event = self._renamed(event)
        if self.events == 0:
            self._start_constraints(event)
        self.events += 1
        self.step = event.step
        self.sinks.on_event(event)
        self.coverage.observe(event.step, event.metrics)
        alerts = self.monitors.update(event)  # detect
        self.recorder.alerts(alerts)
        decisions = self.sim.observe(event.step, alerts, event.metrics)  # decide
        for d in decisions:
            self.carry_out(d, alerts)
        return decisions

    def bad_line(self, e, source: Path) -> None:
        """A line that is not an event: journaled while there are few, then only counted."""
        self.bad_lines += 1
        if self.bad_lines <= MAX_BAD_LINE_NOTES:
            reason = e.reason if len(e.reason) <= BAD_LINE_REASON_CHARS else e.reason[:BAD_LINE_REASON_CHARS] + "..."
            self.recorder.note(f"bad line {e.lineno} in {source}: {reason}", event="bad_event", lineno=e.lineno)
        elif self.bad_lines == MAX_BAD_LINE_NOTES + 1:
            self.recorder.note(f"more than {MAX_BAD_LINE_NOTES} bad lines in {source}: the rest are counted, not "
                              "journaled (bad_lines in the watch_stopped note)", event="bad_events_suppressed",
                              lineno=e.lineno)

    def check_stall(self, now: float | None = None) -> list[Alert]:
        alerts = self.monitors.check_stall(time.time() if now is None else now)
        self.recorder.alerts(alerts)
        return alerts

    def carry_out(self, d: Decision, alerts=()) -> str:
        """Journal `d` as decided, run its hook (per mode), journal the outcome."""
        target = {"step": d.target_step} if d.action is Action.ROLLBACK else None
        return self.applier.apply(d, alerts=alerts, constraints=dict(self.sim.constraints), target=target)

    def _run_hook(self, d: Decision, did: str, _source) -> None:
        self._finish(d, did, *self.hooks.run(d, did))  # act

    def _finish(self, d: Decision, did: str, phase: Phase | str, outcome: str) -> None:
        self.recorder.outcome(d, did, phase, outcome)
        log.warning("%s at step %d: %s -> %s: %s", d.action.value, d.step, d.reason, Phase(phase).value, outcome)
        if d.action is Action.HALT and phase == Phase.DONE:
            self.halted = True

    def status(self) -> dict:
        with self._lock:
            return {"state": "halted" if self.halted else "watching", "mode": "watch", "step": self.step,
                    "events": self.events, "constraints": dict(self.sim.constraints),
                    "initial_constraints": dict(self.sim.initial_constraints),
                    "alerts": list(self.recent_alerts[-20:]),
                    "checkpoints": [{"step": c.step, "health": str(getattr(c.health, "value", c.health)),
                                     "assumed": True} for c in self.sim.checkpoint_views()],
                    "metrics_file": str(self.metrics_path), "run_dir": str(self.run_dir),
                    "sink_errors": self.sinks.error_total, "coverage": self.coverage.current}

    def close(self, reason: str) -> None:
        self.recorder.note(f"watch stopped: {reason}", event="watch_stopped", step=self.step, events=self.events,
                          bad_lines=self.bad_lines)
        self.journal.close()
        self.sinks.close()

    # ------------------------------------------------------------------ helpers

    def _renamed(self, event: MetricEvent) -> MetricEvent:
        if self.names == "rlguard":
            return event
        from rlguard.orchestrator.integrations.metric_names import map_metrics

        return MetricEvent(step=event.step, metrics=map_metrics(event.metrics, self.names), time=event.time,
                           attempt=event.attempt, extra=event.extra)

    def _start_constraints(self, event: MetricEvent) -> None:
        """Values the stream does not carry come from the config's trainer section."""
        for k, v in self.default_constraints.items():
            if event.metrics.get(k) is None:
                event.metrics[k] = v

    def _remember_alerts(self, alerts: list[Alert]) -> None:
        with self._lock:
            self.recent_alerts.extend(a.to_dict() for a in alerts)
            del self.recent_alerts[:-100]


# ====================================================================== CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard watch", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", help="the run's metrics.jsonl (METRICS.md events) or a trainer's own log file or "
                   "directory; may not exist yet")
    p.add_argument("--format", dest="log_format", default=None, metavar="NAME",
                   help="the log's format, instead of detecting it: " + ", ".join(_format_names()))
    p.add_argument("--logging-steps", type=int, default=None, metavar="N",
                   help="trl-console logs without progress bars: the run's logging_steps")
    p.add_argument("--config", help="run config YAML: monitors/policies sections (trainer: starting constraints)")
    p.add_argument("--out", help="watch directory for journal.jsonl (default: METRICS_DIR/rlguard-watch)")
    p.add_argument("--port", type=int, default=None, help="serve /api/status, /metrics and the dashboard on "
                   "127.0.0.1:PORT (0: a free port, written to OUT/supervisor.json)")
    p.add_argument("--hook", action="append", default=[], metavar="ACTION=COMMAND",
                   help="shell command carrying out ACTION (rollback, halt, tighten, relax, notify); repeatable")
    p.add_argument("--hook-timeout-s", type=float, default=300.0, help="a hook running longer fails")
    p.add_argument("--names", default="rlguard", help="metric names of the stream: rlguard (METRICS.md), trl, "
                   "verl, openrlhf")
    p.add_argument("--checkpoint-every", type=int, default=50, help="the watched trainer checkpoints every N "
                   "steps: rollback targets are chosen among those steps")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="stop after this long without new events (default: run until SIGINT/SIGTERM)")
    p.add_argument("--poll-s", type=float, default=0.5, help="how often the file is checked for new lines")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def _format_names() -> list[str]:
    from rlguard.orchestrator.logformats import format_names

    return format_names()


def parse_hooks(items: list[str]) -> dict[str, str]:
    allowed = [a.value for a in Action]
    hooks: dict[str, str] = {}
    for item in items:
        action, sep, cmd = item.partition("=")
        action = action.strip()
        if not sep or not cmd.strip():
            raise ConfigError(f"--hook {item!r}: expected ACTION=COMMAND, e.g. --hook rollback='./rollback.sh'")
        if action not in allowed:
            raise ConfigError(f"--hook {item!r}: unknown action {action!r}; expected one of {', '.join(allowed)}")
        if not shlex.split(cmd):
            raise ConfigError(f"--hook {action}: the command is empty")
        hooks[action] = cmd
    return hooks


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from rlguard.orchestrator.log_setup import configure_logging

    configure_logging(args.quiet)
    from rlguard.orchestrator.integrations.metric_names import table_for
    from rlguard.orchestrator.journal import JournalError

    metrics = Path(args.metrics)
    run_dir = Path(args.out) if args.out else metrics.parent / "rlguard-watch"
    try:
        config = load_run_config(args.config)[0] if args.config else parse_run_config({})
        hooks = parse_hooks(args.hook)
        table_for(args.names)
        if args.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every {args.checkpoint_every}: must be >= 1")
        if args.log_format is not None and args.log_format not in _format_names():
            raise ConfigError(f"--format {args.log_format!r}: expected one of {', '.join(_format_names())}")
        from rlguard.orchestrator.components import validate_all

        validate_all(config)
        sinks, routes = _dashboards(run_dir, config) if args.port is not None else ([], [])
        watcher = Watcher(metrics, run_dir, config, hooks=hooks, names=args.names.lower(),
                          checkpoint_every=args.checkpoint_every, hook_timeout_s=args.hook_timeout_s, sinks=sinks)
    except (ConfigError, ValueError, JournalError) as e:
        print(f"rlguard watch: {e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    reason = {"why": "end"}

    def on_signal(signum, _frame):
        reason["why"] = f"received {signal.Signals(signum).name}"
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    http = None
    try:
        if args.port is not None:
            http = _serve(watcher, routes, args.port, run_dir)
        watcher.recorder.note(f"watch started on {metrics}", event="watch_started", metrics=str(metrics),
                             hooks=hooks, url=http.url if http else "")
        print(f"rlguard watch: following {metrics}; journal {run_dir / 'journal.jsonl'}"
              + (f"; dashboard {http.url}" if http else ""), file=sys.stderr)
        reason["why"] = follow(watcher, metrics, stop, idle_s=args.until_idle, poll_s=args.poll_s,
                               log_format=args.log_format, logging_steps=args.logging_steps)
    finally:
        watcher.close(reason["why"])
        if http is not None:
            http.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"rlguard watch: {reason['why']} after {watcher.events} events", file=sys.stderr)
    return EXIT_HALTED if watcher.halted else EXIT_OK


def follow(watcher: Watcher, metrics: Path, stop: threading.Event, *, idle_s: float | None,
           poll_s: float = 0.5, log_format: str | None = None, logging_steps: int | None = None) -> str:
    """Tail `metrics` into the watcher until stop, idle, or a carried-out halt. Returns why it ended."""
    from rlguard.orchestrator.event_reader import EventReader
    from rlguard.orchestrator.logformats import LogFormatError, detect

    last_data = time.monotonic()
    while not metrics.exists():  # the run may not have written its first step yet
        if stop.wait(poll_s):
            return "stopped before the metrics file appeared"
        if idle_s is not None and time.monotonic() - last_data >= idle_s:
            return f"{metrics} did not appear within {idle_s:g} s"
    while log_format is None:  # a console log may print pages of banner before its first metric line
        try:
            log_format = detect(metrics).name
        except LogFormatError as e:
            if stop.wait(poll_s):
                return "stopped before the log showed a known format"
            if idle_s is not None and time.monotonic() - last_data >= idle_s:
                return f"no known log format in {metrics} within {idle_s:g} s: {e}"
    if log_format != "metrics-jsonl":
        return _follow_log(watcher, metrics, stop, log_format, idle_s, poll_s, logging_steps)
    last_stall_check = 0.0

    def should_stop() -> bool:
        nonlocal last_stall_check
        if time.monotonic() - last_stall_check >= 1.0:  # stall detection runs on the wall clock
            last_stall_check = time.monotonic()
            watcher.check_stall()
        return stop.is_set() or watcher.halted

    reader = EventReader(metrics, follow=True, poll_interval_s=poll_s, idle_timeout_s=idle_s, stop=should_stop,
                         on_error=lambda e: watcher.bad_line(e, metrics),
                         sleep=lambda s: stop.wait(s))
    for event in reader:
        watcher.handle(event)
        if watcher.halted:
            return "halted by a policy decision (its hook ran)"
        if stop.is_set():
            break
    if stop.is_set():
        return "signal"
    return "halted" if watcher.halted else f"idle for {idle_s:g} s" if idle_s is not None else "end of file"


def _follow_log(watcher: Watcher, path: Path, stop: threading.Event, log_format: str, idle_s: float | None,
                poll_s: float, logging_steps: int | None) -> str:
    """Tail a trainer's own log (orchestrator/logformats) into the watcher; its keys are mapped by its reader."""
    from rlguard.orchestrator.logformats import LogFormatError, open_source

    if watcher.names != "rlguard":
        watcher.recorder.note(f"--names {watcher.names} ignored: {log_format} keys are mapped by its reader",
                             event="names_ignored")
        watcher.names = "rlguard"
    watcher.recorder.note(f"reading {path} as {log_format}", event="log_format", format=log_format)
    try:
        _, src = open_source(path, log_format, logging_steps=logging_steps)
    except LogFormatError as e:
        return f"cannot read {path}: {e}"
    last_data = last_stall_check = time.monotonic()
    why = None
    try:
        while why is None:
            try:
                events = src.poll()
            except LogFormatError as e:
                return f"cannot read {path} as {log_format}: {e}"
            except OSError as e:  # replaced between two polls: read again next time
                log.warning("reading %s: %s", path, e)
                events = []
            for event in events:
                watcher.handle(event)
                if watcher.halted:
                    return "halted by a policy decision (its hook ran)"
            now = time.monotonic()
            if events:
                last_data = now
            if now - last_stall_check >= 1.0:  # stall detection runs on the wall clock
                last_stall_check = now
                watcher.check_stall()
            if stop.is_set():
                why = "signal"
            elif idle_s is not None and now - last_data >= idle_s:
                why = f"idle for {idle_s:g} s"
            else:
                stop.wait(poll_s)
        for event in src.close():  # the step held back until the next one started
            watcher.handle(event)
            if watcher.halted:
                return "halted by a policy decision (its hook ran)"
    except LogFormatError as e:
        return f"cannot read {path} as {log_format}: {e}"
    return why


class _WatchControl:
    """The ControlTarget of control_api for a run rlguard does not control: status only."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher

    def status(self) -> dict:
        return self.watcher.status()

    def worker_sync(self, body: dict) -> dict:
        return {"commands": []}

    def worker_heartbeat(self, body: dict) -> None:
        return None

    def operator(self, action: str, body: dict) -> tuple[int, dict]:
        return 409, {"error": f"rlguard watch observes a run it does not control: {action} is not possible; "
                              "use the watched trainer's own controls, or --hook commands"}


def _dashboards(run_dir: Path, config: RunConfig) -> tuple[list, list]:
    from rlguard.orchestrator.default_sinks import default_sinks_and_routes

    return default_sinks_and_routes(run_dir, config)


def _serve(watcher: Watcher, routes: list, port: int, run_dir: Path):
    from rlguard.orchestrator.control_api import ControlServer, build_app
    from rlguard.orchestrator.run_files import RunFiles

    files = RunFiles(run_dir)
    app = build_app(_WatchControl(watcher), files.ensure_token(), routes)
    server = ControlServer(app, "127.0.0.1", port)
    server.start()
    files.write_supervisor_info(server.url, server.port, worker=None)
    return server
