"""EventReader: metric events from a file (optionally tailing it), an iterable of lines, or pushes.

Bad input never stops the stream: each bad line is reported (line number and reason),
counted in `bad_lines`, kept in `errors` (the first `max_errors_kept`), and skipped.
A line longer than `max_line_bytes` (1 MiB) is a bad line, reported as soon as the limit is
passed and skipped up to the next newline without being kept in memory.
NaN / Infinity are values. A line without its trailing newline is not parsed while the file
may still grow (follow=True): the writer may be half way through it (a torn write).
A step lower than the previous one, or a higher `attempt`, starts a new segment (a rollback or
restart; `events.starts_segment`); records of an equal step are one step written in several
records. The reader counts segments, the MonitorStack acts on them by the same rule.

    reader = EventReader("runs/x/metrics.jsonl")            # whole file, then stop
    reader = EventReader(path, follow=True, idle_timeout_s=60)  # tail a live run
    reader = EventReader(lines)                              # any iterable of str/bytes lines
    reader = EventReader(); events = reader.feed(chunk)      # in-process: arbitrary chunks
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rlguard.monitors.events import BadEvent, MetricEvent, event_from_dict, parse_event_line, starts_segment

_CHUNK = 1 << 16
MAX_LINE_BYTES = 1 << 20  # an event line is a few hundred bytes; a longer one is garbage, not buffered


class EventReader:
    def __init__(
        self,
        source: str | os.PathLike | Iterable[str | bytes] | None = None,
        *,
        follow: bool = False,
        poll_interval_s: float = 0.5,
        idle_timeout_s: float | None = None,
        stop: Callable[[], bool] | None = None,
        on_error: Callable[[BadEvent], None] | None = None,
        max_errors_kept: int = 100,
        max_line_bytes: int = MAX_LINE_BYTES,
        sleep: Callable[[float], None] = _time.sleep,
        clock: Callable[[], float] = _time.monotonic,
    ):
        """source: a path, an iterable of lines, or None (feed()/push() in-process).
        follow: keep reading a growing file; stops when `stop()` is true or after `idle_timeout_s`
        seconds without new data (None: never). on_error: called with each BadEvent as it is found."""
        self.path: Path | None = None
        self.lines: Iterable[str | bytes] | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
        elif source is not None:
            self.lines = source
        self.follow = follow
        self.poll_interval_s = poll_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.stop = stop
        self.on_error = on_error
        self.max_errors_kept = max_errors_kept
        self.max_line_bytes = max_line_bytes
        self.sleep = sleep
        self.clock = clock
        self.bad_lines = 0
        self.errors: list[BadEvent] = []
        self.lineno = 0
        self.events_read = 0
        self.segments = 1
        self.last_step: int | None = None
        self.last_attempt: int | None = None
        # The unfinished line, as a list of pieces: joined once its newline arrives (appending
        # to one bytes object copies it each time, quadratic in the line's length).
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._skipping = False  # inside a line already reported as too long
        self._fh = None
        self._pos = 0

    # -- in-process -------------------------------------------------------------------------------

    def feed(self, chunk: str | bytes) -> list[MetricEvent]:
        """Append raw text (any split, even mid-line); returns the events of the lines it completed."""
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        pieces = chunk.split(b"\n")
        out = []
        for i, piece in enumerate(pieces):
            ends_line = i < len(pieces) - 1
            if self._skipping:
                self._skipping = not ends_line  # the newline ends the line that was too long
                continue
            self._pending.append(piece)
            self._pending_len += len(piece)
            if self._pending_len > self.max_line_bytes:
                self._drop_pending()
                self._too_long()
                self._skipping = not ends_line
                continue
            if ends_line:
                line = self._drop_pending()
                ev = self.parse_line(line)
                if ev is not None:
                    out.append(ev)
        return out

    def flush(self) -> list[MetricEvent]:
        """The stream is over: parse a final line that had no trailing newline."""
        rest = self._drop_pending()
        self._skipping = False
        ev = self.parse_line(rest) if rest.strip() else None
        return [ev] if ev is not None else []

    def _drop_pending(self) -> bytes:
        line = b"".join(self._pending)
        self._pending, self._pending_len = [], 0
        return line

    def _too_long(self) -> None:
        self.lineno += 1
        self._bad(BadEvent(f"line longer than {self.max_line_bytes} bytes: skipped to the next newline",
                           self.lineno))

    def parse_line(self, line: str | bytes) -> MetricEvent | None:
        """One line (numbered in order); None for blank and bad lines (bad ones are recorded)."""
        if len(line) > self.max_line_bytes:
            self._too_long()
            return None
        self.lineno += 1
        if not line.strip():
            return None
        try:
            ev = parse_event_line(line, self.lineno)
        except BadEvent as e:
            self._bad(e)
            return None
        return self._accept(ev)

    def push(self, obj: dict | MetricEvent) -> MetricEvent | None:
        """An event produced in-process (a dict in the METRICS.md shape, or a MetricEvent)."""
        self.lineno += 1
        if isinstance(obj, MetricEvent):
            return self._accept(obj)
        try:
            return self._accept(event_from_dict(obj, self.lineno))
        except BadEvent as e:
            self._bad(e)
            return None

    def _accept(self, ev: MetricEvent) -> MetricEvent:
        if starts_segment(self.last_step, self.last_attempt, ev):
            self.segments += 1
        self.last_step = ev.step
        if ev.attempt is not None:
            self.last_attempt = ev.attempt
        self.events_read += 1
        return ev

    def _bad(self, e: BadEvent) -> None:
        self.bad_lines += 1
        if len(self.errors) < self.max_errors_kept:
            self.errors.append(e)
        if self.on_error is not None:
            self.on_error(e)

    # -- files and iterables ------------------------------------------------------------------------

    def read_available(self) -> list[MetricEvent]:
        """Non-blocking: the events of the complete lines written to the file since the last call.
        Raises OSError when the file cannot be opened (missing, permissions)."""
        if self.path is None:
            raise ValueError("read_available() needs a file source")
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
            self._pos = 0
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if size < self._pos:  # truncated or replaced in place: start over, the old lines are gone
                self._fh.seek(0)
                self._pos = 0
                self._drop_pending()
                self._skipping = False
            out: list[MetricEvent] = []
            while True:
                chunk = self._fh.read(_CHUNK)
                if not chunk:
                    break
                self._pos += len(chunk)
                out.extend(self.feed(chunk))
            return out
        except OSError:
            self.close()
            raise

    def __iter__(self) -> Iterator[MetricEvent]:
        if self.lines is not None:
            for line in self.lines:
                if isinstance(line, str):
                    line = line.encode("utf-8")
                # An iterable may or may not keep the newlines; each item is one line.
                ev = self.parse_line(line.rstrip(b"\r\n"))
                if ev is not None:
                    yield ev
            return
        if self.path is None:
            return
        try:
            last_data = self.clock()
            while True:
                events = self.read_available()
                yield from events
                if not self.follow:
                    yield from self.flush()
                    return
                if events:
                    last_data = self.clock()
                elif self.stop is not None and self.stop():
                    return
                elif self.idle_timeout_s is not None and self.clock() - last_data >= self.idle_timeout_s:
                    return
                else:
                    self.sleep(self.poll_interval_s)
        finally:
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def summary(self) -> str:
        return (f"{self.events_read} events, {self.bad_lines} bad lines, {self.segments} segment"
                f"{'s' if self.segments != 1 else ''}")
