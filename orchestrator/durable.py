"""Bookkeeping that must not stop the run when the disk does (full, read-only, I/O errors).

The journal and the checkpoint registry write (and fsync) on every change. When the disk
fails, the supervisor still has to finish what it is doing (relaunch a crashed worker,
stop one it was told to halt, end with a clear exit code), so their write errors are
logged and counted here, never raised into the loop. The record has a gap then; the
supervisor says so in its log and its result counters (`bookkeeping_errors`).
"""

from __future__ import annotations

import itertools
import logging

from rlguard.orchestrator.journal import JournalError

log = logging.getLogger("rlguard.durable")

_WRITERS = ("append", "decided", "finished", "alert", "checkpoint", "restart", "state", "operator", "note")


class SafeJournal:
    """A Journal whose writing methods log and count OSError instead of raising.

    `decided` still returns a decision id when the line could not be written (an
    "unjournaled" one), and `finished` on such an id is a counted no-op, so the loop's
    decided -> act -> outcome sequence runs the same with or without a disk."""

    def __init__(self, journal):
        self._journal = journal
        self.errors = 0
        self._unjournaled = itertools.count(1)

    def __getattr__(self, name):
        attr = getattr(self._journal, name)
        if name not in _WRITERS:
            return attr

        def guarded(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except (OSError, JournalError) as e:
                if name == "finished" and str(args[0] if args else "").startswith("d-unjournaled"):
                    return {}
                self.errors += 1
                if self.errors <= 5:
                    log.error("journal %s failed (%s): the run goes on with a gap in the journal", name, e)
                return f"d-unjournaled-{next(self._unjournaled)}" if name == "decided" else {}

        return guarded


class SafeRegistry:
    """The checkpoint registry with its persistence failures contained: the in-memory state
    (what the supervisor decides with) is updated before the save that failed."""

    def __init__(self, registry):
        self._registry = registry
        self.errors = 0

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def _guard(self, name: str, fallback, *args):
        try:
            return getattr(self._registry, name)(*args)
        except OSError as e:
            self.errors += 1
            if self.errors <= 5:
                log.error("checkpoint registry %s failed (%s): registry.json is behind; the run goes on", name, e)
            return fallback() if callable(fallback) else fallback

    def add(self, step, path=None):
        return self._guard("add", _no_change, step, path)

    def observe(self, step, alerts):
        return self._guard("observe", _no_change, step, alerts)

    def note_rollback(self, step):
        return self._guard("note_rollback", _no_change, step)

    def mark_corrupt(self, step, reason):
        return self._guard("mark_corrupt", None, step, reason)

    def hold(self, step):
        return self._guard("hold", None, step)

    def release(self, step=None):
        return self._guard("release", list, step)

    def rollback_target(self, before_step):
        # If verification succeeded but saving the result failed, fall back to the newest
        # healthy entry held in memory (the worker verifies the checksums again before loading).
        def in_memory():
            from rlguard.policies.view import Health

            ok = [e for e in self._registry.entries() if e.health is Health.HEALTHY and e.step < before_step]
            return ok[-1] if ok else None

        return self._guard("rollback_target", in_memory, before_step)


def _no_change():
    from rlguard.orchestrator.registry import RegistryChange

    return RegistryChange()
