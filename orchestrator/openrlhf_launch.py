"""`supervisor.launcher: openrlhf`: run `python -m openrlhf.cli.train_ppo_ray` under rlguard.

Checked against OpenRLHF/OpenRLHF @ 3c3be6234e0cb353e76bb8019947db9dfe99fca7 (2026-08-13):

- Flags (openrlhf/cli/train_ppo_ray.py, all dotted): --algo.kl.init_coef (L419, default 0.01;
  0 means no reference model and no KL knob), --actor.eps_clip (L387, 0.2) and
  --actor.eps_clip_low_high LOW HIGH (L388, default (eps_clip, eps_clip), L594), --actor.adam.lr
  (L465, 1e-6), --ckpt.path (L289), --ckpt.load_enable (L294), --ckpt.max_num (L292, default 3),
  --ckpt.max_mem (L293), --ckpt.save_steps (L287).
- Metrics: ppo_trainer.py L547 logs `✨ Global step N: {python dict}` through the logging module
  (stderr of the PPOTrainer Ray actor, which Ray forwards to the driver's output with a
  "(PPOTrainer pid=...)" prefix; the async trainer logs `Global step N: {...}`). Keys are bare
  ("kl", "actor_lr", "policy_loss", "rollout/reward_mean"); W&B and TensorBoard add "train/".
  Step N is logged before checkpoint N is saved.
- Checkpoints (utils/deepspeed/deepspeed.py save_ckpt): DeepSpeed tags `global_stepN` under
  --ckpt.path/_actor and /_critic, each with a `latest` file naming the newest tag; loading
  (ray/ppo_actor.py L573, ppo_critic.py L241, with --ckpt.load_enable) passes tag=None, so
  DeepSpeed loads whatever `latest` names, and the step comes from the saved client state.
  Rollback = point both `latest` files at global_stepN, relaunch with --ckpt.load_enable.
- Retention: save_ckpt deletes regular checkpoints beyond max_num (no-metric ones first, then
  the worst eval metric, then the oldest: not necessarily the oldest) or max_mem. Dirs named
  best* are exempt, but a new best deletes every other best* dir (L699-704): renaming a target
  to best* would not protect it while best-checkpoint saving is on. So the launcher passes
  --ckpt.max_num 1000000000 and rlguard's registry retention deletes pruned global_stepN dirs
  (never a held target, the last healthy or a pending one). OpenRLHF's own best* checkpoints are
  left alone.
- LR: DeepSpeed's load_checkpoint restores the optimizer and the LR scheduler state
  (load_lr_scheduler_states=True in save/load_ckpt), so a new --actor.adam.lr would be overridden
  on resume and OpenRLHF has no flag to skip that: lr is not a knob of this launcher.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.integrations.metric_names import map_metrics
from rlguard.orchestrator.logformats.openrlhf import Parser as OpenRLHFParser
from rlguard.orchestrator.trainer_launch import TrainerLauncher, format_number, write_pointer
from rlguard.orchestrator.trainer_launch import file_stamp as _stamp

KL = "--algo.kl.init_coef"
CLIP = "--actor.eps_clip"
CLIP_LOW_HIGH = "--actor.eps_clip_low_high"
DEFAULTS = {KL: ["0.01"], CLIP: ["0.2"]}  # train_ppo_ray.py L419, L387 @ 3c3be62
NO_ROTATION = "1000000000"
_GLOBAL_STEP = re.compile(rb"Global step (\d+): (\{.*\})\s*$")
_TAG = re.compile(r"^global_step(\d+)$")


def parse_flags(args: list[str]) -> list[tuple[str, list[str]]]:
    """`--a.b 1 --c --d 1 2` -> [("--a.b", ["1"]), ("--c", []), ("--d", ["1", "2"])]; `--a=1` too."""
    out: list[tuple[str, list[str]]] = []
    for a in args:
        if a.startswith("--"):
            flag, eq, val = a.partition("=")
            out.append((flag, [val] if eq else []))
        elif out:
            out[-1][1].append(a)
        else:
            raise ValueError(f"openrlhf.args: {a!r} comes before any --flag; write flags as --group.name value")
    return out


# ------------------------------------------------------------ reading OpenRLHF's output

def openrlhf_stdout_line_to_event(line: bytes | str, attempt: int | None = None) -> MetricEvent | None:
    """One line of OpenRLHF's driver output -> a MetricEvent (None for the other lines, the evaluation
    line included: the launcher counts training steps). Parsed by the shared reader
    (orchestrator/logformats/openrlhf.py)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    records = [r for r in OpenRLHFParser().parse(line.rstrip("\r\n"))
               if not all(str(k).startswith("eval_") for k in r.values)]
    if not records:
        if _GLOBAL_STEP.search(line.encode()):
            raise ValueError("a `Global step N: {...}` line whose dict does not parse")
        return None
    rec = records[0]
    return MetricEvent(step=rec.step, metrics=map_metrics(rec.values, "openrlhf"), time=time.time(), attempt=attempt)


