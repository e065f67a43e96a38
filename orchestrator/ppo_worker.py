"""The built-in PPO-max worker: `python -m orchestrator.ppo_worker --config C --run-dir RUN
[--resume CKPT] [--set key=value ...]`.

The supervisor launches it by default. It is `rlguard train` plus the SDK: after each step it
reports the metrics, applies the supervisor's commands at the step boundary, and writes and
announces checkpoints (every `checkpoint_every` steps, at the end, and on request).

--config may be a full run config (its `trainer:` section is used) or a plain trainer config.
Resume order: load the checkpoint (--resume, or RLGUARD_RESUME), then apply the constraint
values the supervisor passed (a rollback's tightened values outrank the checkpoint's), then
skip RLGUARD_SKIP_BATCHES batches.
Exit codes: 0 finished or stopped on command, 2 bad config / checkpoint / data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.sdk import WorkerClient, connect
from rlguard.policies.decision import CONSTRAINT_NAMES

RUN_SECTIONS = {"trainer", "monitors", "policies", "supervisor"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator.ppo_worker", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="run config (trainer: section) or trainer config YAML")
    p.add_argument("--run-dir", required=True, help="run directory (metrics.jsonl, checkpoints/)")
    p.add_argument("--resume", help="checkpoint directory to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def load_worker_config(path: str | None, overrides: list[str]):
    """The TrainConfig from a run config's trainer section (or a plain trainer file) + overrides."""
    from rlguard.ppo.config import load_train_config

    section: dict = {}
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        section = raw.get("trainer") or {} if isinstance(raw, dict) and set(raw) & RUN_SECTIONS else raw
    flat = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in section.items()]
    return load_train_config(None, flat + list(overrides))


def apply_command(trainer, client: WorkerClient, cmd: Command, flags: dict, saver=None) -> None:
    """Apply one command at a step boundary; failures are acknowledged, never raised."""
    from rlguard.ppo.checkpoint_files import CheckpointError

    try:
        if cmd.kind is CommandKind.SET_CONSTRAINTS:
            values = {k: v for k, v in cmd.params.items() if k in CONSTRAINT_NAMES}
            client.done(cmd, True, json.dumps(trainer.set_constraints(**values)))
        elif cmd.kind is CommandKind.SAVE:
            flags["save"] = True
            client.done(cmd, True, "checkpoint at this step boundary")
        elif cmd.kind is CommandKind.EVALUATE:
            flags["eval"] = True
            client.done(cmd, True, "evaluation with the next step")
        elif cmd.kind is CommandKind.STOP:
            flags["stop"] = True
            client.done(cmd, True, f"stopping at step {trainer.step}")
        elif cmd.kind is CommandKind.LOAD:
            if saver is not None:
                saver.wait()  # the checkpoint to load may be the one still being written
            trainer.load_checkpoint(cmd.params["path"])
            trainer.set_constraints(**{k: v for k, v in (cmd.params.get("constraints") or {}).items()
                                       if k in CONSTRAINT_NAMES})
            trainer.skip_batches(int(cmd.params.get("skip_batches", 0)))
            flags["save"] = False  # this step's checkpoint belongs to the abandoned timeline
            client.done(cmd, True, f"loaded step {trainer.step}")
        else:
            client.done(cmd, False, f"unsupported command {cmd.kind.value}")
    except (CheckpointError, ValueError, KeyError, OSError) as e:
        client.done(cmd, False, f"{type(e).__name__}: {e}")


class CheckpointSaver:
    """Writes the worker's checkpoints, on a background thread when `async_checkpoint` is on.

    A checkpoint is announced (client.checkpoint_written) only once its directory is complete.
    A failed write is logged on stderr and counted; the count is reported with the next step's
    metrics as `checkpoint_failures` (cumulative), so the supervisor and dashboards see it;
    training goes on."""

    def __init__(self, trainer, client: WorkerClient, use_async: bool):
        from rlguard.ppo.async_checkpoint import AsyncCheckpointWriter

        self.trainer, self.client = trainer, client
        self.writer = AsyncCheckpointWriter(on_done=self._announce, on_error=self._failed) if use_async else None
        self.failures = 0

    def save(self, path: Path) -> None:
        if self.writer is None:
            try:
                written = self.trainer.save_checkpoint(path)
            except OSError as e:
                self._failed(self.trainer.step, path, e)
                return
            if self.trainer.rank == 0:
                self._announce(self.trainer.step, written)
            return
        snapshot = self.trainer.checkpoint_snapshot()  # collective: every rank takes part
        if snapshot is not None:
            self.writer.submit(snapshot, path)

    def wait(self) -> None:
        if self.writer is not None:
            self.writer.wait()

    def _announce(self, step: int, path: Path) -> None:
        self.client.checkpoint_written(step, path)

    def _failed(self, step: int, path: Path, exc: BaseException) -> None:
        self.failures += 1
        print(f"ppo_worker: checkpoint of step {step} to {path} failed: {type(exc).__name__}: {exc};"
              " training continues", file=sys.stderr, flush=True)


