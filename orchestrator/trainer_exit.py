"""`python -m orchestrator.trainer_exit --status FILE --attempt N -- TRAINER ARGV...`

Runs a trainer that has no SDK (verl, OpenRLHF) and records how it ended in RUN/worker-status.json,
as the SDK does for its workers: a supervisor that was not running when the trainer finished
(`rlguard run --resume`) then knows it completed instead of relaunching it from the last healthy
checkpoint. It is the process-group leader the supervisor started; signals to the group reach the
trainer directly, and a wrapper killed with its group writes nothing (the supervisor did that).
"""

from __future__ import annotations

import argparse
import json
import os
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
    rc = subprocess.call(cmd)
    status = {"status": "completed" if rc == 0 else "failed", "attempt": args.attempt, "pid": os.getpid(),
              "exit_code": rc, "time": time.time()}
    path = Path(args.status)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)
    return rc if rc >= 0 else 128 - rc  # a signal death reads as the shell would report it


if __name__ == "__main__":
    sys.exit(main())
