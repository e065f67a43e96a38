"""Commands the supervisor sends to a worker, applied at the worker's next step boundary.

A command is data (kind + params + id) so that it can travel over HTTP, be journaled, and
be acknowledged. The worker acknowledges each command it was given (ok or failed, with a
detail line); the SDK acknowledges implicitly with ok=True at the next sync unless the
training script reported a failure with `client.done(cmd, ok=False, detail=...)`.

Kinds and their params (the contract for anyone writing a worker):

    set_constraints  {"kl_coef"?, "clip_range"?, "lr"?}      new values from the next step on
    save             {}                                       write a checkpoint now
    load             {"path", "step", "skip_batches",          in-process rollback: verify and
                      "constraints", "attempt"}                load the checkpoint, skip K batches,
                                                               apply the constraints, continue as
                                                               the new attempt
    pause            {}                                       handled inside the SDK: blocks
                                                               `commands()` until resume or stop
    resume           {}                                       ends a pause
    stop             {"reason"}                               finish cleanly (exit 0) now
    evaluate         {}                                       run held-out evaluation now
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from enum import StrEnum


class CommandKind(StrEnum):
    SET_CONSTRAINTS = "set_constraints"
    SAVE = "save"
    LOAD = "load"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    EVALUATE = "evaluate"


_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _next_id() -> str:
    with _ids_lock:
        return f"c{next(_ids)}"


@dataclass(frozen=True)
class Command:
    """One instruction for the worker.

    kind: what to do (CommandKind).
    params: arguments of the kind (see the module docstring).
    id: unique within one supervisor process; echoed back in the acknowledgement. Commands
        that carry out a decision are named "<decision_id>:c<n>".
    decision_id: the journal decision this command carries out ("" for operator/scheduler
        commands that have no decision), so the outcome can be journaled against it.
    """

    kind: CommandKind
    params: dict = field(default_factory=dict)
    id: str = ""
    decision_id: str = ""

    def __post_init__(self):
        if not self.id:
            # "<decision_id>:<n>": a supervisor restarted from the journal can match a late ack
            # to the decision it finishes, though it never saw the command itself.
            n = _next_id()
            object.__setattr__(self, "id", f"{self.decision_id}:{n}" if self.decision_id else n)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind.value, "params": dict(self.params), "decision_id": self.decision_id}

    @classmethod
    def from_dict(cls, d: dict) -> Command:
        try:
            kind = CommandKind(d["kind"])
        except (KeyError, ValueError):
            allowed = ", ".join(k.value for k in CommandKind)
            raise ValueError(f"command kind {d.get('kind')!r} is unknown; expected one of {allowed}") from None
        return cls(kind=kind, params=dict(d.get("params") or {}), id=str(d.get("id", "")),
                   decision_id=str(d.get("decision_id", "")))


@dataclass(frozen=True)
class Ack:
    """The worker's answer to one command: applied (ok) or not, with a line for the journal."""

    command_id: str
    ok: bool = True
    detail: str = ""
    step: int | None = None

    def to_dict(self) -> dict:
        return {"command_id": self.command_id, "ok": self.ok, "detail": self.detail, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict) -> Ack:
        step = d.get("step")
        return cls(command_id=str(d["command_id"]), ok=bool(d.get("ok", True)), detail=str(d.get("detail", "")),
                   step=None if step is None else int(step))
