"""Weights & Biases sink: the run's metrics, incidents and decisions where researchers look.

- every metric event -> `run.log`, against `rlguard/step` (steps go back after a rollback,
  and W&B drops a `step=` lower than the last one, so the W&B step is the event count and
  the training step is a metric every chart uses as its x axis; `rlguard/segment` tells
  the attempts apart);
- every alert -> `run.alert` (warning -> WARN, critical -> ERROR), and so are halt and
  rollback decisions;
- decisions -> a `decisions` wandb.Table (action, step, target, params, reason, phase,
  outcome), logged again on each change (W&B keeps the latest version).

Offline by default: WANDB_MODE=offline into RUN/wandb, no network, nothing to configure;
online when the user sets `project` (or mode="online"). Offline `run.alert` is stored in
the run file, not delivered: real paging goes through Alertmanager (docs/OPS.md).

The sink never raises into the run and never makes it wait: W&B calls run on the sink's
own thread from a bounded queue; failures are logged and counted in `errors`, and after
`max_errors` the sink turns itself off.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import MetricEvent
from rlguard.policies.decision import Decision

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
TABLE_COLUMNS = ["decided_at_step", "segment", "action", "mode", "target_step", "params", "reason", "phase",
                 "outcome"]


@dataclass
class WandbSinkConfig:
    """How the run appears in W&B.

    project: W&B project. None: an offline run under RUN/wandb (sync later with
        `wandb sync RUN/wandb/offline-run-*`).
    entity: W&B team or user (None: the logged-in default).
    mode: "offline", "online" or "disabled". None: "online" when `project` is set, else
        "offline"; a WANDB_MODE of offline/disabled in the environment wins over None.
    name: run name shown in W&B (None: the run directory's name).
    tags: W&B tags.
    alert_wait_s: W&B will not repeat an alert with the same title within this many
        seconds (per-step warnings must not flood Slack/e-mail).
    max_table_rows: the decisions table keeps the newest this many rows.
    max_errors: after this many failed W&B calls the sink stops calling W&B.
    max_queue: W&B calls waiting for the sink's thread; beyond it new ones are dropped
        (counted in `dropped`) rather than slowing the supervisor down.
    close_timeout_s: how long close() waits for queued calls and finish().
    """

    project: str | None = None
    entity: str | None = None
    mode: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    alert_wait_s: float = 300.0
    max_table_rows: int = 1000
    max_errors: int = 20
    max_queue: int = 10_000
    close_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"wandb.mode = {self.mode!r}: use one of {', '.join(MODES)} (or leave it unset)")
        if self.alert_wait_s < 0:
            raise ValueError(f"wandb.alert_wait_s = {self.alert_wait_s}: must be >= 0 seconds")
        if self.max_table_rows < 1:
            raise ValueError(f"wandb.max_table_rows = {self.max_table_rows}: must be >= 1")

    def resolved_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        env = os.environ.get("WANDB_MODE", "").lower()
        if env in ("offline", "disabled", "dryrun"):
            return "offline" if env == "dryrun" else env
        return "online" if self.project else "offline"


class WandbSink:
    """A supervisor sink (orchestrator/sinks.py protocol) writing to one W&B run.

    run_dir: the run directory; W&B files go to RUN/wandb.
    config: WandbSinkConfig (default: offline).
    run_config: the run's configuration, stored as the W&B run config.
    run: an already started wandb Run to log into instead of starting one.
    """

    def __init__(self, run_dir: str | Path, config: WandbSinkConfig | None = None,
                 run_config: dict | None = None, run=None):
        self.run_dir = Path(run_dir)
        self.config = config or WandbSinkConfig()
        self.run_config = run_config or {}
        self.run = run
        self._owns_run = run is None
        self.errors = 0
        self.disabled = False
        self._logged = 0
        self._segment = 0
        self._last_step: int | None = None
        self._rows: list[list] = []
        self._row_index: dict[tuple, int] = {}
        self._alerted: set[tuple] = set()
        self._queue: queue.Queue = queue.Queue(maxsize=self.config.max_queue)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.dropped = 0

    # ------------------------------------------------------------------ plumbing

    def _start(self):
        if self.run is None:
            import wandb  # imported here: a run without W&B never pays for it

            wandb_dir = self.run_dir / "wandb"
            wandb_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=self.config.project or "rlguard", entity=self.config.entity,
                name=self.config.name or self.run_dir.resolve().name, tags=list(self.config.tags),
                dir=str(self.run_dir), mode=self.config.resolved_mode(), config=self.run_config,
                reinit="create_new",
                settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=True),
            )
            self.run.define_metric("rlguard/step")
            self.run.define_metric("*", step_metric="rlguard/step")
        return self.run

    def _guard(self, what: str, fn) -> None:
        """Queue `fn(run)` for the sink's thread: the supervisor's loop never waits for W&B
        (wandb.init alone takes seconds; an online run waits on the network)."""
        if self.disabled or self._closing:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="rlguard-wandb", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((what, fn))
        except queue.Full:
            self.dropped += 1  # W&B is far behind: losing display data beats stalling training

    def _work(self) -> None:
        while True:
            what, fn = self._queue.get()
            try:
                if fn is None:
                    return
                if not self.disabled:
                    fn(self._start())
            except Exception as e:  # noqa: BLE001 - W&B trouble must never stop training
                self.errors += 1
                log.warning("W&B sink: %s failed (%s: %s); %d errors so far", what, type(e).__name__, e,
                            self.errors)
                if self.errors >= self.config.max_errors:
                    self.disabled = True
                    log.error("W&B sink: %d errors, no more W&B logging for this run", self.errors)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far reached W&B (or failed); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    # ------------------------------------------------------------------ sink methods

    def on_event(self, event: MetricEvent) -> None:
        if self._last_step is not None and event.step <= self._last_step:
            self._segment += 1  # a rollback or restart: steps went back
        self._last_step = event.step
        row = {name: float(v) for name, v in event.metrics.items() if v is not None}
        row["rlguard/step"] = event.step
        row["rlguard/segment"] = self._segment

        def log_row(run):
            run.log(row, step=self._logged)
            self._logged += 1

        self._guard("log", log_row)

    def on_alert(self, alert: Alert) -> None:
        severity = alert.severity.value
        title = f"rlguard {alert.severity.value}: {alert.code} on {alert.metric}"
        text = f"step {alert.step} (onset {alert.onset_step}), detector {alert.detector}: {alert.message}"
        self._guard("alert", lambda run: run.alert(title=title, text=text, level=_alert_level(severity),
                                                   wait_duration=timedelta(seconds=self.config.alert_wait_s)))

    def on_decision(self, decision: Decision, phase: str = "", outcome=None) -> None:
        d = decision.to_dict()
        key = (d["action"], d["step"], d["target_step"], d["reason"])
        row = [d["step"], self._segment, d["action"], d["mode"], d["target_step"] if d["target_step"] is not None
               else -1, str(d["params"]), d["reason"], str(getattr(phase, "value", phase) or ""),
               "" if outcome is None else str(getattr(outcome, "value", outcome))]
        if key in self._row_index:
            self._rows[self._row_index[key]] = row
        else:
            self._row_index[key] = len(self._rows)
            self._rows.append(row)
        if len(self._rows) > self.config.max_table_rows:
            drop = len(self._rows) - self.config.max_table_rows
            self._rows = self._rows[drop:]
            self._row_index = {k: i - drop for k, i in self._row_index.items() if i >= drop}
        rows = [list(r) for r in self._rows]

        def log_table(run):
            import wandb

            # A committed row of its own, so the table lands even if no step follows (halt).
            run.log({"decisions": wandb.Table(columns=TABLE_COLUMNS, data=rows),
                     "rlguard/step": self._last_step if self._last_step is not None else d["step"]},
                    step=self._logged)
            self._logged += 1

        self._guard("decisions table", log_table)
        if d["action"] in ("halt", "rollback") and key not in self._alerted:
            self._alerted.add(key)  # later phases of the same decision update its table row only
            severity = "critical" if d["action"] == "halt" else "warning"
            target = f" to step {d['target_step']}" if d["target_step"] is not None else ""
            self._guard("alert", lambda run: run.alert(
                title=f"rlguard {d['action']}{target}", text=f"step {d['step']}: {d['reason']}",
                level=_alert_level(severity),
                wait_duration=timedelta(seconds=0)))

    def on_checkpoint(self, step: int, path, health) -> None:
        health = str(getattr(health, "value", health))
        score = {"healthy": 1.0, "pending": 0.5}.get(health, 0.0)
        self._guard("checkpoint", lambda run: run.summary.update(
            {"rlguard/last_checkpoint_step": step, "rlguard/last_checkpoint_health": health,
             "rlguard/last_checkpoint_healthy": score}))

    def on_state(self, state) -> None:
        state = str(getattr(state, "value", state))
        self._guard("state", lambda run: run.summary.update({"rlguard/state": state}))

    def on_restart(self, reason) -> None:
        self._guard("restart", lambda run: run.alert(
            title="rlguard worker restart", text=str(reason), level=_alert_level("warning"),
            wait_duration=timedelta(seconds=self.config.alert_wait_s)))

    def close(self) -> None:
        """Drain the queue (up to `close_timeout_s`), finish the run if the sink started it."""
        if self._closing:
            return
        if self._owns_run and self._thread is not None:
            self._guard("finish", lambda run: run.finish())
        self._closing = True
        if self._thread is not None:
            self._queue.put(("stop", None))
            self._thread.join(self.config.close_timeout_s)
            if self._thread.is_alive():
                log.warning("W&B sink: still busy after %.0f s at close; leaving it behind",
                            self.config.close_timeout_s)
        self.disabled = True


def _alert_level(severity: str):
    import wandb

    return wandb.AlertLevel.ERROR if severity == "critical" else wandb.AlertLevel.WARN
