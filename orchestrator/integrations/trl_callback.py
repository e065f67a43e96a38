"""`RLGuardCallback`: trl's GRPOTrainer / RLOOTrainer (any transformers Trainer) under rlguard.

    from rlguard.orchestrator.integrations import RLGuardCallback
    trainer = GRPOTrainer(model=..., args=GRPOConfig(..., beta=0.04), ...)
    guard = RLGuardCallback.install(trainer, run_dir="runs/grpo")   # supervised under `rlguard run`
    trainer.train(resume_from_checkpoint=guard.resume_checkpoint())
    guard.close()

What it does at each optimizer step (transformers calls on_log after on_step_end, before save):
- reports the step's logged metrics, renamed to docs/METRICS.md (metric_names.TRL), plus the
  constraint values in force (`kl_coef`, `clip_range`, `lr`) so tightening shows in the stream;
- then applies the supervisor's commands at that step boundary:
    set_constraints  kl_coef -> trainer.beta (trl reads `self.beta` in every loss/reward
                     computation); clip_range -> trainer.epsilon_low (epsilon_high scaled by the
                     same factor, so an asymmetric DAPO-style clip keeps its shape); lr -> the base
                     learning rate: scheduler.base_lrs and each param group's `initial_lr`, and
                     the group's current `lr` rescaled so the schedule's shape is kept
    save             control.should_save (the trainer writes its checkpoint at this step)
    load             in-process rollback to a trainer checkpoint (see `load_checkpoint`)
    evaluate         control.should_evaluate (needs an eval_dataset)
    stop             control.should_training_stop
- every trainer checkpoint (output_dir/checkpoint-N) is moved (or copied) into
  RUN/checkpoints/step-N with an rlguard manifest (checksums, metrics, constraints) and
  announced with client.checkpoint_written: from then on the supervisor's registry owns it
  (health, retention: the last healthy one is never pruned, which trl's save_total_limit
  does not know about).

Limits (documented, not hidden): beta = 0 at construction means trl built no reference model,
so kl_coef cannot be raised later (the command is acknowledged as failed). After an in-process
rollback the data loader keeps going forward: the batches of the abandoned steps are skipped,
not replayed, and the run ends when the trainer's planned number of batches is used up.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.integrations.metric_names import has_training_metrics, map_metrics
from rlguard.orchestrator.sdk import WorkerClient, connect
from rlguard.policies.decision import CONSTRAINT_NAMES

log = logging.getLogger("rlguard.trl")

TRAINER_STATE_FILE = "trainer_state.json"


class ConstraintError(ValueError):
    """A constraint the trainer cannot take (acknowledged to the supervisor as failed)."""


class RLGuardCallback(TrainerCallback):
    """Connects a transformers/trl Trainer to the rlguard supervisor (see the module docstring).

    trainer: the Trainer the callback steers (callbacks receive no trainer, and rollback needs it).
    client: the SDK client; default `connect(run_dir)` (supervised when RLGUARD_CONTROL is set).
    run_dir: run directory when the supervisor did not set RLGUARD_RUN_DIR.
    checkpoint_mode: "move" (default: the checkpoint changes owner, no extra disk) or "copy"
        (the trainer keeps its own checkpoint-N too, e.g. for `resume_from_checkpoint=True`).
    trainer_name: metric name table (metric_names.TRAINERS).
    log_every_step: set args.logging_steps = 1 at train start: rlguard judges every step.
    """

    def __init__(self, trainer, client: WorkerClient | None = None, *, run_dir: str | Path | None = None,
                 checkpoint_mode: str = "move", trainer_name: str = "trl", log_every_step: bool = True):
        if checkpoint_mode not in ("move", "copy"):
            raise ValueError(f"checkpoint_mode={checkpoint_mode!r}: expected 'move' or 'copy'")
        self.trainer = trainer
        self.client = client if client is not None else connect(run_dir or Path(trainer.args.output_dir) / "rlguard")
        self.checkpoint_mode = checkpoint_mode
        self.trainer_name = trainer_name
        self.log_every_step = log_every_step
        self.ckpt_root = self.client.run_dir / "checkpoints"
        self.applied: list[tuple[int, str, bool, str]] = []  # (step, kind, ok, detail): what happened, for tests/logs
        self._ref_model_missing = float(getattr(trainer, "beta", 0.0) or 0.0) == 0.0
        self._last_metrics: dict[str, float] = {}
        self._closed = False
        self._stopped = False
        self._pending: tuple[int, dict] | None = None  # a step's event waiting for its evaluation
        self._carry: dict[str, float] = {}  # eval metrics for the next event

    @classmethod
    def install(cls, trainer, **kwargs) -> RLGuardCallback:
        """Create the callback for `trainer` and register it (trainer.add_callback)."""
        cb = cls(trainer, **kwargs)
        trainer.add_callback(cb)
        return cb

    # ------------------------------------------------------------------ start / resume

    def resume_checkpoint(self) -> str | None:
        """The checkpoint a relaunch must start from (RLGUARD_RESUME), verified; pass it to
        trainer.train(resume_from_checkpoint=...). None for a fresh start."""
        path = self.client.resume_path
        if not path:
            return None
        from rlguard.ppo.checkpoint_files import verify_checkpoint

        verify_checkpoint(path)  # raises CheckpointError: never resume from a corrupt checkpoint
        return str(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.log_every_step and (args.logging_steps != 1 or state.logging_steps != 1):
            log.info("rlguard: logging_steps %s -> 1 (the supervisor judges every step)", args.logging_steps)
            args.logging_steps = 1
            state.logging_steps = 1  # DefaultFlowCallback reads the state's copy, made before this hook
        if self.client.initial_constraints:  # a relaunch carries the tightened values
            self.set_constraints(**{k: v for k, v in self.client.initial_constraints.items() if k in CONSTRAINT_NAMES})
        if self.client.skip_batches:
            log.warning("rlguard: RLGUARD_SKIP_BATCHES=%d not applied: the Trainer resumes at the checkpoint's "
                        "data position", self.client.skip_batches)

    # ------------------------------------------------------------------ constraints

    def constraints(self) -> dict[str, float]:
        """The constraint values in force: kl_coef (beta), clip_range (epsilon_low), lr (base lr)."""
        out: dict[str, float] = {}
        t = self.trainer
        if hasattr(t, "beta"):
            out["kl_coef"] = float(t.beta)
        if hasattr(t, "epsilon_low"):
            out["clip_range"] = float(t.epsilon_low)
        sched = getattr(t, "lr_scheduler", None)
        if sched is not None and getattr(sched, "base_lrs", None):
            out["lr"] = float(sched.base_lrs[0])
        elif getattr(t, "optimizer", None) is not None:
            out["lr"] = float(t.optimizer.param_groups[0].get("initial_lr", t.optimizer.param_groups[0]["lr"]))
        else:
            out["lr"] = float(t.args.learning_rate)
        return out

    def set_constraints(self, kl_coef: float | None = None, clip_range: float | None = None,
                        lr: float | None = None) -> dict[str, float]:
        """Apply new values from the next step on; returns the values now in force."""
        t = self.trainer
        if kl_coef is not None:
            if not hasattr(t, "beta"):
                raise ConstraintError(f"{type(t).__name__} has no KL coefficient (beta) to set")
            if self._ref_model_missing and float(kl_coef) != 0.0:
                raise ConstraintError("the trainer was built with beta=0.0, so trl created no reference model; "
                                      "start with beta > 0 (e.g. 0.001) for rlguard to be able to tighten it")
            t.beta = float(kl_coef)
        if clip_range is not None:
            if not hasattr(t, "epsilon_low"):
                raise ConstraintError(f"{type(t).__name__} has no clip epsilon to set")
            if clip_range <= 0:
                raise ConstraintError(f"clip_range={clip_range}: must be > 0")
            old_low = float(t.epsilon_low)
            # Scale epsilon_high by the same factor so an asymmetric (DAPO clip-higher) range keeps its shape.
            t.epsilon_high = float(t.epsilon_high) * clip_range / old_low if old_low > 0 else float(clip_range)
            t.epsilon_low = float(clip_range)
        if lr is not None:
            if lr <= 0:
                raise ConstraintError(f"lr={lr}: must be > 0")
            self._set_base_lr(float(lr))
        return self.constraints()

    def _set_base_lr(self, lr: float) -> None:
        t = self.trainer
        opt, sched = getattr(t, "optimizer", None), getattr(t, "lr_scheduler", None)
        if opt is None:  # before training starts: the Trainer builds its optimizer from args
            t.args.learning_rate = lr
            return
        base_lrs = list(getattr(sched, "base_lrs", []) or [g.get("initial_lr", g["lr"]) for g in opt.param_groups])
        for i, group in enumerate(opt.param_groups):
            old_base = base_lrs[i] if i < len(base_lrs) else group.get("initial_lr", group["lr"])
            scale = group["lr"] / old_base if old_base else 1.0  # where the schedule is now (warmup/decay)
            group["initial_lr"] = lr
            group["lr"] = lr * scale
        if sched is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs = [lr] * len(sched.base_lrs)
        t.args.learning_rate = lr

    # ------------------------------------------------------------------ each step

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Every rank reports and polls: the SDK lets only rank 0 talk and broadcasts its commands.
        metrics = map_metrics(logs or {}, self.trainer_name)
        if not has_training_metrics(metrics):  # an evaluation record (eval_* keys)
            if self._pending is not None:  # the evaluation of the step held back below: report both now
                step, held = self._pending
                self._pending = None
                self._report_and_apply(step, {**held, **metrics}, control)
            elif metrics:  # an evaluation outside the step flow (e.g. an `evaluate` command): next event
                self._carry.update(metrics)
            return
        if "lr" in metrics:  # the scheduled value; `lr` is the constraint (base lr) the supervisor sets
            metrics["lr_scheduled"] = metrics.pop("lr")
        metrics.update(self.constraints())
        metrics.update(self._carry)
        self._carry = {}
        step = int(state.global_step)
        if control.should_evaluate:
            # transformers evaluates right after this log, in the same step boundary: hold the event so
            # the step's eval_* metrics travel with it (one event per step; the supervisor drops repeats).
            self._pending = (step, metrics)
            return
        self._report_and_apply(step, metrics, control)

    def _report_and_apply(self, step: int, metrics: dict, control) -> None:
        self._last_metrics = metrics
        self.client.report(step, metrics)
        for cmd in self.client.commands(step):
            self._apply(cmd, step, self.trainer.state, control)

    def _apply(self, cmd: Command, step: int, state, control) -> None:
        """Apply one command at this step boundary; failures are acknowledged, never raised."""
        from rlguard.ppo.checkpoint_files import CheckpointError

        try:
            if cmd.kind is CommandKind.SET_CONSTRAINTS:
                values = {k: float(v) for k, v in cmd.params.items() if k in CONSTRAINT_NAMES}
                detail = _fmt(self.set_constraints(**values))
            elif cmd.kind is CommandKind.SAVE:
                control.should_save = True
                detail = f"trainer checkpoint at step {step}"
            elif cmd.kind is CommandKind.EVALUATE:
                if getattr(self.trainer, "eval_dataset", None) is None:
                    raise ConstraintError("the trainer has no eval_dataset: nothing to evaluate")
                control.should_evaluate = True
                detail = "evaluation at this step"
            elif cmd.kind is CommandKind.STOP:
                control.should_training_stop = True
                control.should_save = False
                self._stopped = True
                detail = f"stopping at step {step}: {cmd.params.get('reason', '')}"
            elif cmd.kind is CommandKind.LOAD:
                self.load_checkpoint(cmd.params["path"], state)
                self.set_constraints(**{k: float(v) for k, v in (cmd.params.get("constraints") or {}).items()
                                        if k in CONSTRAINT_NAMES})
                control.should_save = False  # this step's checkpoint belongs to the abandoned timeline
                control.should_evaluate = False
                detail = f"loaded step {state.global_step} from {cmd.params['path']}"
            else:
                raise ConstraintError(f"unsupported command {cmd.kind.value}")
        except (CheckpointError, ConstraintError, KeyError, OSError, RuntimeError, ValueError) as e:
            self.client.done(cmd, False, f"{type(e).__name__}: {e}")
            self.applied.append((step, cmd.kind.value, False, str(e)))
            log.warning("rlguard: command %s failed at step %d: %s", cmd.kind.value, step, e)
            return
        self.client.done(cmd, True, detail)
        self.applied.append((step, cmd.kind.value, True, detail))
        log.info("rlguard: %s at step %d: %s", cmd.kind.value, step, detail)

    # ------------------------------------------------------------------ rollback

    def load_checkpoint(self, path: str | Path, state=None) -> None:
        """In-process rollback: verify, then load weights, optimizer, scheduler and trainer state.

        RNG state is deliberately not restored: replaying the same random draws that led into
        the collapse is the opposite of what a rollback wants. trl's buffered rollouts (made by
        the abandoned policy) are dropped so the next step generates afresh."""
        from transformers import TrainerState

        from rlguard.ppo.checkpoint_files import verify_checkpoint

        path = Path(path)
        verify_checkpoint(path)
        t = self.trainer
        t._load_from_checkpoint(str(path))
        t._load_optimizer_and_scheduler(str(path))
        loaded = TrainerState.load_from_json(str(path / TRAINER_STATE_FILE))
        state = state if state is not None else t.state
        for name in ("global_step", "epoch", "total_flos", "num_input_tokens_seen", "log_history",
                     "best_metric", "best_global_step", "best_model_checkpoint"):
            if hasattr(loaded, name):
                setattr(state, name, getattr(loaded, name))
        # transformers logs only when global_step > the last logged step: restart that count here.
        t._globalstep_last_logged = state.global_step
        if hasattr(t, "_buffered_inputs"):
            t._buffered_inputs = None
        if hasattr(t, "_step"):
            t._step = 0

    # ------------------------------------------------------------------ checkpoints

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        src = Path(args.output_dir) / f"checkpoint-{step}"
        if not src.is_dir():
            log.warning("rlguard: trainer checkpoint %s not found; not registered", src)
            return
        from rlguard.ppo.checkpoint_files import checkpoint_dir_name, write_checkpoint_dir

        def write_files(tmp: Path) -> None:
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    dst = tmp / f.relative_to(src)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if self.checkpoint_mode == "move":
                        os.replace(f, dst) if _same_device(f, tmp) else shutil.move(f, dst)
                    else:
                        shutil.copy2(f, dst)

        final = write_checkpoint_dir(self.ckpt_root / checkpoint_dir_name(step), write_files, step=step,
                                     metrics=self._last_metrics, constraints=self.constraints(),
                                     meta={"source": "trl", "trainer": type(self.trainer).__name__,
                                           "trainer_checkpoint": str(src)})
        if self.checkpoint_mode == "move":
            shutil.rmtree(src, ignore_errors=True)
        self.client.checkpoint_written(step, final)

    # ------------------------------------------------------------------ end

    def on_train_end(self, args, state, control, **kwargs):
        if self._pending is not None:  # an evaluation that never logged: report the step anyway
            step, held = self._pending
            self._pending = None
            self.client.report(step, held)
        self.close("stopped" if self._stopped else "completed")

    def close(self, status: str = "completed") -> None:
        if not self._closed:
            self._closed = True
            self.client.close(status)


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
