"""Convert public per-step training logs into corpus `metrics.jsonl` streams (docs/METRICS.md events).

Used to build bench/fixtures/corpus/public/<run>/metrics.jsonl from the raw file kept verbatim next
to it. One event per logged step; every record of the same step (train + eval, or one step split
over several records) is merged into that one event, later keys winning. Names are mapped with
`orchestrator.integrations.metric_names.map_metrics`. Where a raw file uses its own column names
(a hand-written GRPO loop, or a W&B export renamed by its author) a small table here (`--table`)
renames the keys whose meaning we checked in the source first; every other key passes through under
its own name.

Formats read (`--format`):

- `trainer_state`  transformers / trl `trainer_state.json`: its `log_history` list.
- `hf_console`     transformers console lines `{'loss': 0.1, 'reward': ...}` (Python dict repr, as
                   pasted in issues). They carry no step: the k-th line (from 1) is step
                   k * --logging-steps + --first-step - --logging-steps. Lines that hold
                   `eval_` keys (or `eval_loss`) merge into the step of the train line before them.
- `md_table`       a Markdown / notebook table `Step | Training Loss | reward | ...` (unsloth and
                   the transformers notebook progress table). `Training Loss` becomes `loss`.
- `verl_console`   verl console lines `step:12 - actor/entropy:0.3 - critic/score/mean:0.5 - ...`
                   (values may be wrapped in `np.float64(...)`).
- `csv`            a CSV with a `step` column (hand-written loops, W&B CSV exports).

Usage:
    python bench/corpus_convert.py RAW --format csv --trainer other --table rasbt -o metrics.jsonl
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import re
import sys
from pathlib import Path

from rlguard.orchestrator.integrations.metric_names import map_metrics

# rasbt/reasoning-from-scratch GRPO scripts (ch06/ch07): names checked in
# ch07/03_rlvr_grpo_scripts_advanced/7_5_plus_kl.py. `reward_avg` is the mean 0/1 correctness
# reward (plus the format reward in 7_6) of the step's rollouts; `avg_response_len` the mean
# generated tokens; `entropy_avg` the mean per-token entropy over answer tokens. `kl_loss` is
# kl_coeff * mean(summed logp - summed ref logp): a coefficient times a sequence-level KL, so it
# is kept under its own name, not called `kl`. `eval_acc` is MATH-500 accuracy in percent.
RASBT: dict[str, str] = {
    "reward_avg": "reward",
    "avg_response_len": "response_length",
    "entropy_avg": "entropy",
    "tokens_per_sec": "tokens_per_second",
    "eval_acc": "eval_accuracy_pct",
}

# shamanez/verl research/runs/EXP-27/comparison_metrics/*.csv: W&B histories of verl GRPO runs that
# the repo's pull_wandb.py wrote under short column names (its METRICS dict maps them from the verl
# keys; ef_r1_*.csv comes from an older variant that says `score`, `clip_ratio`, `rel_change`).
# They are renamed back to the verl keys, then mapped by metric_names.VERL.
SHAMANEZ_VERL: dict[str, str] = {
    "entropy": "actor/entropy",
    "len_mean": "response_length/mean",
    "len_max": "response_length/max",
    "len_min": "response_length/min",
    "len_clip_ratio": "response_length/clip_ratio",
    "clip_ratio": "response_length/clip_ratio",
    "score_mean": "critic/score/mean",
    "score": "critic/score/mean",
    "rewards_mean": "critic/rewards/mean",
    "pg_loss": "actor/pg_loss",
    "grad_norm": "actor/grad_norm",
    "pg_clipfrac": "actor/pg_clipfrac",
    "pg_clipfrac_lower": "actor/pg_clipfrac_lower",
    "ppo_kl": "actor/ppo_kl",
    "val_acc_mean1": "eval_accuracy",  # val-core/openai/gsm8k/acc/mean@1: GSM8K test accuracy, 0-1
}

# Keys of the transformers notebook table, as the table spells them.
MD_TABLE: dict[str, str] = {"Training Loss": "loss", "Validation Loss": "eval_loss"}

OTHER_TABLES: dict[str, dict[str, str]] = {"rasbt": RASBT, "shamanez": SHAMANEZ_VERL}

# trl <= 0.15 logged the mean completion length as `completion_length` (renamed to
# `completions/mean_length` in 0.16). metric_names.TRL lists only names current trl still logs (a
# test checks that against the installed trl), so the legacy spelling is translated here.
TRL_LEGACY: dict[str, str] = {"completion_length": "completions/mean_length"}

# Keys that are bookkeeping of the log line, not metrics of the step.
SKIP = frozenset({"step", "total_steps", "current_steps", "global_step/max_steps", "training/global_step",
                  "training/epoch", "epoch"})


def _num(text: str) -> float | None:
    """A logged value as float; None for an empty cell or anything that is not a number."""
    text = text.strip()
    match = re.fullmatch(r"np\.float\d*\((.*)\)", text)
    if match:
        text = match.group(1)
    if text in ("", "-", "None"):
        return None
    try:
        return float(text)  # float() reads 'nan' and 'inf' too: they are kept (METRICS.md)
    except ValueError:
        return None


def _map(record: dict, trainer: str, table: str | None) -> dict[str, float]:
    renames = OTHER_TABLES[table] if table else {}
    record = {renames.get(k, k): v for k, v in record.items() if k not in SKIP}
    if trainer == "trl":
        return map_metrics({TRL_LEGACY.get(k, k): v for k, v in record.items()}, trainer)
    if trainer in ("verl", "openrlhf"):
        return map_metrics(record, trainer)
    return map_metrics(record, "rlguard")


def read_trainer_state(path: Path) -> list[tuple[int, dict]]:
    state = json.loads(path.read_text())
    if "log_history" not in state:
        raise ValueError(f"{path}: no 'log_history' key; is this a transformers trainer_state.json?")
    return [(int(rec["step"]), rec) for rec in state["log_history"] if "step" in rec]


def read_hf_console(path: Path, logging_steps: int, first_step: int) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    k = 0
    for line in path.read_text().splitlines():
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        # Bare nan / inf are not Python literals: quote them so _num reads them back as floats.
        quoted = re.sub(r"(?<=[:\s])(-?)(nan|inf)\b", r"'\1\2'", line)
        rec = {k: _num(str(v)) for k, v in ast.literal_eval(quoted).items()}
        rec = {k: v for k, v in rec.items() if v is not None}
        is_eval = any(key.startswith("eval_") for key in rec)
        if not is_eval:
            k += 1
        if k == 0:
            continue  # an eval record before any train record has no step to join
        out.append((first_step + (k - 1) * logging_steps, rec))
    return out


def read_md_table(path: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    header: list[str] | None = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        if cells[0] == "Step":
            header = [MD_TABLE.get(c, c.replace(" / ", "/")) for c in cells]
            continue
        if header is None or not cells[0].isdigit():
            continue
        rec = {h: v for h, v in zip(header[1:], (_num(c) for c in cells[1:])) if v is not None}
        out.append((int(cells[0]), rec))
    return out


_VERL_STEP = re.compile(r"\bstep:(\d+) - ")


def read_verl_console(path: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    for line in path.read_text(errors="replace").splitlines():
        match = _VERL_STEP.search(line)
        if not match:
            continue
        rec: dict[str, float] = {}
        for part in line[match.end():].split(" - "):
            key, _, value = part.partition(":")
            number = _num(value)
            if key and number is not None:
                rec[key.strip()] = number
        out.append((int(match.group(1)), rec))
    return out


def read_csv(path: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rec = {k: v for k, v in ((k, _num(v)) for k, v in row.items()) if v is not None}
            out.append((int(float(row["step"])), rec))
    return out


def to_events(records: list[tuple[int, dict]], trainer: str, table: str | None = None) -> list[dict]:
    """Merge the records of each step (later keys win) and map names; steps in increasing order."""
    merged: dict[int, dict] = {}
    for step, rec in records:
        merged.setdefault(step, {}).update(_map(rec, trainer, table))
    events = []
    for step in sorted(merged):
        metrics = merged[step]
        if not metrics:
            continue  # e.g. transformers' end-of-training summary record
        events.append({"step": step, "metrics": metrics})
    return events


def write_jsonl(events: list[dict], out: Path) -> None:
    # json.dumps writes NaN / Infinity as the Python spellings METRICS.md allows.
    out.write_text("".join(json.dumps(e) + "\n" for e in events))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", type=Path, help="the raw log file, kept verbatim in the run folder")
    p.add_argument("--format", required=True,
                   choices=["trainer_state", "hf_console", "md_table", "verl_console", "csv"])
    p.add_argument("--trainer", required=True, choices=["trl", "verl", "openrlhf", "other"],
                   help="whose metric names the raw file uses")
    p.add_argument("--table", choices=sorted(OTHER_TABLES),
                   help="rename the raw file's own column names first (then --trainer's table applies)")
    p.add_argument("--logging-steps", type=int, default=1, help="hf_console: steps between lines")
    p.add_argument("--first-step", type=int, default=None, help="hf_console: step of the first line")
    p.add_argument("-o", "--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.format == "trainer_state":
        records = read_trainer_state(a.raw)
    elif a.format == "hf_console":
        first = a.first_step if a.first_step is not None else a.logging_steps
        records = read_hf_console(a.raw, a.logging_steps, first)
    elif a.format == "md_table":
        records = read_md_table(a.raw)
    elif a.format == "verl_console":
        records = read_verl_console(a.raw)
    else:
        records = read_csv(a.raw)
    events = to_events(records, a.trainer, a.table)
    if not events:
        print(f"{a.raw}: no logged steps found for --format {a.format}", file=sys.stderr)
        return 1
    write_jsonl(events, a.out)
    names = sorted({k for e in events for k in e["metrics"]})
    bad = sum(1 for e in events for v in e["metrics"].values() if not math.isfinite(v))
    print(f"{a.out}: {len(events)} events, steps {events[0]['step']}..{events[-1]['step']}, "
          f"{bad} non-finite values, metrics: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