class OpenRLHFLauncher(TrainerLauncher):
    trainer = "openrlhf"

    def __init__(self, run_dir: Path, config_path: Path, section, env: dict[str, str]):
        super().__init__(run_dir, config_path, section, env)
        self.flags = parse_flags(section.args)
        self.user = dict(self.flags)
        given = section.checkpoint_dir or (self.user.get("--ckpt.path") or [None])[0]
        self.ckpt_dir = Path(given).resolve() if given else self.run_dir / "openrlhf-checkpoints"

    def number(self, flag: str) -> float:
        return float(self.user.get(flag, DEFAULTS.get(flag, ["nan"]))[0])

    def initial_constraints(self) -> dict[str, float]:
        low_high = self.user.get(CLIP_LOW_HIGH)
        out = {"clip_range": float(low_high[0]) if low_high else self.number(CLIP)}
        if self.number(KL) > 0:
            out["kl_coef"] = self.number(KL)
        return out

    def owns_retention(self) -> bool:
        return True  # OpenRLHF always rotates (max_num defaults to 3): rlguard's retention does it instead

    def log_to_read(self, attempt: int) -> Path:
        return self.run_dir / "logs" / f"worker-attempt-{attempt}.log"  # the driver's stdout+stderr

    def line_to_event(self, line: bytes, attempt: int) -> MetricEvent | None:
        return openrlhf_stdout_line_to_event(line, attempt)

    def build(self, attempt: int, target: Path | None, from_start: bool, changed: dict) -> tuple[list[str], dict]:
        ours: dict[str, list[str]] = {"--ckpt.path": [str(self.ckpt_dir)], "--ckpt.max_num": [NO_ROTATION]}
        load = target is not None or ("--ckpt.load_enable" in self.user and not from_start)
        if "kl_coef" in changed:
            ours[KL] = [format_number(changed["kl_coef"])]
        if "clip_range" in changed:
            factor = changed["clip_range"] / self.initial["clip_range"]
            ours[CLIP] = [format_number(self.number(CLIP) * factor)]
            if CLIP_LOW_HIGH in self.user:  # it overrides eps_clip when given (train_ppo_ray.py L594)
                ours[CLIP_LOW_HIGH] = [format_number(float(x) * factor) for x in self.user[CLIP_LOW_HIGH]]
        argv = [a.replace("{python}", sys.executable) for a in self.section.command]
        for flag, values in self.flags:
            if flag not in ours and flag != "--ckpt.load_enable":
                argv += [flag, *values]
        for flag, values in ours.items():
            argv += [flag, *values]
        if load:
            argv.append("--ckpt.load_enable")
        return argv, {}

    def prepare_resume(self, target: Path, payload: dict) -> None:
        """Point DeepSpeed's `latest` of actor and critic at the target tag (atomic writes)."""
        tag = target.name
        for d in payload["dirs"]:
            latest = Path(d).parent / "latest"
            tmp = latest.with_name(f".latest.{os.getpid()}.tmp")
            tmp.write_text(tag)
            os.replace(tmp, latest)

    def describe(self) -> str:
        return (f"OpenRLHF checkpoints in {self.ckpt_dir}; its rotation off (--ckpt.max_num {NO_ROTATION}), "
                "rlguard's retention instead; knobs: " + ", ".join(sorted(self.initial_constraints())))

    def checkpoint_finder(self, attempt: int, constraints: dict, rescan: bool = False) -> Callable[[], list[dict]]:
        """New `global_stepN` tags of this attempt: actor's `latest` changed since the start, and the
        critic's (when there is one) names the same tag (they are saved in parallel)."""
        actor, critic = self.ckpt_dir / "_actor", self.ckpt_dir / "_critic"
        state = {"seen": None if rescan else _stamp(actor / "latest")}

        def find() -> list[dict]:
            stamp = _stamp(actor / "latest")
            if stamp == state["seen"]:
                return []
            try:
                tag = (actor / "latest").read_text().strip()
            except OSError:
                return []
            m = _TAG.match(tag)
            if m is None:  # best_global_stepN: OpenRLHF keeps those itself
                state["seen"] = stamp
                return []
            dirs = [actor / tag]
            if critic.is_dir():
                try:
                    if (critic / "latest").read_text().strip() != tag:
                        return []  # the critic is still saving: next poll
                except OSError:
                    return []
                dirs.append(critic / tag)
            if not all(d.is_dir() for d in dirs):
                return []
            state["seen"] = stamp
            step = int(m.group(1))
            pointer = write_pointer(self.run_dir, "openrlhf", step, actor / tag, dirs, constraints)
            return [{"step": step, "path": str(pointer)}]

        return find

