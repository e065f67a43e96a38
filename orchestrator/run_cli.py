"""`rlguard run CONFIG.yaml [--out RUN_DIR]` and `rlguard run --resume RUN_DIR`.

Exit codes (orchestrator/state.py ExitCode): 0 completed, 2 bad usage/config, 3 halted
(policy or operator), 4 failed (restart budget spent), 5 detached (the supervisor was
signalled and left the worker training; `rlguard run --resume RUN_DIR` reattaches),
1 an rlguard bug.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from rlguard.orchestrator.log_setup import configure_logging
from rlguard.orchestrator.spec import (
    ConfigError,
    describe_supervisor_config,
    load_run_config,
    parse_run_config,
)
from rlguard.orchestrator.state import ExitCode


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard run", description="Start (or resume) a supervised RLHF run.")
    p.add_argument("config", nargs="?", help="run config YAML (sections trainer/monitors/policies/supervisor)")
    p.add_argument("--out", help="run directory (default: runs/<config name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="reattach to (or relaunch) the run in RUN_DIR after a "
                   "supervisor crash; its config.yaml is used")
    p.add_argument("--print-config", action="store_true", help="list the supervisor settings and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def run_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.print_config:
        print(describe_supervisor_config())
        return 0
    configure_logging(args.quiet)
    try:
        run_dir, config, raw = _prepare(args)
    except ConfigError as e:
        print(f"rlguard run: {e}", file=sys.stderr)
        return int(ExitCode.USAGE)
    from rlguard.orchestrator.default_sinks import default_sinks_and_routes
    from rlguard.orchestrator.journal import JournalError
    from rlguard.orchestrator.supervisor import Supervisor

    sinks, routes = default_sinks_and_routes(run_dir, config, resume=bool(args.resume))
    try:
        sup = Supervisor(run_dir, config, sinks=sinks, extra_routes=routes, resume=bool(args.resume))
    except (ConfigError, JournalError) as e:
        print(f"rlguard run: {e}", file=sys.stderr)
        return int(ExitCode.USAGE)

    def on_signal(signum, _frame):
        sup.detach(f"supervisor received {signal.Signals(signum).name}: worker left running")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"rlguard run: run directory {run_dir}", file=sys.stderr)
    result = sup.run()
    print(json.dumps(result.to_dict()), file=sys.stderr)
    if result.exit_code is ExitCode.DETACHED:
        print(f"rlguard run: detached; the worker keeps training. Reattach: rlguard run --resume {run_dir}",
              file=sys.stderr)
    return int(result.exit_code)


def _prepare(args) -> tuple[Path, object, dict]:
    from rlguard.orchestrator.components import validate_all
    from rlguard.orchestrator.run_files import RunFiles

    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there (is it a run directory?)")
        config, raw = load_run_config(cfg_path)
        validate_all(config)
        return run_dir, config, raw
    if not args.config:
        raise ConfigError("give a CONFIG.yaml (or --resume RUN_DIR); `rlguard run --help` shows the options")
    config, raw = load_run_config(args.config)
    validate_all(config)
    run_dir = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "journal.jsonl").exists():
        raise ConfigError(f"--out {run_dir} already holds a run (journal.jsonl): use --resume {run_dir}, "
                          "or another directory")
    RunFiles(run_dir).write_config(raw)
    return run_dir, config, raw


def run_config_from_dict(raw: dict):
    """For embedding: validate a config mapping the way `rlguard run` does."""
    from rlguard.orchestrator.components import validate_all

    config = parse_run_config(raw)
    validate_all(config)
    return config
