"""Write bench/fixtures/corpus/<source>/INDEX.md: one row per run folder, from its own files.

    python bench/corpus_index.py            # ours (default)
    python bench/corpus_index.py --source public

Reads label.json (the verdict), run.json (settings, wall time; absent for public runs) and
metrics.jsonl (logged points, metric names). A folder without label.json (still
recording, or not yet judged) is named on stderr and left out of the index.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "bench" / "fixtures" / "corpus"
# The metrics a detector is most likely to want; the index says which of them each run has.
KEY_METRICS = ("reward", "kl", "entropy", "perplexity", "response_length", "truncated_fraction", "reward_std",
               "frac_reward_zero_std", "grad_norm", "distinct_2")


def _settings(run: dict) -> str:
    s = run.get("settings")
    if s:  # bench/corpus_trl.py
        model = "SmolLM2-135M" if s["model"] == "smollm2" else "tiny"
        return (f"{model}, {s['reward']} reward, lr {s['lr']:g}, beta {s['beta']:g}, {s['steps']} steps, "
                f"{s['batch']} completions ({s['num_generations']}/prompt), cap {s['max_completion_length']}")
    rec = run.get("recorded")
    if rec:  # bench/corpus_ours_ppo.py: the PPO trainer's overrides
        o = dict(x.split("=", 1) for x in rec.get("overrides", []))
        return (f"PPO (recorded as preset={o.get('preset')}), SmolLM2-135M, {o.get('reward')} reward, lr {o.get('lr')}, "
                f"kl_coef {o.get('kl_coef', 'preset default')}, {o.get('steps')} steps asked, batch {o.get('batch_size')}, "
                f"cap {o.get('max_new_tokens')}" + (", whitened advantages" if o.get("advantage_normalize") else ""))
    return ""


def row(folder: Path) -> list[str]:
    label = json.loads((folder / "label.json").read_text()) if (folder / "label.json").exists() else {}
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    events = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    names = set().union(*(e["metrics"] for e in events)) if events else set()
    present = [m for m in KEY_METRICS if m in names]
    steps = [e["step"] for e in events]
    wall = run.get("wall_seconds")
    if wall is None and len(events) > 1 and "time" in events[0]:
        wall = events[-1]["time"] - events[0]["time"]
    return [f"`{folder.name}`", label.get("trainer", "?"), run.get("preset", folder.name.split("_")[1]),
            _settings(run), label.get("label", "**unlabelled**"), label.get("class", ""),
            "" if label.get("onset_step") is None else str(label["onset_step"]),
            f"{len(events)} (steps {steps[0]}-{steps[-1]}, every {label.get('logging_steps', '?')})" if steps else "0",
            ", ".join(present), f"{wall / 60:.1f} min" if wall else ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="ours")
    args = p.parse_args(argv)
    root = CORPUS / args.source
    folders = sorted(f for f in root.iterdir() if f.is_dir() and (f / "metrics.jsonl").exists())
    # A run still recording or not yet judged has no label.json: named here, kept out of the index.
    for f in folders:
        if not (f / "label.json").exists():
            print(f"not indexed, no label.json yet: {f.name}", file=sys.stderr)
    folders = [f for f in folders if (f / "label.json").exists()]
    head = ["run", "trainer", "preset", "settings", "label", "class", "onset", "logged points",
            "metrics present", "wall time"]
    rows = [row(f) for f in folders]
    n_collapse = sum(r[4] == "collapse" for r in rows)
    lines = [f"# Corpus index: {args.source}", "",
             f"{len(rows)} runs: {n_collapse} collapse, {sum(r[4] == 'healthy' for r in rows)} healthy. "
             "Written by `bench/corpus_index.py` from each folder's label.json, run.json and metrics.jsonl; "
             "the verdict and how it was judged are in each label.json (`judged_by`).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = root / "NOTES.md"  # hand-written caveats about the judgements, kept next to the generated table
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    (root / "INDEX.md").write_text("\n".join(lines) + "\n")
    print(f"{root / 'INDEX.md'}: {len(rows)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
