"""trl / transformers console output: the dict the Trainer prints at each log, between the
frames of its tqdm progress bar.

transformers (5.x, trainer_callback.py) prints `str(logs)` with every float formatted
`f"{v:.4g}"`, so values arrive as quoted strings ('0.1234', 'nan') or numbers (older
versions, ints): `{'loss': '0.0123', 'grad_norm': '1.2', 'kl': '0.002', 'epoch': '0.05'}`.
ProgressCallback writes it with `tqdm.write` (on stdout) while the bar is drawn on stderr,
`\\r`-separated frames like `  5%|▌    | 1/20 [00:01<00:20,  1.05s/it]`. Neither the dict
nor anything else on the line says the step, so it is taken:

1. from the progress bar: tqdm.write clears the bar, prints the dict, then redraws the bar,
   so the first frame of the training bar after a dict shows the step it was logged at
   (the training bar is the first bar without a description; evaluation bars have another
   total). Two training dicts before one frame mean the two streams were not captured in
   order (stdout block-buffered): refused, with the fix;
2. or, given `logging_steps` (--logging-steps, the run's TrainingArguments.logging_steps):
   the n-th training dict is step n * logging_steps; an eval dict belongs to the step of
   the training dict before it, or, when its `epoch` says it is later, to
   round(epoch / epoch-per-step);
3. otherwise: one error saying that --logging-steps gives it. Never a guess.
"""

from __future__ import annotations

import re
from pathlib import Path

from rlguard.orchestrator.logformats.base import ALL, Format, LogFormatError, Record, head_lines, to_number
from rlguard.orchestrator.logformats.pyliteral import NotALiteral, parse_literal
from rlguard.orchestrator.logformats.sources import LineParser, LineSource

BAR = re.compile(r"^\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)\s*\[")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Keys that every transformers Trainer log carries (training, evaluation, or the final summary).
TRAINER_KEYS = {"loss", "grad_norm", "learning_rate", "epoch", "eval_loss", "eval_runtime", "train_runtime"}

NO_STEP = ("the step of each logged dict is unknown: the log has no training progress bar "
           "(disable_tqdm=True, or stderr was not captured with stdout). Pass --logging-steps N, the run's "
           "TrainingArguments.logging_steps, to count steps from the dicts")


def _trainer_dict(segment: str) -> dict | None:
    text = segment.strip()
    if not (text.startswith("{'") and text.endswith("}")):
        return None
    try:
        obj = parse_literal(text)
    except NotALiteral:
        return None
    if isinstance(obj, dict) and TRAINER_KEYS & set(obj) or isinstance(obj, dict) and any(
            str(k).startswith("eval_") for k in obj):
        return obj
    return None


def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return False
    for line in head_lines(head, ALL):
        for seg in ANSI.sub("", line).split("\r"):
            if _trainer_dict(seg) is not None:
                return True
    return False


def _is_eval(d: dict) -> bool:
    return any(str(k).startswith("eval_") for k in d) and "loss" not in d


class Parser(LineParser):
    def __init__(self, logging_steps: int | None = None):
        if logging_steps is not None and logging_steps < 1:
            raise LogFormatError(f"--logging-steps {logging_steps}: must be >= 1")
        self.logging_steps = logging_steps
        self.train_total: int | None = None  # the training bar's total (max_steps)
        self.last_bar: int | None = None
        self.pending: list[dict] = []
        self.train_dicts = 0
        self.last_train: tuple[int, float | None] | None = None  # (step, epoch)
        self.epoch_per_step: float | None = None

    # -- steps counted from logging_steps ------------------------------------------------------------

    def _counted(self, d: dict) -> Record:
        epoch = to_number(d.get("epoch"))
        if not _metric_dict(d):  # the end-of-training summary is not a logging step
            return Record(self.last_train[0] if self.last_train else 0, d)
        if not _is_eval(d):
            self.train_dicts += 1
            step = self.train_dicts * self.logging_steps
            if self.epoch_per_step is None and epoch:
                self.epoch_per_step = epoch / step
            self.last_train = (step, epoch)
            return Record(step, d)
        step = self.last_train[0] if self.last_train else 0
        if epoch is not None and self.epoch_per_step and (self.last_train is None or epoch > (self.last_train[1] or 0)):
            step = max(step, round(epoch / self.epoch_per_step))
        return Record(step, d)

    # -- steps read from the progress bar -------------------------------------------------------------

    def _bar(self, n: int, total: int) -> list[Record]:
        if self.train_total is None:
            self.train_total = total
        if total != self.train_total:
            return []  # an evaluation (or other) bar
        self.last_bar = n
        return self._assign(n)

    def _assign(self, n: int) -> list[Record]:
        trains = [d for d in self.pending if not _is_eval(d)]
        if len(trains) > 1:
            raise LogFormatError(f"{len(trains)} logged dicts before one progress-bar frame (step {n}), so the bar "
                                 f"does not tell their steps: stdout and stderr were not captured in order (stdout "
                                 f"buffered: PYTHONUNBUFFERED=1 fixes that), or a terminal emulator (W&B's "
                                 f"output.log) kept only the bar's last frame. Pass --logging-steps N, the run's "
                                 f"logging_steps, to count steps from the dicts")
        out = [Record(n, d) for d in self.pending]
        self.pending = []
        return out

    def parse(self, line: str) -> list[Record]:
        out: list[Record] = []
        for seg in ANSI.sub("", line).split("\r"):
            d = _trainer_dict(seg)
            if d is not None:
                if self.logging_steps is not None:
                    out.append(self._counted(d))
                else:
                    self.pending.append(d)
                continue
            m = BAR.match(seg)
            if m is not None and self.logging_steps is None:
                out.extend(self._bar(int(m.group(2)), int(m.group(3))))
        return out

    def finish(self) -> list[Record]:
        if not self.pending:
            return []
        if self.last_bar is None:
            if any(_metric_dict(d) for d in self.pending):
                raise LogFormatError(NO_STEP)
            return []
        return self._assign(self.last_bar)


def _metric_dict(d: dict) -> bool:
    """Not only the end-of-training summary (train_runtime, train_loss...)."""
    return "train_runtime" not in d


def open_source(path: Path, logging_steps: int | None = None, **_) -> LineSource:
    return LineSource(path, lambda: Parser(logging_steps), "trl", format_name="trl-console", split_cr=True)


FORMAT = Format("trl-console", "trl/transformers console output (logged dicts between tqdm progress bars)",
                sniff, open_source)
