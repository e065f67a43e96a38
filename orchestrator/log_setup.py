"""Logging of the rlguard commands (`rlguard run`, `rlguard watch`): our lines, named.

A person reads a supervised run's log to see what rlguard decided. Third-party libraries
must not bury that: APScheduler logs two INFO lines every time a job runs (the liveness job
runs every second), uvicorn logs every request. They are kept to warnings and errors, and
each line names its logger, so an rlguard line can be told from a library's.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Libraries whose INFO lines are chatter in a run's log; their warnings and errors still show.
QUIET_LIBRARIES = ("apscheduler", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "urllib3",
                   "wandb", "matplotlib", "filelock", "asyncio")


def configure_logging(quiet: bool = False) -> None:
    """rlguard at INFO (WARNING with --quiet); the libraries above at WARNING."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=FORMAT)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
