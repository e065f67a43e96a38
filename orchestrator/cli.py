"""`rlguard` command line: one table from subcommand to the module that owns it.

Each entry is imported only when used, so `rlguard replay` never pays for importing torch.
Every handler takes the remaining argv and returns an exit code.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "train": ("rlguard.ppo.cli:train_main", "run PPO-max training without a supervisor"),
    "reward": ("rlguard.ppo.reward_training:main", "`rlguard reward train PREFS.jsonl`: train a reward model"),
    "monitors": ("rlguard.orchestrator.monitors_cli:main", "`rlguard monitors --print-config`: the detector settings"),
    "replay": ("rlguard.orchestrator.replay_cli:main", "feed a recorded run (metrics.jsonl or a trainer's own logs) through monitors and policies"),
    "run": ("rlguard.orchestrator.run_cli:run_main", "start (or --resume) a supervised run"),
    "status": ("rlguard.orchestrator.control_cli:status_main", "state, step, alerts, checkpoints of a run"),
    "pause": ("rlguard.orchestrator.control_cli:pause_main", "pause a run at the next step boundary"),
    "resume": ("rlguard.orchestrator.control_cli:resume_main", "resume a paused run"),
    "rollback": ("rlguard.orchestrator.control_cli:rollback_main", "roll a run back: --to STEP"),
    "relax": ("rlguard.orchestrator.control_cli:relax_main", "relax constraints toward the original values"),
    "halt": ("rlguard.orchestrator.control_cli:halt_main", "stop a run for good"),
    "approve": ("rlguard.orchestrator.control_cli:approve_main", "approve or deny a pending decision"),
    "watch": ("rlguard.orchestrator.watch:main", "supervise a run rlguard did not start, by its metrics file"),
    "report": ("rlguard.dashboards.report:main", "write report.html for a run directory"),
    "demo": ("rlguard.orchestrator.demo.run:main", "a guarded PPO run on SmolLM2-135M that collapses and recovers"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rlguard COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlguard: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"rlguard {name}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
