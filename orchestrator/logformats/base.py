"""What every log format shares: records -> merged, renamed MetricEvents, and the errors.

A reader turns a trainer's file into *records*: (step, {trainer key: value}). Records of the
same step are merged into one event (transformers logs the train and the eval record of a
step separately; verl logs the initial validation and the first step's metrics under one
step), then the keys go through the trainer's name table (integrations/metric_names.py):
unknown keys pass through under their own name.

Merging is by *consecutive* step: a step lower than the previous one is a rollback or a
restart (METRICS.md segments), so it starts a new event, never folds into an old one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.integrations.metric_names import map_metrics


class LogFormatError(ValueError):
    """A file that is not (or not readable as) the format asked for; the message says why and what to do."""


@dataclass
class Record:
    step: int
    values: dict
    time: float | None = None


def to_number(value) -> float | None:
    """A logged value as float: numbers, numeric strings ('0.1234', 'nan' as transformers prints
    them), numpy/torch scalars. None for anything else (text, lists, booleans)."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "item") and not isinstance(value, (int, float, str)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def numeric(values: Mapping[str, object]) -> dict[str, float]:
    """The numeric entries of a raw record (strings that are numbers included)."""
    out = {}
    for k, v in values.items():
        x = to_number(v)
        if x is not None:
            out[str(k)] = x
    return out


class StepMerger:
    """Incremental merge of records into events: an event is complete when a record of another
    step arrives, or at flush() (end of the file, or the reader stops)."""

    def __init__(self, trainer: str, rename=None):
        self.trainer = trainer
        self.rename = rename  # optional key -> key applied before the trainer's table
        self._step: int | None = None
        self._values: dict[str, float] = {}
        self._time: float | None = None
        self.records = 0

    def add(self, rec: Record) -> list[MetricEvent]:
        self.records += 1
        out = []
        if self._step is not None and rec.step != self._step:
            out = self.flush()
        self._step = rec.step
        values = numeric(rec.values)
        if self.rename is not None:
            values = {self.rename(k): v for k, v in values.items()}
        self._values.update(values)
        if rec.time is not None:
            self._time = rec.time if self._time is None else max(self._time, rec.time)
        return out

    def flush(self) -> list[MetricEvent]:
        if self._step is None:
            return []
        step, values, t = self._step, self._values, self._time
        self._step, self._values, self._time = None, {}, None
        metrics = map_metrics(values, self.trainer)
        if not metrics:  # only bookkeeping keys (epoch, train_runtime...): not a step's metrics
            return []
        return [MetricEvent(step=step, metrics=dict(metrics), time=t)]


def merge(records, trainer: str, rename=None) -> list[MetricEvent]:
    merger = StepMerger(trainer, rename)
    out: list[MetricEvent] = []
    for rec in records:
        out.extend(merger.add(rec))
    out.extend(merger.flush())
    return out


@dataclass(frozen=True)
class Format:
    """One log format: `sniff(path, head)` says whether `path` (a file whose first bytes are
    `head`, or a directory, head b"") is in this format; `open(path)` gives its Source."""

    name: str
    description: str
    sniff: object  # Callable[[Path, bytes], bool]
    open: object  # Callable[[Path], LineSource | SnapshotSource]


# How much of a file detection reads: a verl or OpenRLHF console log starts with the whole
# config, Ray's and vLLM's start-up output before its first metric line.
HEAD_BYTES = 4 << 20
ALL = 10**9


def head_lines(head: bytes, n: int = 20) -> list[str]:
    """The first complete-looking lines of a file's head, decoded leniently."""
    return head.decode("utf-8", errors="replace").splitlines()[:n]


# Key shapes that only one trainer logs (checked against their code; see metric_names.py).
_VERL_PREFIXES = ("actor/", "critic/", "response_length/", "timing_s/", "perf/", "val-core/", "prompt_length/")
_OPENRLHF_KEYS = {"train/actor_lr", "train/ppo_clip_ratio", "train/critic_loss", "train/actor_grad_norm",
                  "train/entropy_loss"}
# transformers adds learning_rate and epoch to every Trainer log; OpenRLHF logs neither (it says actor_lr).
_TRL_KEYS = {"train/learning_rate", "train/epoch", "train/completions/mean_length", "train/num_tokens"}


def guess_trainer(keys) -> str:
    """Which trainer's name table fits a set of keys (TensorBoard tags, W&B keys): 'verl',
    'trl' (transformers' TensorBoard/W&B callbacks prefix train/ and eval/), 'openrlhf', or
    'rlguard' (names already ours, or unknown: they pass through). trl is tried before
    OpenRLHF because both log `train/policy_loss`; only transformers logs `train/learning_rate`."""
    keys = set(keys)
    if any(k.startswith(_VERL_PREFIXES) for k in keys):
        return "verl"
    if keys & _TRL_KEYS:
        return "trl"
    if keys & _OPENRLHF_KEYS or any(k.startswith(("train/rollout/", "train/timing/")) for k in keys) or \
            "train/policy_loss" in keys:
        return "openrlhf"
    return "rlguard"


def transformers_rename(key: str) -> str:
    """transformers' TensorBoard/W&B callbacks log `train/x` and `eval/x`; its own logs say `x`, `eval_x`."""
    if key.startswith("train/"):
        return key[6:]
    if key.startswith("eval/"):
        return "eval_" + key[5:]
    return key
