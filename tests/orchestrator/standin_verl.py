"""STAND-IN for `python -m verl.trainer.main_ppo` (no GPU, no Ray, no model): it honours the
Hydra overrides rlguard's verl launcher uses and writes verl's real layouts, so the launcher can
be tested under the real supervisor. What it copies from verl @ b178a3c (see
orchestrator/verl_launch.py for the line references):

- overrides: `key=value` only for keys verl's config has (KNOWN below; anything else must be
  `+key` / `++key`, as Hydra's struct mode demands), YAML-typed values, quoted strings;
- file logger: `trainer.logger` must contain "file"; the path comes from
  VERL_FILE_LOGGER_PATH (the Ray runtime-env override wins, as in the TaskRunner actor), opened
  "wb"; one `{"step": N, "data": {...}}` line per step; NaN written as null (orjson);
- checkpoints: default_local_dir/global_step_N/{actor/{model,optim,extra_state}_world_size_1_rank_0.pt,
  data.pt}, saved before step N is logged, then latest_checkpointed_iteration.txt;
  max_actor_ckpt_to_keep deletes this process's older actor dirs;
- resume: disable | auto (latest_checkpointed_iteration.txt) | resume_path (must contain
  "global_step_", step parsed from it); a validation record at the resumed step; then N+1...;
- LR: the optimizer's lr and the scheduler's base lr are restored from the checkpoint unless
  "extra" is left out of actor.checkpoint.load_contents; then the first step still runs at the
  restored optimizer lr and the new lr applies from the next one.

Its own knobs (`+standin.*`): total_steps, collapse_at (from this step the KL and entropy blow
up, unless the KL knob in force is >= safe_kl_coef), safe_kl_coef, step_s, rewrite_at and
rewrite_step (after logging step rewrite_at, rewrite global_step_<rewrite_step>'s model file, as
a second writer or a storage fault would), crash_at (exit 1 after logging that step, in attempt 0
only: RLGUARD_ATTEMPT).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

KNOWN = {
    "trainer.logger": ["console", "wandb"], "trainer.default_local_dir": "checkpoints/verl_examples/gsm8k",
    "trainer.max_actor_ckpt_to_keep": None, "trainer.max_critic_ckpt_to_keep": None, "trainer.save_freq": -1,
    "trainer.resume_mode": "auto", "trainer.resume_from_path": None, "trainer.total_training_steps": None,
    "trainer.project_name": "verl_examples", "trainer.experiment_name": "gsm8k",
    "algorithm.use_kl_in_reward": False, "algorithm.kl_ctrl.kl_coef": 0.001,
    "actor_rollout_ref.actor.use_kl_loss": False, "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.clip_ratio": 0.2, "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.2, "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.checkpoint.load_contents": ["model", "optimizer", "extra"],
}
ENV_KEY = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"


def fail(msg: str) -> None:
    print(f"standin_verl: {msg}", file=sys.stderr)
    sys.exit(1)


def parse(argv: list[str]) -> dict:
    cfg = dict(KNOWN)
    for o in argv:
        if "=" not in o:
            fail(f"override {o!r} has no '='")
        key, raw = o.split("=", 1)
        plus = key.startswith("+")
        key = key.lstrip("+")
        if not plus and key not in KNOWN:
            fail(f"Could not override '{key}'. Key '{key}' is not in struct (use +{key}=...)")
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            val = raw[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        else:
            val = yaml.safe_load(raw) if raw else ""
        cfg[key] = val
    return cfg


def save(ckpt: Path, step: int, state: dict, keep: int | None, saved: list[Path]) -> None:
    folder = ckpt / f"global_step_{step}"
    actor = folder / "actor"
    actor.mkdir(parents=True, exist_ok=True)
    (actor / "model_world_size_1_rank_0.pt").write_bytes(os.urandom(256))
    (actor / "optim_world_size_1_rank_0.pt").write_text(json.dumps({"lr": state["optimizer_lr"]}))
    (actor / "extra_state_world_size_1_rank_0.pt").write_text(json.dumps({"lr_scheduler": {"base_lrs": [state["base_lr"]]}}))
    saved.append(actor)
    if keep is not None and len(saved) > keep:  # verl's checkpoint manager: this process's older saves
        for old in saved[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        del saved[:-keep]
    (folder / "data.pt").write_text(json.dumps({"step": step}))
    (ckpt / "latest_checkpointed_iteration.txt").write_text(str(step))


def main() -> None:
    cfg = parse(sys.argv[1:])
    loggers = cfg["trainer.logger"]
    if "file" not in loggers:
        fail("no 'file' in trainer.logger: nothing would be written for rlguard to read")
    path = cfg.get(ENV_KEY) or os.environ.get("VERL_FILE_LOGGER_PATH")
    if not path:
        fail("VERL_FILE_LOGGER_PATH is not set")
    log = open(path, "wb", buffering=0)
    ckpt = Path(cfg["trainer.default_local_dir"])
    ckpt.mkdir(parents=True, exist_ok=True)
    total = int(cfg.get("standin.total_steps", 12))
    collapse_at = cfg.get("standin.collapse_at")
    kl_keys = [k for k, on in (("actor_rollout_ref.actor.kl_loss_coef", cfg["actor_rollout_ref.actor.use_kl_loss"]),
                               ("algorithm.kl_ctrl.kl_coef", cfg["algorithm.use_kl_in_reward"])) if on]
    kl_coef = float(cfg[kl_keys[0]]) if kl_keys else 0.0
    new_lr = float(cfg["actor_rollout_ref.actor.optim.lr"])
    state = {"optimizer_lr": new_lr, "base_lr": new_lr}
    pending_lr = None  # a fresh scheduler's lr, applied after the first (restored-lr) step

    mode, start = cfg["trainer.resume_mode"], 0
    folder = None
    if mode == "auto" and (ckpt / "latest_checkpointed_iteration.txt").exists():
        folder = ckpt / f"global_step_{int((ckpt / 'latest_checkpointed_iteration.txt').read_text())}"
    elif mode == "resume_path":
        rp = str(cfg["trainer.resume_from_path"])
        if "global_step_" not in rp:
            fail("resume ckpt must specify the global_steps")
        folder = Path(rp)
    elif mode not in ("auto", "disable"):
        fail(f"unknown trainer.resume_mode {mode!r}")
    if folder is not None:
        start = int(str(folder).split("global_step_")[-1])
        actor = folder / "actor"
        try:
            saved_lr = json.loads((actor / "optim_world_size_1_rank_0.pt").read_text())["lr"]
            base = json.loads((actor / "extra_state_world_size_1_rank_0.pt").read_text())["lr_scheduler"]["base_lrs"][0]
        except (OSError, ValueError, KeyError) as e:
            fail(f"cannot load {folder}: {e}")
        if "extra" in cfg["actor_rollout_ref.actor.checkpoint.load_contents"]:
            state = {"optimizer_lr": saved_lr, "base_lr": base}  # the restored scheduler wins over optim.lr
        else:
            state = {"optimizer_lr": saved_lr, "base_lr": new_lr}
            pending_lr = new_lr
        print(f"Load from checkpoint folder: {folder}", flush=True)
        log.write(json.dumps({"step": start, "data": {"val-core/standin/reward/mean@1": 0.5}}).encode() + b"\n")

    saved: list[Path] = []
    keep = cfg["trainer.max_actor_ckpt_to_keep"]
    save_freq = int(cfg["trainer.save_freq"])
    for step in range(start + 1, total + 1):
        time.sleep(float(cfg.get("standin.step_s", 0.05)))
        lr = state["optimizer_lr"]
        collapsed = collapse_at is not None and step >= int(collapse_at) and kl_coef < float(cfg.get("standin.safe_kl_coef", 1.0))
        data = {"actor/kl_loss": 2.0 + step if collapsed else 0.01, "actor/entropy": 0.01 if collapsed else 1.2,
                "actor/lr": lr, "actor/pg_clipfrac": 0.05, "critic/score/mean": 0.4,
                "response_length/mean": 100.0, "actor/pg_loss": math.nan if collapsed and step > int(collapse_at) + 3 else 0.1,
                "training/global_step": step}
        if pending_lr is not None:
            state = {"optimizer_lr": pending_lr, "base_lr": pending_lr}
            pending_lr = None
        if save_freq > 0 and (step % save_freq == 0 or step == total):
            save(ckpt, step, state, keep, saved)
        line = json.dumps({"step": step, "data": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                  for k, v in data.items()}})
        log.write(line.encode() + b"\n")
        if cfg.get("standin.crash_at") == step and os.environ.get("RLGUARD_ATTEMPT") == "0":
            fail(f"simulated crash after step {step}")
        if cfg.get("standin.rewrite_at") == step:
            (ckpt / f"global_step_{cfg['standin.rewrite_step']}" / "actor" / "model_world_size_1_rank_0.pt").write_bytes(
                os.urandom(300))
    log.close()


if __name__ == "__main__":
    main()
