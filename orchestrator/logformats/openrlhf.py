"""OpenRLHF's stdout: one `Global step N: {...}` line per PPO step (OpenRLHF/OpenRLHF,
openrlhf/trainer/ppo_trainer.py `logger.info(f"✨ Global step {global_step}: {log_status}")`
and ppo_trainer_async.py without the sparkle, commit 3c3be6234e0cb353e76bb8019947db9dfe99fca7).

The dict is a Python repr (floats, `nan`, sometimes tensors); the logger's prefix
(`INFO 2026-.. ppo_trainer.py:547] `, and Ray's `(PPOTrainer pid=..) `) is ignored. Its keys
are the ones OpenRLHF sends to W&B/TensorBoard as `train/<key>` (logging_utils.py log_train),
so a key the OpenRLHF table knows is read as `train/<key>` (one table for all its logs); any
other key passes through as printed. The evaluation line (`Evaluation completed in ..,
global_step N, eval_metrics: {...}`) joins step N's event, its keys under the `eval_` prefix.
"""

from __future__ import annotations

import re
from pathlib import Path

from rlguard.orchestrator.integrations.metric_names import OPENRLHF
from rlguard.orchestrator.logformats.base import ALL, Format, Record, head_lines
from rlguard.orchestrator.logformats.pyliteral import NotALiteral, parse_literal
from rlguard.orchestrator.logformats.sources import LineParser, LineSource

LINE = re.compile(r"Global step (\d+): (\{.*\})\s*$")
# ppo_trainer.py evaluate(): "✨ Evaluation completed in 0:01:02, global_step 20, eval_metrics: {...}"
EVAL_LINE = re.compile(r"Evaluation completed in .*global_step (\d+), eval_metrics: (\{.*\})\s*$")


def sniff(path: Path, head: bytes) -> bool:
    return not path.is_dir() and any(LINE.search(ln) for ln in head_lines(head, ALL))


class Parser(LineParser):
    def parse(self, line: str) -> list[Record]:
        m = LINE.search(line)
        ev = EVAL_LINE.search(line) if m is None else None
        if m is None and ev is None:
            return []
        try:
            values = parse_literal((m or ev).group(2))
        except NotALiteral:
            return []
        if not isinstance(values, dict):
            return []
        if ev is not None:  # merged into the step's event under METRICS.md's eval_ prefix
            return [Record(int(ev.group(1)), {_eval_key(str(k)): v for k, v in values.items()})]
        return [Record(int(m.group(1)), {_key(str(k)): v for k, v in values.items()})]


def _eval_key(key: str) -> str:
    return key if key.startswith("eval_") else f"eval_{key}"


def _key(key: str) -> str:
    """`train/<key>` when the OpenRLHF table knows it (one table for all its logs); otherwise the
    key as printed, which passes through unchanged."""
    return f"train/{key}" if f"train/{key}" in OPENRLHF else key


FORMAT = Format("openrlhf", "OpenRLHF stdout (Global step N: {...})", sniff,
                lambda p, **_: LineSource(p, Parser, "openrlhf", format_name="openrlhf"))
