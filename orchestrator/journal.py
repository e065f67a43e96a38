"""The run journal: `RUN/journal.jsonl`, append-only, one fsynced JSON line per entry.

Every automatic action is written down before it is taken and its outcome after, so that
a supervisor that died mid-action knows, on restart, what it was doing:

    {"seq": 7, "time": ..., "kind": "decision", "phase": "decided", "decision_id": "d-000007",
     "source": "policy", "step": 431, "decision": {<Decision.to_dict()>},
     "inputs": {"alerts": [<Alert.to_dict()>...], "constraints": {...}, "target": {...}}}
    {"seq": 8, "time": ..., "kind": "decision", "phase": "done", "decision_id": "d-000007",
     "action": "rollback", "step": 431, "outcome": {...}}

Outcome phases: done (carried out), failed (tried, did not work), skipped (not attempted,
e.g. advise mode or superseded), denied (an operator, or an approval timeout, said no).

Other kinds: alert, checkpoint, restart, state, operator, note (see the methods).
`seq` increases by one per line across reopenings; `decision_id` is "d-" + the seq of the
decided line, so it is unique in the file.

Crash safety: a line is written on an O_APPEND descriptor and fsynced before the call
returns; a write that stops short (disk full) is truncated back and raised, never left as a
fragment. A crash can still leave a torn last line; reading detects it
(no newline and not valid JSON), ignores and reports it, and reopening for append first
terminates it so the next entry starts on a line of its own. One writer at a time: the
journal holds an exclusive flock while open.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rlguard.monitors.alerts import Alert
from rlguard.policies.decision import OUTCOME_PHASES, Decision, Phase
from rlguard.ppo.checkpoint_files import fsync_path

KINDS = ("decision", "alert", "checkpoint", "restart", "state", "operator", "note")


class JournalError(Exception):
    """Misuse of the journal (unknown decision id, second outcome, another writer)."""


@dataclass
class JournalRead:
    """The readable entries of a journal file and what was wrong with the rest.

    bad_lines: (line number, reason) of lines that are not journal entries.
    torn_tail: the last line is incomplete (a crash during a write); it is in bad_lines too.
    """

    entries: list[dict] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    torn_tail: bool = False
    ends_with_newline: bool = True


def read_journal(path: str | Path) -> JournalRead:
    """Parse a journal; never raises on content (a missing file reads as empty)."""
    path = Path(path)
    out = JournalRead()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    if not data:
        return out
    out.ends_with_newline = data.endswith(b"\n")
    lines = data.split(b"\n")
    if out.ends_with_newline:
        lines.pop()  # the empty string after the final newline
    for i, raw in enumerate(lines, start=1):
        last = i == len(lines)
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) or "kind" not in entry:
                raise ValueError("not a journal entry (needs an object with int 'seq' and 'kind')")
        except (UnicodeDecodeError, ValueError) as e:
            if last and not out.ends_with_newline:
                out.torn_tail = True
                out.bad_lines.append((i, f"torn last line ({len(raw)} bytes, no newline): ignored"))
            else:
                out.bad_lines.append((i, f"unreadable line ignored: {e}"))
            continue
        out.entries.append(entry)
    return out


class Journal:
    """Append-only writer over RUN/journal.jsonl; reopening continues the sequence.

    `recovered` is what was read at open (bad lines, torn tail) for the supervisor to report.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JournalError(
                f"{self.path} is open for writing by another process (a supervisor still running?): "
                "stop it first, or read the journal with read_journal()"
            ) from None
        if created:
            fsync_path(self.path.parent)
        self.recovered = read_journal(self.path)
        if not self.recovered.ends_with_newline:
            # Terminate a torn (or newline-less) last line so the next entry is a line of its own.
            self._write_all(b"\n")
            os.fsync(self._fd)
        self._seq = max((e["seq"] for e in self.recovered.entries), default=0)
        self._decided: dict[str, dict] = {}
        self._finished: dict[str, str] = {}
        for e in self.recovered.entries:
            self._index(e)

    # ------------------------------------------------------------------ writing

    def append(self, kind: str, **fields) -> dict:
        """Write one entry of `kind` with `fields`; returns it with its seq and time."""
        if kind not in KINDS:
            raise ValueError(f"journal kind {kind!r} is not one of {KINDS}")
        with self._lock:
            if self._fd < 0:
                raise JournalError(f"{self.path}: journal is closed")
            entry = {"seq": self._seq + 1, "time": round(self._clock(), 6), "kind": kind, **fields}
            line = json.dumps(entry, allow_nan=True, default=str) + "\n"
            self._write_all(line.encode("utf-8"))
            os.fsync(self._fd)
            self._seq += 1
            self._index(entry)
            return entry

    def _write_all(self, data: bytes) -> None:
        """All of `data`, or nothing: os.write may write part of it (disk full, file size limit),
        and a fragment left behind would glue the next entry to it. Raises OSError."""
        start = os.lseek(self._fd, 0, os.SEEK_END)  # we hold the only writer's lock: the entry starts here
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, f"{self.path}: nothing written")
                view = view[n:]
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the reader still ignores a torn last line, and reopening terminates it
            raise

    def decided(
        self,
        decision: Decision,
        *,
        alerts: Iterable[Alert] = (),
        constraints: dict | None = None,
        target: dict | None = None,
        source: str = "policy",
    ) -> str:
        """Journal a decision before acting on it; returns its decision_id.

        source: "policy" (the engine) or "operator" (an API/CLI command): only policy decisions
        count toward the engine's rollback budget when it is rebuilt from the journal."""
        decision_id = f"d-{self._seq + 1:06d}"
        self.append(
            "decision",
            phase=Phase.DECIDED.value,
            decision_id=decision_id,
            source=source,
            step=decision.step,
            decision=decision.to_dict(),
            inputs={
                "alerts": [a.to_dict() for a in alerts],
                "constraints": dict(constraints or {}),
                "target": target,
            },
        )
        return decision_id

    def finished(self, decision_id: str, phase: str, outcome: dict | str | None = None) -> dict:
        """Journal how a decided action ended: done | failed | skipped | denied."""
        if phase not in OUTCOME_PHASES:
            raise ValueError(f"journal outcome phase {phase!r} is not one of {[p.value for p in OUTCOME_PHASES]}")
        decided = self._decided.get(decision_id)
        if decided is None:
            raise JournalError(f"{self.path}: no 'decided' entry with decision_id {decision_id!r}")
        if decision_id in self._finished:
            raise JournalError(
                f"{self.path}: decision {decision_id} already ended ({self._finished[decision_id]}); "
                "an outcome is written once"
            )
        if isinstance(outcome, str):
            outcome = {"message": outcome}
        return self.append(
            "decision",
            phase=phase,
            decision_id=decision_id,
            action=decided["decision"]["action"],
            step=decided["step"],
            outcome=outcome or {},
        )

    def alert(self, alert: Alert) -> dict:
        return self.append("alert", step=alert.step, alert=alert.to_dict())

    def checkpoint(self, step: int, path: str | Path, health: str, **extra) -> dict:
        """A checkpoint written, or its health changed (pending/healthy/suspect/corrupt/pruned)."""
        return self.append("checkpoint", step=int(step), path=str(path), health=str(health), **extra)

    def restart(self, reason: str, attempt: int | None = None, **extra) -> dict:
        return self.append("restart", reason=reason, attempt=attempt, **extra)

    def state(self, state: str, previous: str | None = None, reason: str = "", **extra) -> dict:
        return self.append("state", state=str(state), previous=previous, reason=reason, **extra)

    def operator(self, command: str, args: dict | None = None, source: str = "cli", **extra) -> dict:
        return self.append("operator", command=command, args=dict(args or {}), source=source, **extra)

    def note(self, message: str, **extra) -> dict:
        return self.append("note", message=message, **extra)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    @property
    def last_seq(self) -> int:
        return self._seq

    def entries(self) -> list[dict]:
        """All readable entries, from the file."""
        return read_journal(self.path).entries

    def pending_decisions(self) -> list[dict]:
        """'decided' entries with no outcome yet, oldest first: what a restarted supervisor
        must finish or abandon (writing an outcome), never silently do twice."""
        return [e for i, e in self._decided.items() if i not in self._finished]

    def decision_history(self, sources: tuple[str, ...] = ("policy",)) -> list[tuple[Decision, str | None]]:
        """(decision, outcome phase or None if pending) in journal order, of the given sources:
        the input of PolicyEngine.replay_journal."""
        return [
            (Decision.from_dict(e["decision"]), self._finished.get(i))
            for i, e in self._decided.items()
            if e.get("source", "policy") in sources
        ]

    def _index(self, e: dict) -> None:
        if e.get("kind") != "decision" or "decision_id" not in e:
            return
        if e.get("phase") == Phase.DECIDED and isinstance(e.get("decision"), dict):
            self._decided[e["decision_id"]] = e
        elif e.get("phase") in OUTCOME_PHASES:
            self._finished[e["decision_id"]] = e["phase"]
