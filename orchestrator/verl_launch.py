"""`supervisor.launcher: verl`: run `python -m verl.trainer.main_ppo` under rlguard.

Checked against volcengine/verl @ b178a3cd56f58b2d502255daba591e92833930a7 (2026-01-29):

- Metrics: the `file` backend of `trainer.logger` (verl/utils/tracking.py FileLogger) writes
  `{"step": N, "data": {...}}` per line to $VERL_FILE_LOGGER_PATH, opened "wb" (truncated on
  start): so each attempt gets its own path. The logger lives in verl's TaskRunner, a Ray actor
  that may run on another node: the path also goes into the Ray runtime env
  (`++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH`, merged with verl's own
  env vars in main_ppo.run_ppo) and must be on storage the supervisor's node can read.
  orjson writes NaN and +-inf as null: a null value in this file is a non-finite number.
- Checkpoints (ray_trainer.py _save_checkpoint): trainer.default_local_dir/global_step_N/{actor,
  critic, data.pt}, then latest_checkpointed_iteration.txt = N (written last, "for atomic usage";
  not written with async_save). global_step_N is saved *before* step N's metrics are logged,
  and step N+1 is the first whose samples come from its weights: the registry's confirm window
  (confirm_steps >= 1, enforced in spec.py) makes it healthy only after step N+1's metrics.
- Resume (ray_trainer.py _load_checkpoint): trainer.resume_mode=resume_path with
  trainer.resume_from_path=<dir containing "global_step_N">; the step is parsed from the path;
  the next logged step is N+1 (after an optional validation record at step N).
  resume_mode=auto would load the newest checkpoint, collapsed or not: a relaunch from the start
  passes resume_mode=disable.
- Retention: trainer.max_actor_ckpt_to_keep / max_critic_ckpt_to_keep (None = keep all) delete
  older checkpoints inside verl, blind to rollback targets: the launcher sets both to null and,
  when the user had set one, rlguard's registry retention deletes pruned global_step_N dirs.
- LR on resume: fsdp_checkpoint_manager.load_checkpoint restores the optimizer (its param groups
  carry the old lr) and, from extra_state, the LR scheduler (torch LambdaLR.load_state_dict brings
  back base_lrs): a new actor_rollout_ref.actor.optim.lr alone is silently overridden. When the lr
  differs from the user's, the relaunch also drops "extra" from
  actor_rollout_ref.actor.checkpoint.load_contents, so verl builds a fresh scheduler from the new
  lr. Cost: the schedule (warmup, cosine) starts over, the RNG state is not restored, and the
  first step after the resume still runs at the optimizer's restored lr (the scheduler sets the
  new one when it steps after that update).
- Knobs: KL to the reference is either in the reward (algorithm.use_kl_in_reward,
  algorithm.kl_ctrl.kl_coef) or a loss (actor_rollout_ref.actor.use_kl_loss, kl_loss_coef), or
  both; rlguard's one `kl_coef` scales every one in force by the same factor. The clip range in
  force is actor.clip_ratio_low / clip_ratio_high (both default 0.2 literally, not
  ${clip_ratio}; core_algos.compute_policy_loss_vanilla uses clip_ratio only when they are null):
  `clip_range` is clip_ratio_low and a tighten scales clip_ratio, _low and _high together.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.integrations.metric_names import map_metrics
from rlguard.orchestrator.logformats.verl import JsonlParser
from rlguard.orchestrator.trainer_launch import TrainerLauncher, format_number, write_pointer
from rlguard.orchestrator.trainer_launch import file_stamp as _stamp

# Defaults of verl/trainer/config/_generated_ppo_trainer.yaml @ b178a3c.
KL_IN_REWARD = "algorithm.kl_ctrl.kl_coef"
KL_LOSS = "actor_rollout_ref.actor.kl_loss_coef"
CLIP_KEYS = ("actor_rollout_ref.actor.clip_ratio", "actor_rollout_ref.actor.clip_ratio_low",
             "actor_rollout_ref.actor.clip_ratio_high")
LR = "actor_rollout_ref.actor.optim.lr"
LOAD_CONTENTS = "actor_rollout_ref.actor.checkpoint.load_contents"
DEFAULTS = {KL_IN_REWARD: 0.001, KL_LOSS: 0.001, CLIP_KEYS[0]: 0.2, CLIP_KEYS[1]: 0.2, CLIP_KEYS[2]: 0.2, LR: 1e-6,
            "algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": False,
            "trainer.logger": ["console", "wandb"]}
LOGGER_ENV = "VERL_FILE_LOGGER_PATH"
OWNED = ("trainer.logger", "trainer.default_local_dir", "trainer.max_actor_ckpt_to_keep",
         "trainer.max_critic_ckpt_to_keep", "trainer.resume_mode", "trainer.resume_from_path",
         "ray_kwargs.ray_init.runtime_env.env_vars." + LOGGER_ENV)
_PLAIN = re.compile(r"^[A-Za-z0-9_./@-]+$")


def override_key(override: str) -> str:
    """`++a.b=1` -> `a.b`; `~a.b` -> `a.b`."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def parse_overrides(overrides: list[str]) -> dict[str, object]:
    """The values the user's Hydra overrides set (YAML-typed: 0.2, true, [console,wandb])."""
    out: dict[str, object] = {}
    for o in overrides:
        if o.startswith("~") or "=" not in o:
            continue
        raw = o.split("=", 1)[1]
        try:
            out[override_key(o)] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[override_key(o)] = raw
    return out


