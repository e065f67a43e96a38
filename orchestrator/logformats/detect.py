"""Choosing a log's format by its content: the first KiB of a file, or a directory's layout.

Sniffers are tried in a fixed order: METRICS.md first (a directory holding metrics.jsonl is
an rlguard run; a file is told from verl's file-logger JSONL by its keys), then the most
specific (a W&B run directory holds a console log that other sniffers would also claim). A file no sniffer claims gets ONE error naming every format tried,
instead of a bad-line report per line.
"""

from __future__ import annotations

from pathlib import Path

from rlguard.orchestrator.logformats import (
    metrics_jsonl,
    openrlhf,
    tensorboard_events,
    trainer_state,
    trl_console,
    verl,
    wandb_dir,
)
from rlguard.orchestrator.logformats.base import HEAD_BYTES, Format, LogFormatError

FORMATS: list[Format] = [
    metrics_jsonl.FORMAT,  # our own first: a run directory holding metrics.jsonl is ours, whatever else is in it
    wandb_dir.FORMAT,
    tensorboard_events.FORMAT,  # before trainer-state: a Trainer output_dir's TB files have every logged step
    trainer_state.FORMAT,
    verl.JSONL,
    verl.CONSOLE,
    openrlhf.FORMAT,
    trl_console.FORMAT,
]
BY_NAME = {f.name: f for f in FORMATS}


class UnknownFormat(LogFormatError):
    pass


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    if path.is_dir():
        return b""
    with open(path, "rb") as f:
        return f.read(n)


def get_format(name: str) -> Format:
    try:
        return BY_NAME[name]
    except KeyError:
        raise LogFormatError(f"unknown log format {name!r}: expected one of {', '.join(BY_NAME)}") from None


def detect(path: str | Path, formats: list[Format] | None = None) -> Format:
    """The format of `path` (file or directory); UnknownFormat naming what was tried."""
    path = Path(path)
    if not path.exists():
        raise LogFormatError(f"{path}: no such file or directory")
    head = read_head(path)
    candidates = FORMATS if formats is None else formats
    for fmt in candidates:
        if fmt.sniff(path, head):
            return fmt
    what = "directory" if path.is_dir() else ("empty file" if not head.strip() else "file")
    raise UnknownFormat(f"{path}: {what} in no known log format; tried {', '.join(f.name for f in candidates)}. "
                        f"Force one with --format NAME if it is one of these, or convert it to docs/METRICS.md JSONL")
