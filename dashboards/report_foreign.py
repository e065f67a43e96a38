"""`rlguard report LOG`: a report for a run known only by its trainer's own logs.

The log is read by orchestrator/logformats (any format `rlguard replay` reads); there is no
journal, so the alerts shown are the ones the default monitors raise when the events are
replayed (as `rlguard replay --no-policies` would print them), journaled in memory at their
step. Decisions are not simulated here: `rlguard replay` shows what the policies would do.
"""

from __future__ import annotations

from pathlib import Path

from rlguard.dashboards.report_run_dir import RunFiles


def foreign_run_files(path: Path) -> RunFiles:
    """RunFiles for a trainer's log file or directory; LogFormatError when it cannot be read."""
    from rlguard.monitors.config import MonitorConfig
    from rlguard.monitors.stack import MonitorStack
    from rlguard.orchestrator.logformats import detect, load_run

    fmt = detect(path).name
    events = load_run(path, fmt)
    files = RunFiles(run_dir=path if path.is_dir() else path.parent, events=events)
    stack = MonitorStack(MonitorConfig())
    for ev in events:
        for alert in stack.update(ev):
            files.journal.append({"kind": "alert", "step": alert.step, "alert": alert.to_dict()})
    files.problems.append(f"read {path.name} as {fmt}: {len(events)} events; alerts are the default monitors' "
                          f"on a replay (no journal: rlguard did not supervise this run)")
    return files
