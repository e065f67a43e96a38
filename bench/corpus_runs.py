"""The labelled real runs of bench/fixtures/corpus/<source>/<run>/ (layout: its README.md).

load_corpus reads every run folder that has both `metrics.jsonl` and `label.json`; a folder
that lacks one, or whose label is malformed, is skipped with a reason (the corpus is filled by
hand while the bench runs: one bad folder must not stop the rest). An empty or missing
source folder gives no runs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from rlguard.orchestrator.event_reader import EventReader

SOURCES = ("ours", "public")
# The metrics that show a failure at all, abbreviated: a corpus run's "subset" in the report.
_WITNESSES = (("kl", "kl"), ("entropy", "H"), ("perplexity", "ppl"), ("response_length", "len"),
              ("truncated_fraction", "trunc"), ("reward", "R"))


@dataclass
class CorpusRun:
    source: str
    name: str
    label: dict
    events: list = field(repr=False, default_factory=list)
    bad_lines: int = 0

    @property
    def onset(self) -> int | None:
        return self.label.get("onset_step") if self.label.get("label") == "collapse" else None

    @property
    def earliest_onset(self) -> int | None:
        """The first step the failure may have begun at (label `earliest_onset_step`; default the onset)."""
        e = self.label.get("earliest_onset_step")
        return e if isinstance(e, int) and not isinstance(e, bool) and self.onset is not None else None

    @property
    def family(self) -> str:
        return str(self.label.get("class") or self.label.get("label"))

    @property
    def interval(self) -> int:
        ls = self.label.get("logging_steps")
        if isinstance(ls, int) and ls >= 1:
            return ls
        steps = sorted({e.step for e in self.events})
        gaps = [b - a for a, b in zip(steps, steps[1:]) if b > a]
        return int(statistics.median(gaps)) if gaps else 1

    @property
    def subset(self) -> str:
        present = {k for e in self.events for k, v in e.metrics.items() if v is not None}
        return "+".join(abbr for name, abbr in _WITNESSES if name in present) or "none"


def _check_label(label, where: Path) -> str | None:
    """None if `label` is usable, else the reason (naming the field and the fix)."""
    if not isinstance(label, dict):
        return f"{where}: label.json must be a JSON object"
    if label.get("label") not in ("collapse", "healthy"):
        return f"{where}: 'label' is {label.get('label')!r}, expected 'collapse' or 'healthy'"
    onset = label.get("onset_step")
    if label["label"] == "collapse" and (not isinstance(onset, int) or isinstance(onset, bool) or onset < 0):
        return f"{where}: a collapse needs 'onset_step' (an integer step of metrics.jsonl), got {onset!r}"
    return None


def load_corpus(root: Path, sources=SOURCES) -> tuple[list[CorpusRun], list[str]]:
    """(runs, skipped-with-reason) for every run folder under root/<source>/."""
    runs: list[CorpusRun] = []
    skipped: list[str] = []
    for source in sources:
        base = root / source
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            mfile, lfile = d / "metrics.jsonl", d / "label.json"
            if not (mfile.is_file() and lfile.is_file()):
                skipped.append(f"{d.relative_to(root)}: needs both metrics.jsonl and label.json")
                continue
            try:
                label = json.loads(lfile.read_text())
            except (OSError, json.JSONDecodeError) as e:
                skipped.append(f"{d.relative_to(root)}: label.json is not JSON ({e})")
                continue
            why = _check_label(label, d.relative_to(root))
            if why:
                skipped.append(why)
                continue
            reader = EventReader(mfile)
            events = list(reader)
            if not events:
                skipped.append(f"{d.relative_to(root)}: metrics.jsonl has no events ({reader.summary()})")
                continue
            runs.append(CorpusRun(source, d.name, label, events, reader.bad_lines))
    return runs, skipped
