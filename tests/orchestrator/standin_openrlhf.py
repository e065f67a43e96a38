"""STAND-IN for `python -m openrlhf.cli.train_ppo_ray` (no GPU, no Ray, no DeepSpeed): it
honours the flags rlguard's OpenRLHF launcher uses and writes OpenRLHF's real layouts, so the
launcher can be tested under the real supervisor. What it copies from OpenRLHF @ 3c3be62 (see
orchestrator/openrlhf_launch.py for the line references):

- flags: argparse with the real dotted names and defaults; an unknown flag is an error (exit 2);
- output: `(PPOTrainer pid=P) INFO <date> ppo_trainer.py:547] ✨ Global step N: {dict repr}` on
  stderr, as Ray forwards the trainer actor's logging; logged before checkpoint N is saved;
- checkpoints: DeepSpeed tags under --ckpt.path/_actor and /_critic (global_stepN/
  mp_rank_00_model_states.pt with the client state, zero_pp_rank_0_mp_rank_00_optim_states.pt),
  each dir's `latest` naming the newest tag; rotation as save_ckpt does it (beyond --ckpt.max_num:
  no-metric first, then oldest; best* exempt);
- loading (--ckpt.load_enable and _actor exists): the tag `latest` names, for actor and critic;
  the step from the client state; the lr from the restored scheduler (DeepSpeed), not --actor.adam.lr.

Its own flags (--standin.*): total_steps, collapse_at (from this step the KL blows up, unless
--algo.kl.init_coef >= safe_kl_coef), safe_kl_coef, step_s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="standin_openrlhf")
    p.add_argument("--ckpt.path", type=str, default="./ckpt/checkpoints_ppo_ray")
    p.add_argument("--ckpt.save_steps", type=int, default=-1)
    p.add_argument("--ckpt.max_num", type=int, default=3)
    p.add_argument("--ckpt.max_mem", type=float, default=float("inf"))
    p.add_argument("--ckpt.load_enable", action="store_true", default=False)
    p.add_argument("--algo.kl.init_coef", type=float, default=0.01)
    p.add_argument("--actor.eps_clip", type=float, default=0.2)
    p.add_argument("--actor.eps_clip_low_high", type=float, nargs=2, default=None)
    p.add_argument("--actor.adam.lr", type=float, default=1e-6)
    p.add_argument("--actor.model_name_or_path", type=str, default=None)
    p.add_argument("--standin.total_steps", type=int, default=12)
    p.add_argument("--standin.collapse_at", type=int, default=None)
    p.add_argument("--standin.safe_kl_coef", type=float, default=1.0)
    p.add_argument("--standin.step_s", type=float, default=0.05)
    return p


def save_ckpt(save_dir: Path, tag: str, max_num: int, client_state: dict) -> None:
    save_dir.mkdir(parents=True, exist_ok=True)
    while True:  # deepspeed.py save_ckpt: rotation before the save, best* exempt
        regular = sorted((p for p in save_dir.iterdir() if p.is_dir() and not p.name.startswith("best")),
                         key=lambda p: p.stat().st_mtime)
        if max(0, len(regular) - max_num + 1) == 0 or not regular:
            break
        shutil.rmtree(regular[0])
        print(f"Deleted checkpoint {regular[0]} (no metric (oldest))", file=sys.stderr, flush=True)
    d = save_dir / tag
    d.mkdir(exist_ok=True)
    (d / "mp_rank_00_model_states.pt").write_text(json.dumps({"client_state": client_state}))
    (d / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(os.urandom(256))
    (save_dir / "latest").write_text(tag)


def main() -> None:
    args = vars(parser().parse_args())
    ckpt = Path(args["ckpt.path"])
    actor_dir, critic_dir = ckpt / "_actor", ckpt / "_critic"
    lr, start = args["actor.adam.lr"], 0
    if args["ckpt.load_enable"] and actor_dir.exists():
        tag = (actor_dir / "latest").read_text().strip()
        critic_tag = (critic_dir / "latest").read_text().strip() if critic_dir.exists() else tag
        if critic_tag != tag:
            print(f"standin_openrlhf: actor at {tag} but critic at {critic_tag}", file=sys.stderr)
            sys.exit(1)
        states = json.loads((actor_dir / tag / "mp_rank_00_model_states.pt").read_text())["client_state"]
        start, lr = states["global_step"], states["lr"]  # DeepSpeed restores the scheduler: the old lr
        print(f"checkpoint_states: {states}", file=sys.stderr, flush=True)
    kl_coef = args["algo.kl.init_coef"]
    for step in range(start + 1, args["standin.total_steps"] + 1):
        time.sleep(args["standin.step_s"])
        collapsed = (args["standin.collapse_at"] is not None and step >= args["standin.collapse_at"]
                     and kl_coef < args["standin.safe_kl_coef"])
        status = {"policy_loss": 0.1, "kl": 3.0 + step if collapsed else 0.01, "actor_lr": lr,
                  "ppo_clip_ratio": 0.04, "rollout/reward_mean": 0.3, "rollout/response_length_mean": 120.0,
                  "entropy_loss": float("nan") if collapsed and step > args["standin.collapse_at"] + 3 else 1.1}
        print(f"(PPOTrainer pid={os.getpid()}) INFO 12-02 08:00:00 ppo_trainer.py:547] ✨ Global step {step}: {status}",
              file=sys.stderr, flush=True)
        if args["ckpt.save_steps"] > 0 and step % args["ckpt.save_steps"] == 0:
            tag = f"global_step{step}"
            client = {"global_step": step, "episode": 0, "lr": lr}
            save_ckpt(actor_dir, tag, args["ckpt.max_num"], client)
            save_ckpt(critic_dir, tag, args["ckpt.max_num"], client)


if __name__ == "__main__":
    main()
