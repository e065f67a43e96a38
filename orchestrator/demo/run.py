"""`rlguard demo`: a real guarded PPO run on a pretrained model that hacks its reward, and
rlguard catching it, rolling back, tightening and finishing healthy.

    rlguard demo [--out DIR] [--steps N] [--compare] [--no-kl-budget] [--no-serve] [--model bundled|PATH]

1. guarded: the real supervisor (orchestrator.supervisor.Supervisor, the built-in PPO worker
   as a child process, monitors, policies, journal, live dashboard) runs the demo spec
   (orchestrator/demo/spec.py). Every alert and decision is narrated as it happens: which
   detector, its alert code, the metric and the numbers. --no-kl-budget drops the hand-set
   guardrails (KL budget, distinct_2 floor): the statistical and pattern detectors alone.
2. --compare: the same config and seed, unsupervised (the `rlguard train` loop). Up to rlguard's
   first action it is the guarded run, so it continues from the guarded run's last checkpoint
   before that action (orchestrator/demo/twin.py); --twin-from-scratch trains every step.
3. gold metrics (orchestrator/demo/gold.py) on 48 held-out prompts: the starting model, each
   run's end state (and --gold-checkpoints K of the guarded run's checkpoints); every answer
   with its flags, and the issue #17 goals measured.
4. OUT/demo_report.html (every held-out answer with its flags), report.html (dashboards.report)
   per run and OUT/demo_summary.json with every figure.

Exit code: 0 when the guarded run completed, otherwise the supervisor's exit code
(3 halted, 4 failed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from rlguard.orchestrator.demo.narrate import NarratorSink, StepNarrator
from rlguard.orchestrator.demo.spec import (
    DEMO_MONITORS,
    DEMO_TRAINER,
    KL_BUDGET,
    collapse_step,
    demo_run_config,
    detectors_only_monitors,
    train_config,
)
from rlguard.orchestrator.demo.twin import ForkKeeper, run_twin, step_of


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard demo", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", help="output directory (default runs/demo-<time>): guarded/, unguarded/, "
                   "demo_summary.json")
    p.add_argument("--steps", type=int, help=f"PPO steps (default {DEMO_TRAINER['steps']})")
    p.add_argument("--compare", action="store_true", help="also run the same seed without rlguard and compare")
    p.add_argument("--no-serve", action="store_true", help="no live dashboard (the control API still runs on "
                   "127.0.0.1 for the worker)")
    p.add_argument("--model", default="bundled", help="'bundled' (SmolLM2-135M-Instruct, converted once and "
                   "cached in ~/.cache/rlguard) or a local HF model directory")
    p.add_argument("--reward", help="training reward (default: sentiment); 'module:function' for a custom one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a trainer setting of the demo spec, e.g. --set lr=1e-4 (repeatable)")
    p.add_argument("--gold-checkpoints", type=int, default=0, metavar="K",
                   help="gold metrics also for at most K of the guarded run's earlier checkpoints (default 0: the "
                        "start and the end states only; each costs one pass over the 48 held-out prompts)")
    p.add_argument("--no-kl-budget", action="store_true",
                   help="drop the demo's hand-set guardrails (KL budget, distinct_2 floor): only the default "
                        "statistical and pattern detectors judge the run (bench/demo_detectors.py)")
    p.add_argument("--twin-from-scratch", action="store_true",
                   help="with --compare: train every step of the unguarded twin, instead of continuing from the "
                        "guarded run's last checkpoint before rlguard's first action (the same numbers, slower)")
    p.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")
    return p


def _say(line: str = "") -> None:
    print(line, flush=True)


# ================================================================ the guarded run

def run_guarded(run_dir: Path, raw: dict, *, serve: bool, narrator: NarratorSink, extra_sinks=()) -> dict:
    """Run the spec under the real supervisor; returns the RunResult as a dict + url/wall time."""
    from rlguard.orchestrator.run_cli import run_config_from_dict
    from rlguard.orchestrator.supervisor import Supervisor

    config = run_config_from_dict(raw)
    sinks, routes = [narrator, *extra_sinks], []
    if serve:
        from rlguard.orchestrator.default_sinks import default_sinks_and_routes

        extra, routes = default_sinks_and_routes(run_dir, config)
        sinks += extra
    # serve_http stays on either way: the worker reports through the control API.
    sup = Supervisor(run_dir, config, sinks=sinks, extra_routes=routes)
    out: dict = {}
    t0 = time.monotonic()
    thread = threading.Thread(target=lambda: out.update(result=sup.run()), name="demo-supervisor", daemon=True)
    thread.start()
    while thread.is_alive() and not sup.url:
        thread.join(0.05)
    if serve and sup.url:
        _say(f"[guarded] live dashboard: {sup.url}/   (Prometheus: {sup.url}/metrics)")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        _say("[guarded] interrupted: stopping the run")
        sup.detach("demo interrupted (Ctrl-C)")
        thread.join(30)
        if sup.live.worker is not None:
            sup.live.worker.stop(5.0)
        raise
    result = out["result"].to_dict() if "result" in out else {"state": "failed", "exit_code": 1,
                                                                      "reason": "the supervisor crashed (traceback above)"}
    result.update(url=sup.url, wall_s=time.monotonic() - t0)
    return result


def read_events(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def final_timeline(events: list[dict]) -> list[dict]:
    """The events that led to the end state: after a rollback, the replaced steps are dropped."""
    by_step: dict[int, dict] = {}
    for e in events:
        for s in [s for s in by_step if s >= e["step"]]:
            del by_step[s]
        by_step[e["step"]] = e
    return [by_step[s] for s in sorted(by_step)]


# ================================================================ gold metrics

def gold_metrics(trainer: dict, guarded_dir: Path, unguarded_dir: Path | None, limit: int) -> dict:
    from rlguard.orchestrator.demo.gold import GoldEvaluator, pick_checkpoints
    from rlguard.ppo.checkpoint_files import list_checkpoints

    cfg = train_config(trainer)
    cache = None
    if trainer.get("model") == "bundled":  # a known, fixed model: its start result is cached beside it
        from rlguard.ppo.bundled import cache_root

        cache = cache_root() / "gold"
    ev = GoldEvaluator(cfg, cache_dir=cache)
    out: dict = {"start": ev.evaluate(None, "start").to_dict(), "guarded_checkpoints": [],
                 "prompts": len(ev.prompts)}
    _say(f"[gold] {'start':<22} " + _gold_line(out["start"]["metrics"]))
    ckpts = list_checkpoints(guarded_dir / "checkpoints")
    for path in pick_checkpoints(ckpts[:-1], limit):
        r = ev.evaluate(path, f"guarded step {path.name[5:].lstrip('0') or '0'}")
        out["guarded_checkpoints"].append(r.to_dict())
        _say(f"[gold] {r.label:<22} " + _gold_line(r.metrics))
    if ckpts:
        out["guarded"] = ev.evaluate(ckpts[-1], "guarded end").to_dict()
        _say(f"[gold] {'guarded end':<22} " + _gold_line(out["guarded"]["metrics"]))
    if unguarded_dir is not None:
        uckpts = list_checkpoints(unguarded_dir / "checkpoints")
        if uckpts:
            out["unguarded"] = ev.evaluate(uckpts[-1], "unguarded end").to_dict()
            _say(f"[gold] {'unguarded end':<22} " + _gold_line(out["unguarded"]["metrics"]))
    return out


GOLD_ROWS = (("gold_ref_perplexity", "ref perplexity (frozen model)", "{:.2f}"),
             ("gold_distinct_2", "distinct_2", "{:.3f}"),
             ("gold_degenerate", "degenerate share", "{:.2f}"),
             ("gold_repetitive", "  repetitive", "{:.2f}"),
             ("gold_empty", "  empty", "{:.2f}"),
             ("gold_gibberish", "  gibberish", "{:.2f}"),
             ("gold_truncated", "truncated share (not counted)", "{:.2f}"),
             ("gold_sentiment", "sentiment (VADER)", "{:+.3f}"))


def _gold_line(m: dict) -> str:
    return " | ".join(f"{k.removeprefix('gold_')} {fmt.format(m[k])}" for k, _, fmt in GOLD_ROWS
                      if not k.startswith(("gold_rep", "gold_emp", "gold_gib")))


def goals(gold: dict, final_timeline_events: list[dict], kl_budget: float) -> dict:
    """The demo's goals (issue #17), measured: each {"value", "target", "met"}; absent when not measured."""
    out: dict = {}
    start, g, u = gold.get("start"), gold.get("guarded"), gold.get("unguarded")
    if g:
        gm = g["metrics"]
        n_deg = sum(1 for smp in g["samples"] if smp["degenerate"])
        out["guarded_degenerate_samples"] = {"value": n_deg, "target": "0", "met": n_deg == 0}
        if start:
            sm = start["metrics"]
            ratio = gm["gold_ref_perplexity"] / sm["gold_ref_perplexity"]
            out["guarded_ref_perplexity_ratio"] = {"value": round(ratio, 3), "target": "<= 1.3", "met": ratio <= 1.3}
            gain = gm["gold_sentiment"] - sm["gold_sentiment"]
            out["guarded_sentiment_gain"] = {"value": round(gain, 3), "target": ">= 0.15", "met": gain >= 0.15}
    last = [e["metrics"].get("kl") for e in final_timeline_events[-5:]]
    if last and all(v is not None for v in last):
        out["guarded_kl_last_5_steps"] = {"value": [round(float(v), 3) for v in last],
                                          "target": f"all < {kl_budget}", "met": max(last) < kl_budget}
    if u:
        share = u["metrics"]["gold_degenerate"]
        out["unguarded_degenerate_share"] = {"value": round(share, 3), "target": ">= 0.3", "met": share >= 0.3}
    return out


