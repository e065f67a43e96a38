"""Checkpoints without stalling training: a snapshot at the step boundary, written by a thread.

`PPOTrainer.checkpoint_snapshot()` copies everything a checkpoint holds (trainable tensors and
optimizer state to private CPU copies, RNG, cursor, constraints, ...) into a
`CheckpointSnapshot`; that copy is the only part the training loop waits for. Writing the
files (safetensors + JSON, fsync, sha256 manifest, atomic rename: ppo/checkpoint_files.py) is
then done by `AsyncCheckpointWriter` on a background thread while the next steps run.

Rules:
- At most one write in flight. A second `submit` waits for the first to finish before its
  write starts (every requested checkpoint is written, memory holds at most two snapshots).
- `on_done(step, path)` is called from the writer thread after the directory is complete and
  renamed into place: only then may it be announced (a supervisor must never roll back to a
  checkpoint that is still being written).
- A failed write (disk full, permissions) never raises into the training loop: it is logged,
  counted in `failures`, kept in `last_error`, and `on_error(step, path, exc)` is called.
- `wait()` blocks until nothing is in flight: call it before loading a checkpoint (it may be
  the one being written) and before the process exits.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlguard.ppo.checkpoint_files import write_checkpoint_dir
from rlguard.ppo.state_io import save_tensors, write_json, write_optimizer_payload

log = logging.getLogger(__name__)


@dataclass
class CheckpointSnapshot:
    """The full training state at one step boundary, detached from the live trainer."""

    step: int
    tensors: dict[str, dict[str, torch.Tensor]]  # file stem -> tensors (CPU copies)
    optimizers: dict[str, tuple[dict[str, torch.Tensor], dict]]  # name -> (tensors, structure)
    json_files: dict[str, object]  # file name -> JSON-able object
    metrics: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def write(self, path: str | Path) -> Path:
        """Write this snapshot as checkpoint directory `path`, atomically."""

        def write_files(tmp: Path) -> None:
            for stem, tensors in self.tensors.items():
                save_tensors(tmp / f"{stem}.safetensors", tensors)
            for name, (tensors, structure) in self.optimizers.items():
                write_optimizer_payload(tmp, name, tensors, structure)
            for name, obj in self.json_files.items():
                write_json(tmp / name, obj)

        return write_checkpoint_dir(path, write_files, step=self.step, metrics=self.metrics,
                                    constraints=self.constraints, meta=self.meta)


class SnapshotBuffers:
    """Reusable CPU buffers for snapshots: copying into memory that is already mapped costs a
    memcpy, while fresh allocations of this size page-fault on first touch (3-6x slower here).

    A buffer set is reused only once the snapshot that used it is gone (a weak reference: the
    writer thread drops its snapshot after the write), so a snapshot still held or still being
    written is never overwritten. Two sets cover the usual pattern: one being written while the
    next step's snapshot is taken."""

    def __init__(self, sets: int = 2):
        self._sets: list[tuple[weakref.ref | None, dict[str, torch.Tensor]]] = [(None, {}) for _ in range(sets)]
        self._current: dict[str, torch.Tensor] | None = None
        self._slot: int | None = None

    def begin(self) -> None:
        """Start a snapshot: pick a buffer set no live snapshot uses (or fresh memory)."""
        for i, (ref, buffers) in enumerate(self._sets):
            if ref is None or ref() is None:
                self._slot, self._current = i, buffers
                return
        self._slot, self._current = None, {}  # every set is in use: fresh memory, not pooled

    def copy(self, key: str, t: torch.Tensor) -> torch.Tensor:
        """A CPU copy of `t` in this snapshot's buffer `key`."""
        t = t.detach()
        buf = self._current.get(key)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu")
            self._current[key] = buf
        buf.copy_(t)
        return buf

    def finish(self, snapshot: CheckpointSnapshot) -> CheckpointSnapshot:
        """Tie the buffer set to `snapshot`: it is free again when the snapshot is collected."""
        if self._slot is not None:
            self._sets[self._slot] = (weakref.ref(snapshot), self._current)
        self._current = self._slot = None
        return snapshot


DoneCallback = Callable[[int, Path], None]
ErrorCallback = Callable[[int, Path, BaseException], None]


class AsyncCheckpointWriter:
    """One background writer thread per trainer process; see the module docstring."""

    def __init__(self, on_done: DoneCallback | None = None, on_error: ErrorCallback | None = None):
        self.on_done = on_done
        self.on_error = on_error
        self.failures = 0
        self.written = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def submit(self, snapshot: CheckpointSnapshot, path: str | Path) -> None:
        """Start writing `snapshot` to `path` (after any write still in flight has finished)."""
        with self._lock:
            self.wait()
            self._thread = threading.Thread(target=self._write, args=(snapshot, Path(path)),
                                            name=f"ckpt-writer-{snapshot.step}", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the write in flight (if any) is finished; False if `timeout` ran out."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def _write(self, snapshot: CheckpointSnapshot, path: Path) -> None:
        try:
            written = snapshot.write(path)
        except BaseException as e:  # noqa: BLE001 - a failed save must never kill the training loop
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("checkpoint step %d -> %s failed: %s (training continues)", snapshot.step, path,
                      self.last_error)
            if self.on_error is not None:
                self._call(self.on_error, snapshot.step, path, e)
            return
        self.written += 1
        if self.on_done is not None:
            self._call(self.on_done, snapshot.step, written)

    @staticmethod
    def _call(callback, *args) -> None:
        try:
            callback(*args)
        except Exception:  # a broken callback is a bug to see in the log, not a reason to die
            log.exception("checkpoint writer callback %r failed", callback)
