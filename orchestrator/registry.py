"""The checkpoint registry: which checkpoints exist, how healthy each is, which to keep.

Health follows one rule (policies.view.next_health): a checkpoint is PENDING when
written, HEALTHY once `confirm_steps` later steps pass without an alert whose onset is
at or before its step + confirm_steps, SUSPECT as soon as such an alert arrives (also
after it was HEALTHY: detection lags onset), CORRUPT when its checksums fail.

Retention (after every add/observe): keep the newest `keep_last` checkpoints, the newest
`keep_healthy` HEALTHY ones (the last healthy checkpoint is never pruned), every PENDING
one (it may become the last healthy one), every pinned one, the one the run was last restored
to (`use`, also set by `rollback_target`) and every HELD one (the target of a decided rollback that is not finished:
a worker is loading it or a relaunch will); delete the others from
disk: renamed to a hidden trash name first (atomic, so a crash mid-delete never leaves a
half-deleted directory that looks like a checkpoint), then removed.

Held rollback targets (`hold` / `release`): a target was chosen as HEALTHY, i.e. from
before the bad regime. While its rollback is under way, a later alert demotes it only if the
alert's onset is at or before the target's own step (the regime began before the target was
written: its weights are affected). The usual confirm window (onset <= step + confirm_steps,
which covers detection lag while a checkpoint is being confirmed) does not apply any more: an
early-life alert with onset 3 must not take away step 2, the state the run is returning to.

Loading: `rollback_target(before_step)` verifies the newest HEALTHY checkpoint before
`before_step` against its manifest checksums; a corrupt one is marked CORRUPT, reported
through `take_corruption_alerts()` (for the sinks and the pager, not for the policy
engine) and the previous healthy one is tried.

Persistence: RUN/checkpoints/registry.json, written atomically (temp, fsync, rename,
fsync dir) after every change. `CheckpointRegistry.open` loads it and reconciles it with
the directories on disk; without it (or when unreadable) the registry is rebuilt from the
checkpoint directories and the journal's `checkpoint` lines (last health per step wins).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.view import DEFAULT_CONFIRM_STEPS, CheckpointView, Health, next_health
from rlguard.ppo.checkpoint_files import (
    CheckpointError,
    checkpoint_dir_name,
    fsync_path,
    list_checkpoints,
    read_manifest,
    verify_checkpoint,
)

REGISTRY_FILE = "registry.json"
FORMAT = "rlguard-registry/1"


class RegistryConfig(BaseModel):
    """Checkpoint health and retention settings."""

    model_config = ConfigDict(extra="forbid")

    confirm_steps: int = Field(
        default=DEFAULT_CONFIRM_STEPS,
        ge=0,
        description="Alert-free steps after a checkpoint before it is HEALTHY (a rollback target).",
    )
    keep_last: int = Field(default=3, ge=1, description="Newest checkpoints kept whatever their health.")
    keep_healthy: int = Field(
        default=2,
        ge=1,
        description="Newest HEALTHY checkpoints kept (>= 1: the last healthy one is never pruned). 2 leaves a "
        "fallback when a late alert demotes the newest one or it turns out corrupt.",
    )
    suspect_min_severity: Literal["warning", "critical"] = Field(
        default="warning",
        description="Least severe alert that makes a checkpoint SUSPECT. `critical` suits runs with chatty "
        "warning detectors, where warnings alone would leave no checkpoint healthy.",
    )
    suspect_ignore_codes: list[str] = Field(
        default_factory=lambda: ["stall", "checkpoint_corrupt"],
        description="Alert codes that never make a checkpoint SUSPECT: they say nothing about the model's "
        "state (a hung worker, a bad file).",
    )


@dataclass
class CheckpointEntry:
    """One checkpoint the registry knows. `name` is the directory name under checkpoints/."""

    step: int
    name: str
    health: Health = Health.PENDING
    pinned: bool = False
    created: float | None = None
    note: str = ""
    constraints: dict = field(default_factory=dict)

    def view(self) -> CheckpointView:
        return CheckpointView(self.step, self.health)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["health"] = self.health.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CheckpointEntry:
        step = int(d["step"])
        return cls(
            step=step,
            name=checkpoint_dir_name(step),  # never the file's "name": it could point outside checkpoints/
            health=Health(d.get("health", "pending")),
            pinned=bool(d.get("pinned", False)),
            created=d.get("created"),
            note=str(d.get("note", "")),
            constraints=dict(d.get("constraints") or {}),
        )


@dataclass
class RegistryChange:
    """What one call changed, for the journal and the sinks (on_checkpoint)."""

    health: list[tuple[int, Health, Health]] = field(default_factory=list)  # (step, old, new)
    pruned: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.health or self.pruned)


class RegistryError(Exception):
    """A registry call that cannot be honoured; the message says why and what to do."""


def _locked(method: Callable) -> Callable:
    """The supervisor's loop writes while its HTTP handlers read: one lock per registry."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class CheckpointRegistry:
    """Health, retention and persistence of the checkpoints under one directory."""

    def __init__(self, root: str | Path, cfg: RegistryConfig | None = None):
        self.root = Path(root)
        self.cfg = cfg or RegistryConfig()
        self._entries: dict[int, CheckpointEntry] = {}
        self._lock = threading.RLock()
        self._in_use: int | None = None  # the step the run was last restored to (use()): never pruned
        self._held: set[int] = set()  # targets of unfinished rollbacks: never pruned, demoted only by onset <= step
        self._corruptions: list[Alert] = []
        self.problems: list[str] = []  # what open() had to repair, for the supervisor's log

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(
        cls,
        root: str | Path,
        cfg: RegistryConfig | None = None,
        journal_entries: Iterable[dict] | None = None,
    ) -> CheckpointRegistry:
        """Load registry.json (or rebuild), then reconcile with the directories on disk."""
        reg = cls(root, cfg)
        path = reg.root / REGISTRY_FILE
        loaded = False
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or data.get("format") != FORMAT:
                    raise ValueError(f"not an {FORMAT} file")
                reg._entries = {e.step: e for e in map(CheckpointEntry.from_dict, data["entries"])}
                reg._in_use = data.get("in_use")
                reg._held = {int(x) for x in data.get("held") or []}
                loaded = True
            except (OSError, ValueError, KeyError, TypeError) as e:
                reg.problems.append(
                    f"{path} unreadable ({e}): rebuilt from the checkpoint directories and journal"
                )
        if not loaded:
            reg._entries = {}
            reg._health_from_journal(journal_entries or ())
        reg._reconcile()
        reg.save()
        return reg

    @classmethod
    def rebuild(
        cls,
        root: str | Path,
        cfg: RegistryConfig | None = None,
        journal_entries: Iterable[dict] | None = None,
    ) -> CheckpointRegistry:
        """Ignore registry.json: scan the directories, take health from the journal."""
        reg = cls(root, cfg)
        reg._health_from_journal(journal_entries or ())
        reg._reconcile()
        reg.save()
        return reg

    def _health_from_journal(self, journal_entries: Iterable[dict]) -> None:
        for e in journal_entries:
            if e.get("kind") != "checkpoint" or "step" not in e:
                continue
            step, health = int(e["step"]), e.get("health")
            if health == "pruned":
                self._entries.pop(step, None)
                continue
            try:
                h = Health(health)
            except ValueError:
                continue
            old = self._entries.get(step)
            pinned = bool(e.get("pinned", old.pinned if old else False))
            self._entries[step] = CheckpointEntry(step, checkpoint_dir_name(step), h, pinned=pinned, note=str(e.get("note", "")))
            # Until the manifest is read, `created` holds the time of the last line about it: a
            # manifest created after that is a checkpoint written again (after a rollback) that
            # the journal never heard of.
            self._entries[step].created = e.get("time")

    def _reconcile(self) -> None:
        # A crash between rename-to-trash and rmtree leaves a trash directory: finish the delete.
        if self.root.is_dir():
            for p in self.root.glob(".trash-step-*"):
                shutil.rmtree(p, ignore_errors=True)
        on_disk = {int(p.name[5:]): p for p in list_checkpoints(self.root)}
        for step in list(self._entries):
            if step not in on_disk:
                self.problems.append(
                    f"checkpoint step {step} is gone from {self.root}: dropped from the registry"
                )
                del self._entries[step]
        for step, p in on_disk.items():
            entry = self._entries.get(step)
            if entry is None:
                entry = self._entries[step] = CheckpointEntry(step, p.name)
            entry.name = p.name  # the directory found for this step under root, whatever was recorded
            known_as = entry.created
            self._read_manifest_into(entry)
            rewritten = isinstance(known_as, (int, float)) and isinstance(entry.created, (int, float))
            if rewritten and entry.created > known_as and entry.health is not Health.CORRUPT:
                if entry.health is not Health.PENDING:
                    self.problems.append(
                        f"checkpoint step {step} was written again after it was last registered "
                        f"({entry.health.value}): pending again"
                    )
                entry.health, entry.note = Health.PENDING, "written again since it was last registered"

    def _read_manifest_into(self, entry: CheckpointEntry) -> None:
        try:
            manifest = read_manifest(self.root / entry.name)
        except CheckpointError as e:
            entry.health, entry.note = Health.CORRUPT, e.reason
            return
        entry.created = manifest.get("created")
        entry.constraints = dict(manifest.get("constraints") or {})

    # ------------------------------------------------------------------ queries

    @_locked
    def entries(self) -> list[CheckpointEntry]:
        return [self._entries[s] for s in sorted(self._entries)]

    @_locked
    def get(self, step: int) -> CheckpointEntry | None:
        return self._entries.get(step)

    def path_of(self, entry: CheckpointEntry) -> Path:
        return self.root / entry.name

    @_locked
    def views(self) -> list[CheckpointView]:
        """What the policy engine's RunView needs."""
        return [e.view() for e in self.entries()]

    @_locked
    def last_healthy(self) -> CheckpointEntry | None:
        healthy = [e for e in self.entries() if e.health is Health.HEALTHY]
        return healthy[-1] if healthy else None

    # ------------------------------------------------------------------ changes

    @_locked
    def add(self, step: int, path: str | Path | None = None) -> RegistryChange:
        """A checkpoint was written at `step` (replacing any entry for the same step)."""
        p = Path(path) if path is not None else self.root / checkpoint_dir_name(step)
        if p.parent.resolve() != self.root.resolve():
            raise RegistryError(
                f"checkpoint {p} is not directly under {self.root}: write it with checkpoint_dir_name()"
            )
        if not p.is_dir():
            raise RegistryError(
                f"checkpoint {p} does not exist: add() is called after the directory is in place"
            )
        entry = CheckpointEntry(int(step), p.name)
        self._read_manifest_into(entry)
        old = self._entries.get(entry.step)
        entry.pinned = bool(old and old.pinned)
        self._entries[entry.step] = entry
        change = RegistryChange(health=[(entry.step, old.health if old else Health.PENDING, entry.health)])
        change.pruned = self.prune()
        self.save()
        return change

    @_locked
    def observe(self, step: int, alerts: Sequence[Alert]) -> RegistryChange:
        """One step passed with these alerts: confirm or suspect checkpoints, then prune."""
        min_sev = Severity(self.cfg.suspect_min_severity)
        change = RegistryChange()
        for e in self.entries():
            confirm = 0 if e.step in self._held else self.cfg.confirm_steps  # see "Held rollback targets"
            new = next_health(e.health, e.step, step, alerts, confirm, min_sev, self.cfg.suspect_ignore_codes)
            if new is not e.health:
                if new is Health.SUSPECT:
                    first = min(
                        (a for a in alerts if a.severity.rank >= min_sev.rank), key=lambda a: a.onset_step
                    )
                    e.note = (
                        f"{first.code} on {first.metric} at step {first.step} with onset {first.onset_step}"
                    )
                change.health.append((e.step, e.health, new))
                e.health = new
        if change:
            change.pruned = self.prune()
            self.save()
        return change

    @_locked
    def note_rollback(self, target_step: int) -> RegistryChange:
        """The run went back to `target_step`: checkpoints after it belong to an abandoned
        timeline. Unconfirmed ones can never be confirmed; confirmed ones were confirmed by that
        timeline's events (a worker that trained on while the load was on its way) and, being
        newer, would otherwise push the new timeline's checkpoints out of retention."""
        change = RegistryChange()
        for e in self.entries():
            if e.step > target_step and e.health in (Health.PENDING, Health.HEALTHY):
                change.health.append((e.step, e.health, Health.SUSPECT))
                e.health, e.note = Health.SUSPECT, f"abandoned by the rollback to step {target_step}"
        if change:
            self.save()
        return change

    @_locked
    def use(self, step: int) -> None:
        """The run was (or is being) restored to `step`: it is the base of the run's current
        timeline and stays on disk (retention keeps it) until another rollback replaces it. A later
        alert whose onset is early in that timeline then still has its starting point to go back to
        (measured, demo seed 1: the restored step 0 was pruned and the second alert could only halt)."""
        if step in self._entries and self._in_use != step:
            self._in_use = step
            self.save()

    @_locked
    def hold(self, step: int) -> None:
        """`step` is the target of a decided rollback: keep it (and its health) until release()."""
        if step in self._entries and step not in self._held:
            self._held.add(step)
            self.save()

    @_locked
    def release(self, step: int | None = None) -> list[int]:
        """The rollback to `step` (None: every held one) finished or was given up; applies
        retention again and returns the steps that pruning deleted."""
        before = set(self._held)
        self._held = set() if step is None else self._held - {step}
        if self._held == before:
            return []
        pruned = self.prune()
        self.save()
        return pruned

    @property
    def held(self) -> set[int]:
        return set(self._held)

    @_locked
    def pin(self, step: int, pinned: bool = True) -> None:
        """Pinned checkpoints are never pruned (e.g. kept for a post-mortem)."""
        if step not in self._entries:
            known = ", ".join(map(str, sorted(self._entries))) or "none"
            raise RegistryError(f"no checkpoint at step {step} to pin (known steps: {known})")
        self._entries[step].pinned = pinned
        self.save()

    @_locked
    def rollback_target(self, before_step: int) -> CheckpointEntry | None:
        """The newest HEALTHY checkpoint with step < before_step whose checksums verify.

        Corrupt ones on the way are marked CORRUPT and reported by take_corruption_alerts()."""
        candidates = [e for e in self.entries() if e.health is Health.HEALTHY and e.step < before_step]
        for e in reversed(candidates):
            try:
                verify_checkpoint(self.path_of(e))
                self.use(e.step)
                return e
            except CheckpointError as err:
                e.health, e.note = Health.CORRUPT, err.reason
                self._corruptions.append(
                    Alert(
                        code="checkpoint_corrupt",
                        detector="registry",
                        metric="",
                        step=e.step,
                        severity=Severity.CRITICAL,
                        onset_step=e.step,
                        message=f"checkpoint step {e.step} failed verification ({err}): skipped",
                    )
                )
                self.save()
        return None

    @_locked
    def mark_corrupt(self, step: int, reason: str) -> None:
        """A checkpoint found unloadable outside `rollback_target` (a trainer launcher's target
        whose files vanished or changed): CORRUPT, reported like a failed verification."""
        e = self._entries.get(step)
        if e is None or e.health is Health.CORRUPT:
            return
        e.health, e.note = Health.CORRUPT, reason
        self._corruptions.append(Alert(code="checkpoint_corrupt", detector="registry", metric="", step=step,
                                       severity=Severity.CRITICAL, onset_step=step,
                                       message=f"checkpoint step {step} cannot be loaded ({reason}): skipped"))
        self.save()

    @_locked
    def take_corruption_alerts(self) -> list[Alert]:
        """Corruptions found since the last call (for sinks/pager; do not feed them to the engine)."""
        out, self._corruptions = self._corruptions, []
        return out

    @_locked
    def prune(self) -> list[int]:
        """Apply retention; returns the steps deleted."""
        entries = self.entries()
        keep = {e.step for e in entries[-self.cfg.keep_last :]}
        keep |= {e.step for e in [e for e in entries if e.health is Health.HEALTHY][-self.cfg.keep_healthy :]}
        keep |= {e.step for e in entries if e.pinned or e.health is Health.PENDING or e.step == self._in_use
                 or e.step in self._held}
        deleted = []
        for e in entries:
            if e.step in keep:
                continue
            self._delete_dir(self.path_of(e))
            del self._entries[e.step]
            deleted.append(e.step)
        return deleted

    def _delete_dir(self, path: Path) -> None:
        if not path.name.startswith("step-") or path.parent.resolve() != self.root.resolve():
            raise RegistryError(f"refusing to delete {path}: not a checkpoint directory of {self.root}")
        if not path.exists():
            return
        trash = self.root / f".trash-{path.name}-{time.monotonic_ns()}"
        os.rename(path, trash)
        fsync_path(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ persistence

    @_locked
    def save(self) -> None:
        """Write registry.json atomically: temp file, fsync, rename, fsync the directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = {
            "format": FORMAT,
            "saved": time.time(),
            "in_use": self._in_use,
            "held": sorted(self._held),
            "entries": [e.to_dict() for e in self.entries()],
        }
        final = self.root / REGISTRY_FILE
        tmp = self.root / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_path(self.root)