def guarded_is_better(gold: dict) -> bool | None:
    """The guarded end state beats the unguarded one on the gold metrics that expose a collapse."""
    if "guarded" not in gold or "unguarded" not in gold:
        return None
    g, u = gold["guarded"]["metrics"], gold["unguarded"]["metrics"]
    return g["gold_distinct_2"] >= u["gold_distinct_2"] and g["gold_degenerate"] <= u["gold_degenerate"]


# ================================================================ summary

def build_summary(args, raw: dict, guarded: dict, narrator: NarratorSink, guarded_dir: Path,
                  unguarded: dict | None, unguarded_dir: Path | None, gold: dict, wall: dict) -> dict:
    # The twin's "collapse" is judged by the demo's guardrails even when the guarded run ran
    # without them (--no-kl-budget): the same yardstick for every run.
    rules = DEMO_MONITORS["bounds"]["rules"]
    g_events = read_events(guarded_dir)
    g_final = final_timeline(g_events)
    first = narrator.first_critical()
    summary: dict = {
        "model": raw["trainer"]["model"], "reward": raw["trainer"]["reward"], "steps": raw["trainer"]["steps"],
        "trainer": raw["trainer"],
        "guarded": {
            "state": guarded.get("state"), "reason": guarded.get("reason"), "exit_code": guarded.get("exit_code"),
            "rollbacks": narrator.rollbacks_done(),
            "alerts": [a.__dict__ for a in narrator.alerts],
            "decisions": narrator.decisions,
            "first_critical_step": first.step if first else None,
            "first_critical": first.__dict__ if first else None,
            "first_critical_onset": first.onset_step if first else None,
            "detection_delay_steps": (first.step - first.onset_step) if first else None,
            "collapsed_at_end": collapse_step(g_final[-4:], rules) is not None,
            "final_metrics": g_final[-1]["metrics"] if g_final else {},
            "final_constraints": {k: g_final[-1]["metrics"].get(k) for k in ("kl_coef", "lr", "clip_range")}
            if g_final else {},
            "wall_s": guarded.get("wall_s"),
        },
        "gold": gold,
        "goals": goals(gold, g_final, KL_BUDGET),
        "kl_budget_rule": not getattr(args, "no_kl_budget", False),
        "wall_s": wall,
    }
    if unguarded is not None and unguarded_dir is not None:
        u_events = read_events(unguarded_dir)
        summary["unguarded"] = {
            "state": unguarded["state"], "collapse_step": collapse_step(u_events, rules),
            "collapsed_at_end": collapse_step(u_events[-4:], rules) is not None,
            "final_metrics": u_events[-1]["metrics"] if u_events else {}, "wall_s": unguarded["wall_s"],
            "forked_at_step": unguarded.get("forked_at_step"),
        }
        summary["guarded_better"] = guarded_is_better(gold)
        summary["goals"] = goals(gold, g_final, KL_BUDGET)
    return summary


