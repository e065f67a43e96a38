"""Readers for the logs trainers really write, all yielding docs/METRICS.md MetricEvents.

    from rlguard.orchestrator.logformats import load_run, open_source
    events = load_run("outputs/checkpoint-500")            # format chosen by content
    events = load_run("train.log", format="trl-console")   # or forced
    src = open_source("verl.jsonl"); src.poll(); ...; src.close()   # tail a growing file

Formats (detect.FORMATS): metrics-jsonl (ours), trainer-state, tensorboard, verl-jsonl,
verl-console, openrlhf, trl-console, wandb. Keys go through the trainer's table in
orchestrator/integrations/metric_names.py; unknown keys pass through. Records of the same
step are merged into one event.
"""

from __future__ import annotations

from pathlib import Path

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.logformats.base import LogFormatError
from rlguard.orchestrator.logformats.detect import BY_NAME, FORMATS, UnknownFormat, detect, get_format

__all__ = ["BY_NAME", "FORMATS", "LogFormatError", "UnknownFormat", "detect", "format_names", "load_run",
           "open_source"]


def format_names() -> list[str]:
    return [f.name for f in FORMATS]


def open_source(path: str | Path, format: str | None = None, *, on_error=None, logging_steps: int | None = None):
    """(format name, Source) for `path`: poll() -> new events, close() -> the rest, summary().

    on_error: METRICS.md JSONL only, called with each bad line (as `rlguard replay` reports them).
    logging_steps: trl console only, the run's TrainingArguments.logging_steps, for a log
    without progress bars (the step of each printed dict is then counted from it)."""
    path = Path(path)
    fmt = get_format(format) if format else detect(path)
    if not path.exists():
        raise LogFormatError(f"{path}: no such file or directory")
    return fmt.name, fmt.open(path, on_error=on_error, logging_steps=logging_steps)


def load_run(path: str | Path, format: str | None = None, **options) -> list[MetricEvent]:
    """Every event of a whole file or directory in any known format (the detection bench's entry)."""
    _, src = open_source(path, format, **options)
    return src.poll() + src.close()
