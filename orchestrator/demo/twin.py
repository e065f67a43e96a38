"""The unguarded twin: the demo's run as it would have gone with nobody watching.

Same config, same seed, no supervisor. Up to rlguard's first action the guarded run IS that
run: the trainer is deterministic on CPU and the first steps of a supervised and an
unsupervised run are equal metric for metric (bench/notes/demo.md), and a resume from a
checkpoint is exact (bench/train_resume_check.py). So the twin does not train those steps a
second time: `ForkKeeper` keeps (hard links, no copy) the newest checkpoint the guarded run had
completed when rlguard decided its first action, and `run_twin` continues from there with the
original constraints, after copying the guarded run's events and samples up to that step.
On the 2-core demo machine this saves the ~6 steps before the intervention (~80 s).

Without an intervention (the guard never acted) or with `from_scratch=True`, the twin trains
every step itself. tests/orchestrator/test_demo.py checks that both ways give the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from rlguard.monitors.events import CONSTRAINT_NAMES

# Decisions that change the run: from the first of these on, guarded and unguarded differ.
INTERVENTIONS = ("halt", "rollback", "tighten", "relax")


def link_tree(src: Path, dst: Path) -> None:
    """A copy of checkpoint directory `src` at `dst` made of hard links (instant, no extra
    space); file copies where links are impossible (another filesystem)."""
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    tmp.rename(dst)


class ForkKeeper:
    """A RunSink on the guarded run: at rlguard's first intervention it keeps the newest complete
    checkpoint (written before the decision, so untouched by it) as the twin's starting point.

    Called on the supervisor's loop thread, the same thread that prunes checkpoints: the
    directory cannot vanish between listing and linking."""

    def __init__(self, checkpoints: Path, keep_at: Path):
        self.checkpoints, self.keep_at = Path(checkpoints), Path(keep_at)
        self.kept: Path | None = None
        self.decision_step: int | None = None
        self.error: str | None = None

    def on_decision(self, decision, phase: str, outcome="", **_ignored) -> None:
        action = getattr(decision.action, "value", str(decision.action))
        if phase != "decided" or action not in INTERVENTIONS or self.decision_step is not None:
            return
        self.decision_step = int(decision.step)
        from rlguard.ppo.checkpoint_files import list_checkpoints

        try:
            done = [p for p in list_checkpoints(self.checkpoints) if step_of(p) <= self.decision_step]
            if done:
                self.kept = self.keep_at / done[-1].name
                link_tree(done[-1], self.kept)
        except OSError as e:  # the twin then trains from scratch: slower, never wrong
            self.kept, self.error = None, f"{type(e).__name__}: {e}"

    def close(self) -> None:
        pass


def step_of(checkpoint: Path) -> int:
    """The step of a checkpoint directory named step-NNNNNN."""
    return int(checkpoint.name.rsplit("-", 1)[-1])


def prefix_rows(path: Path, last_step: int) -> list[dict]:
    """The rows of a guarded run's metrics.jsonl or samples.jsonl up to `last_step`, from its
    first timeline only (after a rollback the file goes on with a replayed, different one)."""
    rows: list[dict] = []
    if not path.is_file():
        return rows
    top = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = row.get("step")
        if not isinstance(step, int):
            continue
        if step < top:  # the timeline went back: a rollback
            break
        top = step
        if step <= last_step:
            rows.append(row)
    return rows


def run_twin(run_dir: Path, trainer: dict, *, on_step, fork: Path | None = None,
             guarded_dir: Path | None = None) -> dict:
    """The twin through the `rlguard train` loop (no supervisor); from `fork` (a kept guarded
    checkpoint, its earlier steps copied from `guarded_dir`) or from scratch. Keep the fork in
    `run_dir/checkpoints`: when the intervention came at the last step it is the twin's end."""
    from rlguard.orchestrator.demo.spec import train_config
    from rlguard.ppo.cli import run_training

    cfg = train_config(trainer)
    # One checkpoint, at the end: nothing would ever roll back to the others.
    cfg = cfg.model_copy(update={"checkpoint_every": 0})
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    forked_at = None
    if fork is not None and guarded_dir is not None:
        forked_at = step_of(fork)
        events = prefix_rows(guarded_dir / "metrics.jsonl", forked_at)
        with open(run_dir / "metrics.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps({"step": e["step"], "time": e.get("time"), "metrics": e["metrics"]}) + "\n")
        with open(run_dir / "samples.jsonl", "w") as f:
            for s in prefix_rows(guarded_dir / "samples.jsonl", forked_at):
                f.write(json.dumps(s) + "\n")
        for e in events:
            on_step(e["step"], e["metrics"])
    # The configured constraints, whatever the kept checkpoint says: nobody tightens the twin.
    resolved = cfg.resolved()
    constraints = {k: float(getattr(resolved, k)) for k in CONSTRAINT_NAMES}
    run_training(cfg, run_dir, resume=fork, constraints=constraints, on_step=on_step, progress=False)
    if fork is not None and forked_at < cfg.steps:
        shutil.rmtree(fork, ignore_errors=True)  # links only; the twin wrote its own end checkpoint
    return {"state": "completed", "wall_s": time.monotonic() - t0, "forked_at_step": forked_at}
