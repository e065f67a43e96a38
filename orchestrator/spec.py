"""The run specification: one YAML file with a section per package, validated up front.

    trainer:    {...}   the PPO-max TrainConfig fields (ppo/config.py), for the built-in worker
    monitors:   {...}   MonitorConfig (monitors/config.py)
    policies:   {...}   PolicyConfig (policies/config.py)
    supervisor: {...}   SupervisorConfig below
    dashboards: {...}   DashboardsConfig (orchestrator/dashboards_config.py): W&B, notifications, exporter

Unknown keys are errors (pydantic extra="forbid"); every error names the field and the fix.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlguard.monitors.config import MonitorConfig
from rlguard.monitors.describe import describe_fields
from rlguard.orchestrator.dashboards_config import DashboardsConfig
from rlguard.orchestrator.registry import RegistryConfig
from rlguard.orchestrator.trainer_specs import OpenRLHFSection, VerlSection
from rlguard.policies.config import PolicyConfig


class ConfigError(ValueError):
    """A configuration problem, one line per finding, naming the field."""


class SupervisorConfig(BaseModel):
    # allow_inf_nan=False: `.inf` is valid YAML for a float, and an infinite tick or timeout
    # ends as an OverflowError far from the config (time.sleep(inf), deadlines).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    command: list[str] | str | None = Field(
        None,
        description="Worker command line. None: the built-in PPO-max worker. A list or a shell-like string; "
        "placeholders: {python} {run_dir} {config} {resume} ('--resume PATH' or nothing) "
        "{resume_path} {overrides} ('--set k=v' per changed constraint) {attempt}. "
        "Works with 'torchrun ...' (the whole process group is supervised).",
    )
    max_restarts: int = Field(3, ge=0, description="Restart budget: relaunches after crashes, hangs and "
                              "restart-rollbacks. Spent -> the run fails with exit code 4.")
    restart_backoff_initial_s: float = Field(2.0, ge=0, description="Wait before the first relaunch.")
    restart_backoff_factor: float = Field(2.0, ge=1, description="Multiplier of the wait per further relaunch.")
    restart_backoff_max_s: float = Field(60.0, ge=0, description="Cap of the relaunch wait.")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="How often the worker's SDK sends a heartbeat.")
    heartbeat_timeout_s: float = Field(30.0, gt=0, description="No heartbeat for this long: the worker "
                                       "process is frozen -> kill its process group and relaunch.")
    step_timeout_s: float = Field(1800.0, gt=0, description="The worker's training loop made no progress "
                                  "(no step, no SDK call) for this long while not paused: hung -> relaunch.")
    startup_timeout_s: float = Field(600.0, gt=0, description="A new worker must send its first heartbeat "
                                     "within this long (imports, model loading).")
    stop_grace_s: float = Field(30.0, ge=0, description="After SIGTERM to the worker's process group, wait "
                                "this long before SIGKILL.")
    command_timeout_s: float = Field(600.0, gt=0, description="A command not acknowledged within this long "
                                     "marks the worker suspect -> restart-rollback.")
    rollback_mode: Literal["in_process", "restart"] = Field(
        "in_process", description="in_process: the worker loads the checkpoint and continues (fast). restart: "
        "kill and relaunch with --resume. A dead, hung or failing worker is always restarted.")
    sync_wait_s: float = Field(5.0, ge=0, description="How long a worker's report waits for the supervisor "
                               "to process its step, so decisions land at that step's boundary (at least; "
                               "see sync_wait_step_fraction).")
    sync_wait_step_fraction: float = Field(0.1, ge=0, le=10, description="A report also waits up to this "
                                           "fraction of the worker's last step time (capped at 60 s): a "
                                           "100 s step affords a 10 s wait, so a supervisor slowed down by load "
                                           "still answers before the next step starts. 0: sync_wait_s only.")
    checkpoint_every_s: float | None = Field(None, gt=0, description="Also ask for a checkpoint this often "
                                             "(wall clock), on top of the trainer's checkpoint_every steps.")
    eval_every_s: float | None = Field(None, gt=0, description="Ask for a held-out evaluation this often.")
    disk_min_free_gb: float = Field(2.0, ge=0, description="Warn (journal + sinks) when the run directory's "
                                    "disk has less free space than this.")
    scheduler_misfire_grace_s: float = Field(30.0, gt=0, description="A periodic job late by up to this "
                                             "long still runs (APScheduler misfire_grace_time).")
    host: str = Field("127.0.0.1", description="Control API address. Anything but loopback needs "
                      "allow_remote: true (the bearer token then guards it).")
    port: int = Field(0, ge=0, le=65535, description="Control API port; 0 picks a free one "
                      "(written to RUN/supervisor.json).")
    allow_remote: bool = Field(False, description="Permit a non-loopback host, and serve Host names other "
                               "than 127.0.0.1/localhost/[::1] (refused otherwise: DNS rebinding); the bearer "
                               "token then alone guards every POST.")
    checkpoints: RegistryConfig = Field(default_factory=RegistryConfig, description="Checkpoint health "
                                        "(confirmation window) and retention.")
    tick_s: float = Field(0.2, gt=0, description="Longest the monitor loop sleeps waiting for worker "
                          "messages before checking liveness and timers.")
    launcher: Literal["command", "verl", "openrlhf"] = Field(
        "command", description="command: the built-in worker or `command` (SDK workers). verl / openrlhf: start "
        "that trainer with the `verl:` / `openrlhf:` section, read its own logs, roll back by relaunch "
        "(docs/INTEGRATIONS.md).")
    verl: VerlSection | None = Field(None, description="launcher: verl (orchestrator/trainer_specs.py).")
    openrlhf: OpenRLHFSection | None = Field(None, description="launcher: openrlhf (orchestrator/trainer_specs.py).")

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, v):
        if v is not None and not (shlex.split(v) if isinstance(v, str) else v):
            raise ValueError("command is empty; omit it to use the built-in PPO-max worker")
        return v

    @model_validator(mode="after")
    def _remote_needs_opt_in(self):
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.allow_remote:
            raise ValueError(f"host {self.host!r} exposes the control API beyond this machine; "
                             "set allow_remote: true to do that on purpose")
        return self

    @model_validator(mode="after")
    def _trainer_launcher_fits(self):
        """verl and OpenRLHF take no commands while they run: every action happens at a relaunch."""
        if self.launcher == "command":
            for name in ("verl", "openrlhf"):
                if getattr(self, name) is not None:
                    raise ValueError(f"a `{name}:` section needs launcher: {name}")
            return self
        name = self.launcher
        problems = []
        if getattr(self, name) is None:
            problems.append(f"launcher: {name} needs its `{name}:` section (at least `{name}: {{}}`)")
        if self.command is not None:
            problems.append(f"command: is for SDK workers; with launcher: {name} set {name}.command instead")
        if "rollback_mode" in self.model_fields_set and self.rollback_mode != "restart":
            problems.append(f"rollback_mode: {name} cannot load a checkpoint while it runs; use restart (the default "
                            f"with launcher: {name})")
        for knob in ("checkpoint_every_s", "eval_every_s"):
            if getattr(self, knob) is not None:
                problems.append(f"{knob}: {name} takes no save/evaluate commands; set its own save/test "
                                "frequency in its arguments")
        if self.checkpoints.confirm_steps < 1:
            problems.append("checkpoints.confirm_steps: must be >= 1 with this launcher: checkpoint N's samples "
                            "are scored at step N+1, so N is healthy only once step N+1's metrics are")
        if problems:
            raise ValueError("; ".join(problems))
        self.rollback_mode = "restart"
        return self

    def command_argv(self) -> list[str] | None:
        if self.command is None:
            return None
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The trainer section stays a mapping: for the built-in worker it is a TrainConfig, checked
    # before launch (components.validate_trainer_section); a `command:` or verl/OpenRLHF run
    # owns its trainer's settings, and rlguard reads only its starting kl_coef/clip_range/lr.
    trainer: dict = Field(default_factory=dict, description="PPO-max trainer settings (ppo/config.py).")
    monitors: MonitorConfig = Field(default_factory=MonitorConfig, description="Detector settings "
                                    "(monitors/config.py).")
    policies: PolicyConfig = Field(default_factory=PolicyConfig, description="Policy settings (policies/config.py).")
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig, description="This process.")
    dashboards: DashboardsConfig = Field(default_factory=DashboardsConfig, description="W&B, notifications "
                                         "(webhook, Alertmanager) and the Prometheus exporter.")


def format_validation_error(e: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field (check the spelling; `rlguard run --print-config` lists them)")
        else:
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_run_config(raw: dict | None, source: str = "config") -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections trainer/monitors/policies/supervisor/"
                          f"dashboards, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}:\n{format_validation_error(e)}") from None


def load_run_config(path: str | Path) -> tuple[RunConfig, dict]:
    """Read and validate CONFIG.yaml; returns the typed config and the raw mapping."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return parse_run_config(raw, str(path)), raw


def describe_supervisor_config() -> str:
    """Every supervisor and dashboards field with its default and description (for --print-config)."""
    lines = []
    for section, model in (("supervisor", SupervisorConfig()), ("dashboards", DashboardsConfig())):
        lines.append(f"{section}:")
        for key, value, doc in describe_fields(model):
            indent = "  " * (key.count(".") + 1)
            name = key.rpartition(".")[2]
            lines.append(f"{indent}{name}:" + (f" {value}" if value else "") + (f"\n{indent}    {doc}" if doc else ""))
    return "\n".join(lines)
