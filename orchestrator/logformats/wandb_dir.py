"""A W&B run directory (online or offline): `wandb/run-*` or `wandb/offline-run-*`, or the
`wandb/` directory holding them (its `latest-run`, else the newest run).

The history is in `run-<id>.wandb`, a LevelDB-style log of protobuf records. wandb >= 0.19
writes it from its Go core and ships no Python reader any more (the old
`wandb.sdk.internal.datastore` is gone: checked in wandb 0.31, which installs here), and
hand-parsing its protobuf is what we refuse to do. So the run is read from the console log
W&B keeps beside it, `files/output.log`: whatever the trainer printed (verl's console lines,
OpenRLHF's `Global step` lines, the dicts of a transformers Trainer), read with that format's
reader. W&B records the console through a terminal emulator, so tqdm frames overwritten by
`\\r` do not survive: a trl log from W&B usually needs --logging-steps.
"""

from __future__ import annotations

from pathlib import Path

from rlguard.orchestrator.logformats import openrlhf, trl_console, verl
from rlguard.orchestrator.logformats.base import HEAD_BYTES, Format, LogFormatError

CONSOLE_FORMATS = [verl.CONSOLE, openrlhf.FORMAT, trl_console.FORMAT]


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "files").is_dir() and (
        any(p.glob("run-*.wandb")) or (p / "files" / "output.log").is_file()
        or (p / "files" / "wandb-metadata.json").is_file())


def run_dir(path: Path) -> Path | None:
    """The run directory `path` stands for: itself, its latest-run, or its newest run-*."""
    if _is_run_dir(path):
        return path
    if not path.is_dir():
        return None
    if _is_run_dir(path / "latest-run"):
        return (path / "latest-run").resolve()
    runs = sorted((p for p in path.iterdir() if p.name.startswith(("run-", "offline-run-")) and _is_run_dir(p)),
                  key=lambda p: p.name.split("-", 2)[-1] if p.name.startswith("offline") else p.name[4:])
    if runs:
        return runs[-1]
    if _is_run_dir(path / "wandb" / "latest-run"):
        return (path / "wandb" / "latest-run").resolve()
    return None


def sniff(path: Path, head: bytes) -> bool:
    return path.is_dir() and run_dir(path) is not None


def open_source(path: Path, **options):
    run = run_dir(path)
    if run is None:
        raise LogFormatError(f"{path}: not a W&B run directory (expected run-*/files/output.log)")
    log = run / "files" / "output.log"
    if not log.is_file():
        raise LogFormatError(f"{run}: W&B run without files/output.log (console capture off?); its history "
                             f"({', '.join(p.name for p in run.glob('*.wandb')) or 'run-*.wandb'}) has no maintained "
                             f"Python reader in wandb >= 0.19")
    with open(log, "rb") as f:
        head = f.read(HEAD_BYTES)
    for fmt in CONSOLE_FORMATS:
        if fmt.sniff(log, head):
            return fmt.open(log, **options)
    raise LogFormatError(f"{log}: the W&B console log has no metric lines in a known format (tried "
                         f"{', '.join(f.name for f in CONSOLE_FORMATS)}); the history in the .wandb file has no "
                         f"maintained Python reader in wandb >= 0.19")


FORMAT = Format("wandb", "W&B run directory (offline too): its console log files/output.log", sniff, open_source)
