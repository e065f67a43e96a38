"""trl / transformers `trainer_state.json`: the Trainer's `log_history`, saved in each checkpoint.

Each entry of `log_history` is one `Trainer.log` call: `{"loss": .., "kl": .., "step": N,
"epoch": ..}` for training, `{"eval_loss": .., "eval_reward": .., "step": N}` for an
evaluation at the same step; both are merged into one event (train keys, plus eval_ keys).
Names: the trl table (metric_names.TRL). The final summary entry (train_runtime, train_loss)
carries no metric of a step and is dropped.

A directory works too: a checkpoint directory holding trainer_state.json, or a Trainer
output_dir holding checkpoint-N/ directories (the newest one has the whole history).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlguard.orchestrator.logformats.base import Format, LogFormatError, Record, merge
from rlguard.orchestrator.logformats.sources import SnapshotSource

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def state_file(path: Path) -> Path | None:
    """The trainer_state.json that `path` stands for, or None."""
    if path.is_file():
        return path
    if (path / "trainer_state.json").is_file():
        return path / "trainer_state.json"
    ckpts = [(int(m.group(1)), p) for p in path.iterdir() if (m := _CKPT.match(p.name))
             and (p / "trainer_state.json").is_file()] if path.is_dir() else []
    return max(ckpts)[1] / "trainer_state.json" if ckpts else None


def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return state_file(path) is not None
    text = head.lstrip()
    return text.startswith(b"{") and b'"log_history"' in head or (
        path.name == "trainer_state.json" and text.startswith(b"{"))


def load(path: Path):
    f = state_file(path)
    if f is None:
        raise LogFormatError(f"{path}: no trainer_state.json (nor checkpoint-N/trainer_state.json) in it")
    try:
        state = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise LogFormatError(f"{f}: cannot read as trainer_state.json: {e}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise LogFormatError(f"{f}: has no 'log_history' list: not a transformers trainer_state.json")
    records = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            continue
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise LogFormatError(f"{f}: log_history[{i}] has no integer 'step' ({step!r})")
        records.append(Record(step, entry))
    return merge(records, "trl")


def open_source(path: Path, **_) -> SnapshotSource:
    return SnapshotSource(path, load, "trainer-state", signature=lambda p: _sig(state_file(p)))


def _sig(f: Path | None):
    if f is None:
        return None
    st = f.stat()
    return (str(f), st.st_size, st.st_mtime_ns)


FORMAT = Format("trainer-state", "trl/transformers trainer_state.json (log_history), file or checkpoint dir",
                sniff, open_source)
