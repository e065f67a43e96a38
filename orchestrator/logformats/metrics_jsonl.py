"""docs/METRICS.md JSON Lines, rlguard's own format: read exactly as before, by EventReader.

Bad lines are reported one by one (`on_error`) and skipped, as `rlguard replay` always did:
in our own format a bad line is news, not noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlguard.orchestrator.event_reader import EventReader
from rlguard.orchestrator.logformats.base import ALL, Format, head_lines


def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return (path / "metrics.jsonl").is_file()
    # The first JSON object line decides; bad lines before it are skipped (as the reader reports them).
    for line in head_lines(head, ALL):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        return isinstance(obj, dict) and "step" in obj and isinstance(obj.get("metrics", {}), dict) \
            and "data" not in obj
    return False


class MetricsSource:
    def __init__(self, path: Path, on_error=None, **_):
        if path.is_dir():
            path = path / "metrics.jsonl"
        self.path = path
        self.reader = EventReader(path, on_error=on_error, max_errors_kept=0)

    def poll(self):
        return self.reader.read_available()

    def close(self):
        out = self.reader.flush()
        self.reader.close()
        return out

    def summary(self) -> str:
        return self.reader.summary()


FORMAT = Format("metrics-jsonl", "rlguard METRICS.md JSON Lines ({\"step\": N, \"metrics\": {...}})",
                sniff, MetricsSource)
