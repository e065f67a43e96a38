"""The chaos suite, long mode, and the RELIABILITY.md table.

    python bench/chaos.py --kills 60 --supervisor-kills 10 --flood-events 100000
        runs the same experiments as tests/reliability/ with bigger counts and prints the
        figures (faults injected, survived, invariant violations = data lost); the figures
        are also merged into artifacts/reliability.json under "bench_*" keys.
    python bench/chaos.py --report [--update RELIABILITY.md]
        renders artifacts/reliability.json (written by `pytest tests/reliability` and by the
        long mode) as markdown tables; --update replaces the table between the
        <!-- chaos-table:begin --> and <!-- chaos-table:end --> markers of the file.

The suite's invariants (tests/reliability/chaos_lib.py check_run) are what "data lost"
counts: a checkpoint loaded although its checksums failed, an unreadable line in the
middle of metrics.jsonl or journal.jsonl, a step or data cursor that does not continue
from the loaded checkpoint, a decision without exactly one outcome, a command applied twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BEGIN, END = "<!-- chaos-table:begin -->", "<!-- chaos-table:end -->"


def _note(v: dict) -> str:
    """The row's note, then the test (or bench run) that measured it: each figure names its source."""
    source = f"`{v['test']}`" if v.get("test") else ""
    return "; ".join(x for x in (str(v.get("note", "")), source) if x)


def render(doc: dict) -> str:
    entries = doc.get("entries", {})
    faults = sorted((k, v) for k, v in entries.items() if v.get("kind") == "fault")
    inputs = sorted((k, v) for k, v in entries.items() if v.get("kind") == "input")
    out = ["| fault injected | injected | survived | data lost | notes |", "|---|---:|---:|---:|---|"]
    for _key, v in faults:
        out.append(f"| {v['name']} | {v.get('injected', 0)} | {v.get('survived', 0)} | {v.get('data_lost', 0)} | "
                   f"{_note(v)} |")
    tot = [sum(v.get(f, 0) for _k, v in faults) for f in ("injected", "survived", "data_lost")]
    out.append(f"| **total** | **{tot[0]}** | **{tot[1]}** | **{tot[2]}** | |")
    out += ["", "| bad input tried | tried | refused with a clear error | accepted (valid) | crashes / 5xx | notes |",
            "|---|---:|---:|---:|---:|---|"]
    for _key, v in inputs:
        out.append(f"| {v['name']} | {v.get('tried', 0)} | {v.get('refused', 0)} | {v.get('accepted', '')} | "
                   f"{v.get('crashes', 0)} | {_note(v)} |")
    stamps = sorted(v.get("recorded", "") for v in entries.values())
    if stamps:
        out += ["", f"Recorded {stamps[0]} .. {stamps[-1]} (artifacts/reliability.json)."]
    return "\n".join(out)


def report(update: str | None) -> int:
    from tests.reliability.chaos_lib import SUMMARY_PATH

    if not SUMMARY_PATH.exists():
        print(f"{SUMMARY_PATH} does not exist: run `pytest tests/reliability` first", file=sys.stderr)
        return 2
    table = render(json.loads(SUMMARY_PATH.read_text()))
    if not update:
        print(table)
        return 0
    path = Path(update)
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        print(f"{path}: no {BEGIN} ... {END} markers to replace", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"updated {path}")
    return 0