def print_summary(s: dict) -> None:
    g = s["guarded"]
    _say("\n================ rlguard demo: summary ================")
    _say(f"model {s['model']}, reward {s['reward']}, {s['steps']} steps, preset {s['trainer'].get('preset')}, "
         f"lr {s['trainer'].get('lr')}, kl_coef {s['trainer'].get('kl_coef')}")
    _say(f"guarded:   {g['state']} ({g['reason']}); rollbacks {g['rollbacks']}; "
         + (f"first critical alert at step {g['first_critical_step']} (onset {g['first_critical_onset']}, "
            f"detection delay {g['detection_delay_steps']} steps)" if g["first_critical_step"] else "no critical alert")
         + f"; final constraints {g['final_constraints']}; collapsed at end: {g['collapsed_at_end']}")
    if g.get("first_critical"):
        fc = g["first_critical"]
        _say(f"           caught by detector {fc['detector']}, code {fc['code']}, metric {fc['metric']}: {fc['message']}")
    if "unguarded" in s:
        u = s["unguarded"]
        _say(f"unguarded: collapse (guardrail bounds crossed) at step {u['collapse_step']}; "
             f"collapsed at end: {u['collapsed_at_end']}")
    gold = s["gold"]
    cols = [("start", gold.get("start")), ("guarded", gold.get("guarded")), ("unguarded", gold.get("unguarded"))]
    cols = [(n, c) for n, c in cols if c]
    _say("\ngold metrics on held-out prompts (never optimised):")
    _say(f"  {'':<32}" + "".join(f"{n:>12}" for n, _ in cols))
    for key, label, fmt in GOLD_ROWS:
        _say(f"  {label:<32}" + "".join(f"{fmt.format(c['metrics'].get(key, float('nan'))):>12}" for _, c in cols))
    for name, c in cols:
        flagged = [smp for smp in c["samples"] if smp.get("flags")]
        _say(f"\nheld-out answers, {name} (step {c['step']}): {len(flagged)} of {len(c['samples'])} flagged")
        for smp in flagged[:6]:
            _say(f"  {smp['prompt']!r} -> {smp['response'][:120]!r}  [{'; '.join(smp['flags'])}]")
        for smp in [smp for smp in c["samples"] if not smp.get("flags")][:2 if flagged else 3]:
            _say(f"  {smp['prompt']!r} -> {smp['response'][:120]!r}  [clean]")
    if s.get("guarded_better") is not None:
        _say(f"\nverdict: guarded run {'beats' if s['guarded_better'] else 'does NOT beat'} the unguarded twin "
             f"on distinct_2 and degenerate share; guarded collapsed at end: {g['collapsed_at_end']}")
    if s.get("goals"):
        _say("\ngoals (issue #17), measured:")
        for name, goal in s["goals"].items():
            _say(f"  {'met    ' if goal['met'] else 'NOT met'}  {name}: {goal['value']} (target {goal['target']})")
    w = s["wall_s"]
    _say("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in w.items()))


# ================================================================ main

def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from rlguard.orchestrator.spec import ConfigError
    from rlguard.ppo.config import ConfigError as TrainConfigError

    out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    guarded_dir, unguarded_dir = out / "guarded", out / "unguarded"
    for d in (guarded_dir, unguarded_dir):
        if (d / "metrics.jsonl").exists():
            print(f"rlguard demo: {d} already holds a run; pass another --out", file=sys.stderr)
            return 2
    try:
        raw = demo_run_config(model=args.model, steps=args.steps, reward=args.reward, overrides=args.overrides,
                              supervisor={"port": args.port},
                              monitors=detectors_only_monitors() if args.no_kl_budget else None)
        from rlguard.orchestrator.run_cli import run_config_from_dict

        run_config_from_dict(raw)
    except (ConfigError, TrainConfigError, ValueError) as e:
        print(f"rlguard demo: {e}", file=sys.stderr)
        return 2
    wall: dict[str, float] = {}
    t_all = time.monotonic()
    if args.model == "bundled":
        from rlguard.ppo.bundled import bundled_model_dir

        t0 = time.monotonic()
        bundled_model_dir()  # convert once (cached): the guarded worker, twin and gold evaluator share it
        wall["model_conversion"] = time.monotonic() - t0
    t = raw["trainer"]
    guardrails = ", ".join(f"{r['metric']} {'>' + str(r['upper']) if r.get('upper') is not None else '<' + str(r['lower'])}"
                           for r in raw["monitors"]["bounds"]["rules"] if r["severity"] == "critical")
    _say(f"rlguard demo: {t['model']} + reward {t['reward']}, preset {t['preset']}, lr {t['lr']}, "
         f"kl_coef {t['kl_coef']}, {t['steps']} steps; critical alerts from the statistical and pattern "
         f"detectors{' and the guardrails ' + guardrails if guardrails else ' alone (no KL budget)'}"
         f" -> rollback + tighten. Output: {out}")
    narrator = NarratorSink("guarded", samples_path=guarded_dir / "samples.jsonl")
    forks = ForkKeeper(guarded_dir / "checkpoints", unguarded_dir / "checkpoints")
    try:
        guarded = run_guarded(guarded_dir, raw, serve=not args.no_serve, narrator=narrator,
                              extra_sinks=[forks] if args.compare and not args.twin_from_scratch else [])
        wall["guarded"] = guarded["wall_s"]
        unguarded = None
        if args.compare:
            _say(f"\n[unguarded] the same config and seed without rlguard -> {unguarded_dir}")
            if forks.kept is not None:
                at = step_of(forks.kept)
                shared = f"steps 1-{at} are the guarded run's own" if at else "it starts from the guarded run's step 0"
                _say(f"[unguarded] {shared} (the same seed and config give the same numbers until rlguard's "
                     f"first action, at step {forks.decision_step}); the twin trains on from that checkpoint "
                     "with nobody watching")
            elif forks.error:
                _say(f"[unguarded] could not keep the guarded checkpoint ({forks.error}): training from scratch")
            watcher = StepNarrator("unguarded", rules=DEMO_MONITORS["bounds"]["rules"])
            unguarded = run_twin(unguarded_dir, t, on_step=watcher, fork=forks.kept, guarded_dir=guarded_dir)
            wall["unguarded"] = unguarded["wall_s"]
    except KeyboardInterrupt:
        print(f"rlguard demo: interrupted; what ran is in {out} (`rlguard report {guarded_dir}` still works)",
              file=sys.stderr)
        return 130
    _say("\n[gold] held-out evaluation of the start, the guarded checkpoints and the end states ...")
    t0 = time.monotonic()
    gold = gold_metrics(t, guarded_dir, unguarded_dir if args.compare else None, args.gold_checkpoints)
    wall["gold"] = time.monotonic() - t0
    from rlguard.dashboards.report import write_report

    t0 = time.monotonic()
    reports = [write_report(guarded_dir)]
    if args.compare:
        reports.append(write_report(unguarded_dir))
    wall["reports"] = time.monotonic() - t0
    wall["total"] = time.monotonic() - t_all
    summary = build_summary(args, raw, guarded, narrator, guarded_dir, unguarded,
                            unguarded_dir if args.compare else None, gold, wall)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from rlguard.orchestrator.demo.report import write_demo_report

    reports.insert(0, write_demo_report(out, summary))
    print_summary(summary)
    _say("reports: " + ", ".join(str(r) for r in reports) + f"; figures: {out / 'demo_summary.json'}")
    return int(guarded.get("exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
