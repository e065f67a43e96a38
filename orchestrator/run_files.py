"""The run directory's supervisor-owned files: config.yaml, control.token, supervisor.json.

    RUN/config.yaml      the full run config as given (written once by `rlguard run`), mode
                         0600: it may hold a webhook URL or other secrets
    RUN/control.token    bearer token for the control API, mode 0600, reused on --resume
    RUN/supervisor.json  {"pid", "host", "port", "url", "started", "worker": {...}}: how CLI
                         commands and a worker's SDK find the live supervisor, mode 0600
                         (the CLI and the SDK send the token only to loopback or the
                         configured host, whatever URL this file names)
    RUN/journal.jsonl    orchestrator/journal.py
    RUN/checkpoints/     orchestrator/registry.py (+ registry.json)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from rlguard.orchestrator.journal import Journal, read_journal
from rlguard.orchestrator.registry import CheckpointRegistry
from rlguard.ppo.checkpoint_files import fsync_path, recover_interrupted_replace

log = logging.getLogger("rlguard.run_files")

TOKEN_FILE = "control.token"
INFO_FILE = "supervisor.json"
CONFIG_FILE = "config.yaml"


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_path(path.parent)  # the rename is durable only once the directory is


class RunFiles:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / "journal.jsonl"

    def write_config(self, raw: dict) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(raw, sort_keys=False), mode=0o600)

    def remove_partial_checkpoints(self) -> list[str]:
        """Delete the temp directories of checkpoint writes that were killed (call only while no
        worker runs). Complete checkpoints are renamed into place atomically, so a `.tmp-*` or
        `.old-*` directory is never a checkpoint anyone can load, with one exception first put
        right: a crash between the two renames of a replaced step leaves no `step-N` but a
        complete `.tmp-`/`.old-` copy, which is renamed into place (never deleted)."""
        removed = []
        for promoted in recover_interrupted_replace(self.checkpoints_dir):
            log.warning("checkpoint replace interrupted by a crash, completed: %s", promoted)
        if self.checkpoints_dir.is_dir():
            for p in self.checkpoints_dir.iterdir():
                if p.is_dir() and (p.name.startswith(".tmp-step-") or p.name.startswith(".old-step-")):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
        if removed:
            log.warning("removed %d partial checkpoint directories: %s", len(removed), ", ".join(removed))
        return removed

    def ensure_token(self) -> str:
        """The run's bearer token: read it, or create it readable by the owner only."""
        path = self.run_dir / TOKEN_FILE
        if path.exists():
            token = path.read_text().strip()
            if token:
                return token
        token = secrets.token_urlsafe(32)
        atomic_write_text(path, token + "\n", mode=0o600)
        return token

    def write_supervisor_info(self, url: str, port: int, worker: dict | None) -> bool:
        """False when it could not be written (full disk): CLI commands and reattaching need
        it, but the run itself does not, so that is logged, not raised."""
        info = {"pid": os.getpid(), "host": urlsplit(url).hostname or "127.0.0.1", "port": port, "url": url,
                "started": time.time(), "worker": worker}
        try:
            atomic_write_text(self.run_dir / INFO_FILE, json.dumps(info, indent=1), mode=0o600)
            return True
        except OSError as e:
            log.error("could not write %s (%s): `rlguard status` and --resume will not find this supervisor",
                      self.run_dir / INFO_FILE, e)
            return False

    def open_journal(self) -> Journal:
        return Journal(self.journal_path)

    def open_registry(self, config) -> CheckpointRegistry:
        entries = read_journal(self.journal_path).entries
        return CheckpointRegistry.open(self.checkpoints_dir, config.supervisor.checkpoints, journal_entries=entries)


def read_supervisor_info(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def read_token(run_dir: Path) -> str:
    try:
        return (Path(run_dir) / TOKEN_FILE).read_text().strip()
    except OSError:
        return ""