def hydra_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return format_number(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    s = str(v)
    return s if _PLAIN.match(s) else "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ------------------------------------------------------------ reading verl's file logger

def verl_file_record_to_event(line: bytes | str, attempt: int | None = None) -> MetricEvent | None:
    """One line of verl's file logger -> a MetricEvent in METRICS.md names (ValueError if not one).
    Parsed by the shared reader (orchestrator/logformats/verl.py: orjson's nulls are NaN)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    records = JsonlParser().parse(line)
    if not records:
        raise ValueError('not a verl file-logger record {"step": N, "data": {...}}')
    rec = records[0]
    return MetricEvent(step=rec.step, metrics=map_metrics(rec.values, "verl"), time=time.time(), attempt=attempt)


class VerlLauncher(TrainerLauncher):
    trainer = "verl"

    def __init__(self, run_dir: Path, config_path: Path, section, env: dict[str, str]):
        super().__init__(run_dir, config_path, section, env)
        self.user = parse_overrides(section.overrides)
        given = section.checkpoint_dir or self.user.get("trainer.default_local_dir")
        self.ckpt_dir = Path(str(given)).resolve() if given else self.run_dir / "verl-checkpoints"

    def value(self, key: str):
        return self.user.get(key, DEFAULTS.get(key))

    def kl_keys(self) -> list[str]:
        keys = []
        if self.value("actor_rollout_ref.actor.use_kl_loss") is True:
            keys.append(KL_LOSS)
        if self.value("algorithm.use_kl_in_reward") is True:
            keys.append(KL_IN_REWARD)
        return keys

    def initial_constraints(self) -> dict[str, float]:
        out = {"clip_range": float(self.value(CLIP_KEYS[1])), "lr": float(self.value(LR))}
        kl = self.kl_keys()
        if kl:
            out["kl_coef"] = float(self.value(kl[0]))
        return out

    def owns_retention(self) -> bool:
        return any(self.user.get(k) is not None for k in ("trainer.max_actor_ckpt_to_keep",
                                                          "trainer.max_critic_ckpt_to_keep"))

    def logger_path(self, attempt: int) -> Path:
        return self.run_dir / "logs" / f"verl-metrics-attempt-{attempt}.jsonl"

    def log_to_read(self, attempt: int) -> Path:
        return self.logger_path(attempt)

    def line_to_event(self, line: bytes, attempt: int) -> MetricEvent | None:
        return verl_file_record_to_event(line, attempt)

    def knob_overrides(self, changed: dict) -> dict[str, object]:
        """verl keys and values for the rlguard constraints that differ from the user's."""
        out: dict[str, object] = {}
        if "kl_coef" in changed:
            factor = changed["kl_coef"] / self.initial["kl_coef"]
            for key in self.kl_keys():
                out[key] = float(self.value(key)) * factor
        if "clip_range" in changed:
            factor = changed["clip_range"] / self.initial["clip_range"]
            for key in CLIP_KEYS:
                out[key] = float(self.value(key)) * factor
        if "lr" in changed:
            out[LR] = changed["lr"]
        return out

    def build(self, attempt: int, target: Path | None, from_start: bool, changed: dict) -> tuple[list[str], dict]:
        knobs = self.knob_overrides(changed)
        ours: dict[str, object] = {}
        loggers = self.value("trainer.logger")
        loggers = [loggers] if isinstance(loggers, str) else list(loggers or [])
        ours["trainer.logger"] = loggers + ([] if "file" in loggers else ["file"])
        ours["trainer.default_local_dir"] = str(self.ckpt_dir)
        ours["trainer.max_actor_ckpt_to_keep"] = None  # rlguard's retention instead (module docstring)
        ours["trainer.max_critic_ckpt_to_keep"] = None
        if target is not None:
            ours["trainer.resume_mode"] = "resume_path"
            ours["trainer.resume_from_path"] = str(target)
            if LR in knobs:  # the restored scheduler would override the new lr (module docstring)
                contents = self.user.get(LOAD_CONTENTS) or ["model", "optimizer", "extra"]
                ours[LOAD_CONTENTS] = [c for c in contents if c != "extra"]
        elif from_start:
            ours["trainer.resume_mode"] = "disable"
        ours.update(knobs)
        path = self.logger_path(attempt)
        argv = [a.replace("{python}", sys.executable) for a in self.section.command]
        argv += [o for o in self.section.overrides if override_key(o) not in ours and override_key(o) != OWNED[-1]]
        argv += [f"{k}={hydra_value(v)}" for k, v in ours.items()]
        argv.append(f"++ray_kwargs.ray_init.runtime_env.env_vars.{LOGGER_ENV}={hydra_value(str(path))}")
        return argv, {LOGGER_ENV: str(path)}

    def describe(self) -> str:
        own = ("rlguard's retention replaces trainer.max_*_ckpt_to_keep (keep_last/keep_healthy)"
               if self.owns_retention() else "verl keeps every checkpoint (no max_*_ckpt_to_keep given)")
        return f"verl checkpoints in {self.ckpt_dir}; KL knobs in force: {self.kl_keys() or 'none'}; {own}"

    def checkpoint_finder(self, attempt: int, constraints: dict, rescan: bool = False) -> Callable[[], list[dict]]:
        """New checkpoints of this attempt: latest_checkpointed_iteration.txt changed since the start."""
        tracker = self.ckpt_dir / "latest_checkpointed_iteration.txt"
        state = {"seen": None if rescan else _stamp(tracker)}

        def find() -> list[dict]:
            stamp = _stamp(tracker)
            if stamp == state["seen"]:
                return []
            try:
                step = int(tracker.read_text().strip())
            except (OSError, ValueError):
                return []  # being written: next poll
            state["seen"] = stamp
            folder = self.ckpt_dir / f"global_step_{step}"
            if not folder.is_dir():
                return []
            pointer = write_pointer(self.run_dir, "verl", step, folder, [folder], constraints)
            return [{"step": step, "path": str(pointer)}]

        return find

