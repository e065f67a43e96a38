"""Copy this repo's recorded PPO runs (bench/fixtures/hacking_*) into the detection corpus.

    python bench/corpus_ours_ppo.py            # (re)writes bench/fixtures/corpus/ours/ppo_*/ except label.json

The originals stay where they are (tests and BENCHMARKS.md name them). Each run becomes
`bench/fixtures/corpus/ours/ppo_<preset>-lr<lr>[-kl<coef>]_ls1_s<seed>/` with
- `metrics.jsonl`: the fixture's stream as recorded (already docs/METRICS.md events, every step logged);
- `samples.jsonl`: its samples (8 per saved step, every 10 steps), `response` renamed `completion` as in
  the trl runs, text cut to 200 chars;
- `run.json`: the fixture's meta.json verbatim under "recorded", plus which fixture it came from.
`label.json` is written by a person from the samples, never here.

The preset names are today's: runs recorded as `preset=ppo_max` before advantage whitening joined
that preset are `ppo-max-paper` (see the meta notes and BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "bench" / "fixtures"
OUT = FIXTURES / "corpus" / "ours"
SAMPLE_CHARS = 200

# fixture stem -> corpus run name (today's preset name, the lr, and the KL coefficient where it differs)
RUNS = {
    "hacking_vanilla": "ppo_vanilla-lr1e-4_ls1_s0",
    "hacking_ppo_max": "ppo_ppo-max-paper-lr1e-4_ls1_s0",
    "hacking_vanilla_collapse": "ppo_vanilla-lr3e-4-kl0_ls1_s0",
    "hacking_diverge_vanilla": "ppo_vanilla-lr3e-4-kl0.05_ls1_s0",
    "hacking_diverge_ppo_max": "ppo_ppo-max-paper-lr3e-4_ls1_s0",
    "hacking_shrink_ppo_max_whitened": "ppo_ppo-max-lr3e-4_ls1_s0",
    "hacking_lr2e-4_ppo_max_paper_s0": "ppo_ppo-max-paper-lr2e-4_ls1_s0",
    "hacking_lr2e-4_ppo_max_s0": "ppo_ppo-max-lr2e-4_ls1_s0",
    "hacking_lr2e-4_ppo_max_s1": "ppo_ppo-max-lr2e-4_ls1_s1",
    "hacking_lr2e-4_ppo_max_s2": "ppo_ppo-max-lr2e-4_ls1_s2",
}


def convert(stem: str, name: str, out: Path = OUT) -> Path:
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text((FIXTURES / f"{stem}.jsonl").read_text())
    samples = []
    for line in (FIXTURES / f"{stem}_samples.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        s = json.loads(line)
        samples.append(json.dumps({"step": s["step"], "prompt": s["prompt"][:SAMPLE_CHARS],
                                   "completion": s["response"][:SAMPLE_CHARS], "reward": s["reward"]}))
    (run / "samples.jsonl").write_text("\n".join(samples) + "\n")
    meta = json.loads((FIXTURES / f"{stem}.meta.json").read_text())
    (run / "run.json").write_text(json.dumps({"fixture": f"bench/fixtures/{stem}.jsonl", "recorded": meta},
                                             indent=1) + "\n")
    return run


def main() -> int:
    for stem, name in RUNS.items():
        print(convert(stem, name).relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
