"""The two ways a log is read, both usable once (replay, report) or tailed (watch).

- LineSource: a text file that grows by lines (console logs, JSONL). Complete lines only: a
  line without its newline may be half written, so it waits (until close(), at the end).
  A file that shrinks was truncated or replaced (verl truncates its file logger on start):
  reading starts over, which the monitors see as a new segment.
- SnapshotSource: a file or directory rewritten or appended as a whole by a library
  (trainer_state.json, TensorBoard event files); it is reloaded when it changes and only
  events after the ones already handed out are returned. While tailing, the last step is
  held back (its scalars may still be coming) until a later step or close().

Both: poll() -> new MetricEvents, close() -> the rest, summary() -> one line for people.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.logformats.base import Record, StepMerger

_CHUNK = 1 << 16


class LineParser:
    """Turns lines into records. Stateful parsers (trl console: the step comes from a progress
    bar printed after the dict) keep what they wait for and give it back in finish()."""

    def parse(self, line: str) -> list[Record]:
        raise NotImplementedError

    def finish(self) -> list[Record]:
        return []


class LineSource:
    def __init__(self, path: str | os.PathLike, make_parser: Callable[[], LineParser], trainer: str,
                 rename=None, format_name: str = "", split_cr: bool = False):
        """split_cr: a carriage return also ends a line (tqdm frames), so that the frame drawn after
        a logged dict is read when the next frame starts, not only when the next dict ends the line."""
        self.path = Path(path)
        self._split = re.compile(rb"[\r\n]" if split_cr else rb"\n")
        self.make_parser = make_parser
        self.trainer = trainer
        self.rename = rename
        self.format_name = format_name
        self.lines = 0
        self.restarts = 0
        self._reset()
        self._pos = 0

    def _reset(self) -> None:
        self.parser = self.make_parser()
        self.merger = StepMerger(self.trainer, self.rename)
        self._buf = b""

    def _feed_line(self, raw: bytes) -> list[MetricEvent]:
        self.lines += 1
        out: list[MetricEvent] = []
        for rec in self.parser.parse(raw.decode("utf-8", errors="replace")):
            out.extend(self.merger.add(rec))
        return out

    def poll(self) -> list[MetricEvent]:
        out: list[MetricEvent] = []
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self._pos:  # truncated or replaced: the old lines are gone, start over
                out.extend(self.close())
                self._reset()
                self._pos = 0
                self.restarts += 1
            f.seek(self._pos)
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                self._pos += len(chunk)
                self._buf += chunk
                if self._split.search(chunk):
                    *complete, self._buf = self._split.split(self._buf)
                    for raw in complete:
                        out.extend(self._feed_line(raw))
        return out

    def close(self) -> list[MetricEvent]:
        out: list[MetricEvent] = []
        if self._buf.strip():
            rest, self._buf = self._buf, b""
            out.extend(self._feed_line(rest))
        for rec in self.parser.finish():
            out.extend(self.merger.add(rec))
        out.extend(self.merger.flush())
        return out

    def summary(self) -> str:
        return (f"{self.format_name}: {self.lines} lines, {self.merger.records} records"
                + (f", restarted {self.restarts}x (file truncated)" if self.restarts else ""))


class SnapshotSource:
    def __init__(self, path: str | os.PathLike, load: Callable[[Path], list[MetricEvent]], format_name: str = "",
                 signature: Callable[[Path], object] | None = None):
        self.path = Path(path)
        self.load = load
        self.format_name = format_name
        self.signature = signature or _signature
        self._sig: object = None
        self._events: list[MetricEvent] = []
        self._handed = 0

    def _refresh(self) -> list[MetricEvent]:
        sig = self.signature(self.path)
        if sig != self._sig:
            self._sig = sig
            events = self.load(self.path)
            if len(events) < self._handed or [e.step for e in events[: self._handed]] != [
                    e.step for e in self._events[: self._handed]]:
                self._handed = 0  # rewritten with another history: hand it out again (a new segment)
            self._events = events
        return self._events

    def poll(self) -> list[MetricEvent]:
        events = self._refresh()
        end = max(self._handed, len(events) - 1)  # the last step may still be incomplete
        out = events[self._handed:end]
        self._handed = end
        return out

    def close(self) -> list[MetricEvent]:
        events = self._refresh()
        out = events[self._handed:]
        self._handed = len(events)
        return out

    def summary(self) -> str:
        return f"{self.format_name}: {len(self._events)} steps"


def _signature(path: Path) -> object:
    """(name, size, mtime) of the file, or of every file under the directory."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    sig = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        sig.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(sig)