def long_mode(args) -> int:
    from tests.reliability.chaos_lib import record
    from tests.reliability.test_chaos_flood_hang import flood_rss
    from tests.reliability.test_chaos_supervisor_kill import supervisor_kills
    from tests.reliability.test_chaos_worker_kill import chaos_worker_kills

    os.environ.setdefault("RLGUARD_CHAOS_SEED", str(args.seed))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="rlguard-chaos-") as tmp:
        tmp = Path(tmp)
        if args.kills:
            t0 = time.monotonic()
            # about 4 steps of progress per kill cycle, plus the rollback to the last healthy checkpoint
            fig = chaos_worker_kills(tmp / "worker", kills=args.kills, mid_write_every=2, steps=max(60, args.kills * 5),
                                     seed=f"bench-{args.seed}")
            wall = time.monotonic() - t0
            print(f"worker kill -9: {fig['kills']} kills ({fig['mid_write']} mid-checkpoint-write), "
                  f"{fig['loads']} verified loads, {len(fig['findings'])} invariant violations, {wall:.0f} s")
            for f in fig["findings"]:
                print("   ", f)
            record("bench_worker_kill9", kind="fault", test="bench/chaos.py (long mode)", name=f"bench: kill -9 of the worker x{fig['kills']} "
                   "(half mid-write)", injected=fig["kills"], survived=fig["kills"] if not fig["findings"] else 0,
                   data_lost=len(fig["findings"]), note=f"{fig['loads']} verified loads; seed {args.seed}")
            failed += bool(fig["findings"])
        if args.supervisor_kills:
            t0 = time.monotonic()
            try:
                fig = supervisor_kills(tmp / "sup", kills=args.supervisor_kills,
                                       steps=100_000, seed=f"bench-{args.seed}")
            except AssertionError as e:
                fig = {"kills": args.supervisor_kills, "resumes": 0, "decisions": 0, "mid_decision": 0,
                       "findings": [f"run failed: {str(e).splitlines()[0]}"]}
            wall = time.monotonic() - t0
            print(f"supervisor kill -9: {fig['kills']} kills ({fig['mid_decision']} right after a decision), "
                  f"{fig['resumes']} resumes, {fig['decisions']} decisions, {len(fig['findings'])} invariant "
                  f"violations, {wall:.0f} s")
            for f in fig["findings"]:
                print("   ", f)
            record("bench_supervisor_kill9", kind="fault", test="bench/chaos.py (long mode)", name=f"bench: kill -9 of the supervisor x{fig['kills']}",
                   injected=fig["kills"], survived=fig["resumes"] if not fig["findings"] else 0,
                   data_lost=len(fig["findings"]), note=f"{fig['decisions']} decisions; seed {args.seed}")
            failed += bool(fig["findings"])
        if args.flood_events:
            per_post = 2000
            posts = max(1, args.flood_events // per_post)
            t0 = time.monotonic()
            fig = flood_rss(tmp / "flood", rounds=args.flood_rounds, posts=posts, per_post=per_post, names=4,
                            unique=False)
            wall = time.monotonic() - t0
            mib = [round(x / 1024, 1) for x in fig["rss_kb"]]
            print(f"flood: {args.flood_rounds} rounds x {posts * per_post} events; supervisor RSS MiB before and "
                  f"after each round {mib}; exit {fig['rc']}; {wall:.0f} s "
                  f"({fig['events'] / max(wall, 1e-9):.0f} events/s end to end)")
            record("bench_flood", kind="fault", test="bench/chaos.py (long mode)", name=f"bench: {args.flood_rounds} floods of {posts * per_post} events",
                   injected=fig["events"], survived=fig["events"] if fig["rc"] == 0 else 0, data_lost=0,
                   note=f"supervisor RSS MiB per round {mib}")
            failed += fig["rc"] != 0
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=0, help="kill -9s of the worker in one run")
    ap.add_argument("--supervisor-kills", type=int, default=0, help="kill -9s of the supervisor in one run")
    ap.add_argument("--flood-events", type=int, default=0, help="events per flood round")
    ap.add_argument("--flood-rounds", type=int, default=3, help="flood rounds (RSS read after each)")
    ap.add_argument("--seed", type=int, default=0, help="RLGUARD_CHAOS_SEED for the random kill moments")
    ap.add_argument("--report", action="store_true", help="render artifacts/reliability.json as markdown")
    ap.add_argument("--update", metavar="FILE", help="with --report: replace the table in FILE (RELIABILITY.md)")
    args = ap.parse_args(argv)
    if args.report:
        return report(args.update)
    if not (args.kills or args.supervisor_kills or args.flood_events):
        ap.error("nothing to do: give --kills/--supervisor-kills/--flood-events, or --report")
    return long_mode(args)


if __name__ == "__main__":
    sys.exit(main())
