"""A plain PyTorch training loop made supervisable with the rlguard SDK (docs/SDK.md).

    python examples/custom_loop.py --run-dir runs/toy                # standalone: writes runs/toy/metrics.jsonl
    rlguard run examples/custom_loop.yaml --out runs/toy-sup         # supervised (a `command:` worker)

The "model" is deliberately small so the example runs anywhere in a second: a policy over
response lengths 1..MAX_LEN trained by REINFORCE with a KL penalty to its frozen starting copy.
From step --hack-from on, the reward pays for length: it can be gamed (the policy drifts to the
length cap and away from the reference: the paper's collapse in miniature), which is what the
supervisor is for. Everything marked `# rlguard` is the whole integration:

    client = connect(run_dir)                  # supervised iff started by `rlguard run`
    client.report(step, metrics)               # after each optimizer step (METRICS.md names)
    for cmd in client.commands(step): ...      # tighten / save / rollback / stop at the boundary
    client.checkpoint_written(step, path)      # after each checkpoint (atomic dir + manifest)
    client.close()
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.sdk import WorkerClient, connect
from rlguard.ppo.checkpoint_files import checkpoint_dir_name, verify_checkpoint, write_checkpoint_dir

MAX_LEN = 32
BATCH = 64


class Trainer:
    """The training script's own state: a policy, its reference, an optimizer, two knobs."""

    def __init__(self, *, lr: float, kl_coef: float, seed: int, hack_from: int = 0):
        torch.manual_seed(seed)
        self.logits = torch.nn.Parameter(torch.randn(MAX_LEN) * 0.1 - torch.linspace(0, 2, MAX_LEN))
        self.ref = self.logits.detach().clone()  # the frozen "SFT model"
        self.opt = torch.optim.Adam([self.logits], lr=lr)
        self.kl_coef = kl_coef
        self.step = 0
        self.hack_from = hack_from
        self.gen = torch.Generator().manual_seed(seed + 1)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def train_step(self) -> dict[str, float]:
        dist = torch.distributions.Categorical(logits=self.logits)
        ref = torch.distributions.Categorical(logits=self.ref)
        lengths = torch.multinomial(dist.probs.detach(), BATCH, replacement=True, generator=self.gen)
        if self.step + 1 >= self.hack_from:  # the reward model's blind spot: longer is "better"
            reward = (lengths + 1).float() / MAX_LEN
        else:  # an honest reward model: length says nothing about quality (noise around a plateau)
            reward = 0.5 + 0.05 * torch.randn(BATCH, generator=self.gen)
        logp = dist.log_prob(lengths)
        kl_per = (logp - ref.log_prob(lengths)).detach()
        advantage = reward - self.kl_coef * kl_per
        advantage = advantage - advantage.mean()
        loss = -(advantage * logp).mean()
        self.opt.zero_grad()
        loss.backward()
        grad_norm = float(self.logits.grad.norm())
        self.opt.step()
        self.step += 1
        return {"reward": float(reward.mean()), "kl": float(kl_per.mean()), "response_length": float(lengths.float().mean() + 1),
                "perplexity": math.exp(float(-logp.detach().mean())), "entropy": float(dist.entropy().detach()),
                "truncated_fraction": float((lengths == MAX_LEN - 1).float().mean()), "policy_loss": float(loss.detach()),
                "grad_norm": grad_norm, "kl_coef": self.kl_coef, "lr": self.lr}

    def set_constraints(self, kl_coef: float | None = None, lr: float | None = None, **_ignored) -> dict:
        if kl_coef is not None:
            self.kl_coef = float(kl_coef)
        if lr is not None:
            for g in self.opt.param_groups:
                g["lr"] = float(lr)
        return {"kl_coef": self.kl_coef, "lr": self.lr}

    def save(self, path: Path) -> Path:
        def write(tmp: Path) -> None:
            torch.save({"logits": self.logits.detach(), "opt": self.opt.state_dict(), "step": self.step,
                        "gen": self.gen.get_state()}, tmp / "state.pt")

        return write_checkpoint_dir(path, write, step=self.step, constraints={"kl_coef": self.kl_coef, "lr": self.lr})

    def load(self, path: str | Path) -> None:
        verify_checkpoint(path)  # never load a checkpoint whose checksums fail
        state = torch.load(Path(path) / "state.pt", weights_only=True)  # tensors and plain data only: no code
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])


def apply(trainer: Trainer, client: WorkerClient, cmd: Command, flags: dict) -> None:  # rlguard
    """One supervisor command at a step boundary; failures are acknowledged, never raised."""
    try:
        if cmd.kind is CommandKind.SET_CONSTRAINTS:
            client.done(cmd, True, json.dumps(trainer.set_constraints(**cmd.params)))
        elif cmd.kind is CommandKind.SAVE:
            flags["save"] = True
        elif cmd.kind is CommandKind.LOAD:  # in-process rollback
            trainer.load(cmd.params["path"])
            trainer.set_constraints(**(cmd.params.get("constraints") or {}))
            flags["save"] = False  # this step's checkpoint would belong to the abandoned timeline
        elif cmd.kind is CommandKind.STOP:
            flags["stop"] = True
        else:
            client.done(cmd, False, f"{cmd.kind.value} is not supported by this script")
    except Exception as e:  # a failed command is reported; the supervisor decides what next
        client.done(cmd, False, f"{type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hack-from", type=int, default=0, help="the reward becomes gameable from this step on")
    p.add_argument("--resume", help="checkpoint directory to start from (the supervisor's {resume})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="constraint override (the supervisor's {overrides}), e.g. --set kl_coef=0.1")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    trainer = Trainer(lr=args.lr, kl_coef=args.kl_coef, seed=args.seed, hack_from=args.hack_from)
    client = connect(args.run_dir)  # rlguard
    resume = args.resume or client.resume_path  # rlguard: a restart-rollback relaunch
    if resume:
        trainer.load(resume)
    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    trainer.set_constraints(**{k: float(v) for k, v in {**overrides, **client.initial_constraints}.items()})
    flags = {"save": False, "stop": False}
    while trainer.step < args.steps and not flags["stop"]:
        metrics = trainer.train_step()
        step = trainer.step
        client.report(step, metrics)  # rlguard
        flags["save"] = step % args.checkpoint_every == 0 or step == args.steps
        for cmd in client.commands(step):  # rlguard
            apply(trainer, client, cmd, flags)
        if flags["save"]:
            path = trainer.save(Path(client.run_dir) / "checkpoints" / checkpoint_dir_name(trainer.step))
            client.checkpoint_written(trainer.step, path)  # rlguard
    client.close("stopped" if flags["stop"] else "completed")  # rlguard
    return 0


if __name__ == "__main__":
    sys.exit(main())
