"""`python -m orchestrator.trainer_exit --status FILE --attempt N -- TRAINER ARGV...`

Runs a trainer that has no SDK (verl, OpenRLHF) and records how it ended in RUN/worker-status.json,
as the SDK does for its workers: a supervisor that was not running when the trainer finished
(`rlguard run --resume`) then knows it completed instead of relaunching it from the last healthy
checkpoint. It is the process-group leader the supervisor started; signals to the group reach the
trainer directly. On SIGTERM/SIGINT the wrapper waits for the trainer and reaps it before it
exits, so the group is gone when the supervisor sees the wrapper end (an orphaned trainer would
linger as a zombie until init reaps it), and it writes no status: the supervisor stopped it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.trainer_exit")
    p.add_argument("--status", required=True, help="the worker-status.json to write when the trainer ends")
    p.add_argument("--attempt", type=int, required=True)
    p.add_argument("trainer", nargs=argparse.REMAINDER, help="-- then the trainer's command line")
    args = p.parse_args(argv)
    cmd = args.trainer[1:] if args.trainer[:1] == ["--"] else args.trainer
    if not cmd:
        p.error("no trainer command after --")
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))  # the trainer got it too: wait for it
    rc = subprocess.call(cmd)
    if stopped:
        return 128 + stopped[0]
    status = {"status": "completed" if rc == 0 else "failed", "attempt": args.attempt, "pid": os.getpid(),
              "exit_code": rc, "time": time.time()}
    path = Path(args.status)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)
    return rc if rc >= 0 else 128 - rc  # a signal death reads as the shell would report it


if __name__ == "__main__":
    sys.exit(main())