def train(trainer, client: WorkerClient, run_dir: Path) -> str:
    """The training loop with the SDK; returns how it ended ("completed" or "stopped")."""
    from rlguard.ppo.checkpoint_files import checkpoint_dir_name

    cfg = trainer.cfg
    ckpt_root = run_dir / "checkpoints"
    flags = {"save": False, "eval": False, "stop": False}
    saver = CheckpointSaver(trainer, client, cfg.async_checkpoint)
    if cfg.checkpoint_start and cfg.checkpoint_every and trainer.step == 0:
        # Measured (bench/notes/demo.md, seed 1): a large enough learning rate breaks the policy in
        # its first update; without the starting state on disk the supervisor can only halt.
        saver.save(ckpt_root / checkpoint_dir_name(0))
    try:
        with open(run_dir / "samples.jsonl", "a") if trainer.rank == 0 else _NullFile() as samples_f:
            while trainer.step < cfg.steps:
                metrics = trainer.train_step()
                step = trainer.step
                if flags["eval"] or (cfg.eval_every and step % cfg.eval_every == 0):
                    metrics.update(trainer.evaluate())
                    flags["eval"] = False
                if saver.failures:
                    metrics["checkpoint_failures"] = float(saver.failures)
                client.report(step, metrics)
                # This step's samples, all of them (recent_samples keeps only keep_samples).
                for s in trainer.last_samples:
                    samples_f.write(json.dumps(s) + "\n")
                samples_f.flush()
                flags["save"] = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps
                for cmd in client.commands(step):
                    apply_command(trainer, client, cmd, flags, saver)
                if flags["save"]:
                    saver.save(ckpt_root / checkpoint_dir_name(trainer.step))
                if flags["stop"]:
                    return "stopped"
        return "completed"
    finally:
        saver.wait()  # the last checkpoint is complete and announced before the worker ends


class _NullFile:
    """samples.jsonl stand-in for ranks > 0 (rank 0 writes the run's files)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def write(self, _text: str) -> None:
        return None

    def flush(self) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from rlguard.ppo.checkpoint_files import CheckpointError
    from rlguard.ppo.config import ConfigError

    run_dir = Path(args.run_dir)
    try:
        cfg = load_worker_config(args.config, args.overrides)
    except (ConfigError, OSError, yaml.YAMLError) as e:
        print(f"ppo_worker: {e}", file=sys.stderr)
        return 2
    from rlguard.ppo.distributed import init_from_env
    from rlguard.ppo.trainer import PPOTrainer

    init_from_env(cfg.device)  # under torchrun: join the process group before building anything
    client = connect(run_dir)
    trainer = PPOTrainer(cfg, run_dir)
    resume = args.resume or client.resume_path
    try:
        if resume:
            trainer.load_checkpoint(resume)
        if client.initial_constraints:
            trainer.set_constraints(**{k: v for k, v in client.initial_constraints.items() if k in CONSTRAINT_NAMES})
        if client.skip_batches:
            trainer.skip_batches(client.skip_batches)
    except CheckpointError as e:
        print(f"ppo_worker: {e}", file=sys.stderr)
        client.close("failed")
        return 2
    t0 = time.time()
    try:
        how = train(trainer, client, run_dir)
    except BaseException:
        client.close("failed")
        raise
    client.close(how)
    print(f"ppo_worker: {how} at step {trainer.step} in {time.time() - t0:.1f} s", file=sys.stderr)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Every rank reaches this point before any tears the group down: a rank that destroys
        # its gloo group while a peer is still closing aborts that peer ("terminate called
        # without an active exception"), and torchrun then reports the finished run as failed.
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
