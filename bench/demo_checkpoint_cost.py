"""What a checkpoint every step costs the demo's trainer on this machine (issue #17, session 6).

    .venv/bin/python bench/demo_checkpoint_cost.py MODE [STEPS]
    MODE: none | async | async-nice | async-idle | sync | parts

The demo's trainer settings (orchestrator/demo/spec.py, the bundled SmolLM2-135M), STEPS steps
(default 5) in one process. After each step: nothing (none), an asynchronous checkpoint as the
worker writes it (async), the same with the writer thread at nice 19 (async-nice) or SCHED_IDLE
(async-idle), or a synchronous save (sync); `parts` times the pieces of one 1.6 GB write
(safetensors, fsync, the sha256 read-back) and whether each holds the GIL. Prints per step the trainer's own split
(generate / score / optimise) and how long the save call blocked; at the end the wait for the
last write. Measured (bench/notes/demo.md): 12-14 s per step without checkpoints, 21-24 s with
the async one; a low-priority writer only moves the wait into the next submit.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("none", "async", "async-nice", "async-idle", "sync", "parts")


def _spin(stop: threading.Event, count: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
    count.append(n)


def write_parts() -> None:
    """Time the pieces of writing 1.6 GB (a demo checkpoint's size) and, for each, how fast a pure
    Python loop runs on another thread meanwhile (near the idle figure: the GIL is released)."""
    import torch
    from safetensors.torch import save_file

    from rlguard.ppo.checkpoint_files import fsync_path, sha256_file

    tensors = {f"w{i}": torch.randn(10 * 2**20) for i in range(40)}  # 40 x 40 MiB
    path = Path(tempfile.mkdtemp(prefix="ckpt-parts-")) / "x.safetensors"
    parts = (("idle (sleep 2 s)", lambda: time.sleep(2)), ("safetensors save", lambda: save_file(tensors, str(path))),
             ("fsync", lambda: fsync_path(path)), ("sha256 read-back", lambda: sha256_file(path)),
             ("sha256 read-back in 1 MiB chunks (before session 6)", lambda: sha256_file(path, 1 << 20)))
    try:
        for label, work in parts:  # alone: what the piece costs
            t0, c0 = time.perf_counter(), time.process_time()
            work()
            print(f"{label}: {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")
        for label, work in parts:  # beside a pure-Python thread: does the piece hold the GIL?
            stop, count = threading.Event(), []
            spinner = threading.Thread(target=_spin, args=(stop, count))
            t0 = time.perf_counter()
            spinner.start()
            work()
            wall = time.perf_counter() - t0
            stop.set()
            spinner.join()
            print(f"beside {label}: a Python loop on another thread ran {count[0] / wall / 1e6:.1f} M iterations/s"
                  f" (the piece took {wall:.2f} s with it)")
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in MODES:
        print(f"usage: demo_checkpoint_cost.py {{{'|'.join(MODES)}}} [STEPS]", file=sys.stderr)
        return 2
    mode, steps = argv[0], int(argv[1]) if len(argv) > 1 else 5
    if mode == "parts":
        write_parts()
        return 0
    import torch

    from rlguard.orchestrator.demo.spec import DEMO_TRAINER, train_config
    from rlguard.ppo.async_checkpoint import AsyncCheckpointWriter
    from rlguard.ppo.trainer import PPOTrainer

    cfg = train_config(dict(DEMO_TRAINER, checkpoint_every=0))
    torch.set_num_threads(cfg.torch_threads)
    trainer = PPOTrainer(cfg)
    writer = AsyncCheckpointWriter()
    write = writer._write

    def low_priority_write(snapshot, path):
        tid = threading.get_native_id()
        if mode == "async-idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif mode == "async-nice":
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        write(snapshot, path)

    writer._write = low_priority_write
    out = Path(tempfile.mkdtemp(prefix="ckpt-cost-"))
    try:
        print(f"# mode {mode}, load average {os.getloadavg()[0]:.1f}")
        print("step | step_s | generate_s | score_s | optimise_s | save call blocked_s | total_s")
        for i in range(steps):
            t0 = time.perf_counter()
            m = trainer.train_step()
            t_save = time.perf_counter()
            if mode.startswith("async"):
                writer.submit(trainer.checkpoint_snapshot(), out / f"step-{i:06d}")
            elif mode == "sync":
                trainer.save_checkpoint(out / f"step-{i:06d}")
            t_end = time.perf_counter()
            print(f"{trainer.step} | {m['step_seconds']:.1f} | {m['generate_seconds']:.1f} | {m['score_seconds']:.1f}"
                  f" | {m['optimise_seconds']:.1f} | {t_end - t_save:.1f} | {t_end - t0:.1f}", flush=True)
        t0 = time.perf_counter()
        writer.wait()
        print(f"# wait for the last write: {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
