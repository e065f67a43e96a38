"""verl's two logs (volcengine/verl, verl/utils/tracking.py and verl/utils/logger/aggregate_logger.py
at commit b178a3cd56f58b2d502255daba591e92833930a7):

- the file logger (`trainer.logger=[...,file]`): JSON Lines, one line per `Tracking.log` call,
  `{"step": N, "data": {"actor/ppo_kl": .., "critic/score/mean": .., ...}}` (orjson);
  written to $VERL_FILE_LOGGER_PATH or <root>/<project>/<experiment>.jsonl, truncated on start.
  orjson writes NaN and +-inf as `null`, and verl logs no None of its own, so a null value is
  read as NaN: a non-finite metric is the first sign of a collapse and must not vanish;
- the console logger (`trainer.logger=[console,...]`): `concat_dict_to_str` prints
  `step:N - key:value - key:value` with each number through `pprint.pformat`, so numpy
  scalars appear as `np.float64(0.5)` under numpy >= 2. Under Ray the line carries a prefix
  such as `(TaskRunner pid=123) `; any prefix before `step:` is ignored.

The validation before training is logged at step 0 (or at the resumed step) as its own
record; records of the same step are merged. Names: the verl table (metric_names.VERL).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rlguard.orchestrator.logformats.base import ALL, Format, Record, head_lines
from rlguard.orchestrator.logformats.pyliteral import NotALiteral, parse_literal
from rlguard.orchestrator.logformats.sources import LineParser, LineSource

CONSOLE_LINE = re.compile(r"(?:^|[\s)\]])step:(\d+) - (.*)$")


def _jsonl_obj(line: str):
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict) and isinstance(obj.get("step"), int) \
            and not isinstance(obj.get("step"), bool):
        return obj
    return None


def sniff_jsonl(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return False
    lines = [ln for ln in head_lines(head) if ln.strip()]
    return bool(lines) and _jsonl_obj(lines[0]) is not None


class JsonlParser(LineParser):
    def parse(self, line: str) -> list[Record]:
        obj = _jsonl_obj(line) if line.strip() else None
        if obj is None:
            return []
        # orjson's null is a NaN or an infinity (see the module docstring): keep it non-finite.
        return [Record(obj["step"], {k: math.nan if v is None else v for k, v in obj["data"].items()})]


def console_values(body: str) -> dict:
    """`key:value - key:value` as printed by verl's concat_dict_to_str -> {key: value}."""
    values = {}
    for part in body.rstrip().split(" - "):
        key, sep, text = part.rpartition(":")
        if not sep or not key:
            continue
        try:
            values[key] = parse_literal(text)
        except NotALiteral:
            continue
    return values


def sniff_console(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return False
    return any(CONSOLE_LINE.search(ln) for ln in head_lines(head, ALL))


class ConsoleParser(LineParser):
    def parse(self, line: str) -> list[Record]:
        m = CONSOLE_LINE.search(line.replace("\r", ""))
        if m is None:
            return []
        return [Record(int(m.group(1)), console_values(m.group(2)))]


JSONL = Format("verl-jsonl", "verl file logger JSONL ({\"step\": N, \"data\": {...}})", sniff_jsonl,
               lambda p, **_: LineSource(p, JsonlParser, "verl", format_name="verl-jsonl"))
CONSOLE = Format("verl-console", "verl console log (step:N - key:value - ...)", sniff_console,
                 lambda p, **_: LineSource(p, ConsoleParser, "verl", format_name="verl-console"))
