"""`rlguard demo` end to end on a tiny model with a gameable reward: the real supervisor, the
built-in worker as a child process, an unguarded twin, gold metrics and report.html."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def repeat_reward(prompts, responses):
    """Pays for the share of the most frequent character: a dense signal that a random tiny
    policy games by collapsing to (nearly) empty or one-symbol answers."""
    out = []
    for r in responses:
        c = Counter(r.replace(" ", ""))
        out.append(c.most_common(1)[0][1] / sum(c.values()) if c else 0.0)
    return out


TINY_SETTINGS = ["--set", "lr=0.02", "--set", "kl_coef=0.02", "--set", "batch_size=4", "--set", "minibatch_size=2",
                 "--set", "max_new_tokens=16", "--set", "torch_threads=1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import os

    from rlguard.orchestrator.cli import main
    from rlguard.ppo.tiny import build_tiny_lm

    tmp = tmp_path_factory.mktemp("demo")
    model = build_tiny_lm(tmp / "tiny-lm")
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = str(REPO)  # the worker child imports this module's reward
    os.environ["OMP_NUM_THREADS"] = "1"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            rc = main(["demo", "--model", str(model), "--reward", "tests.orchestrator.test_demo:repeat_reward",
                       "--steps", "16", "--no-serve", "--compare", "--out", str(tmp / "out"), *TINY_SETTINGS])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, buf.getvalue(), tmp / "out"


@pytest.mark.slow
def test_demo_collapses_unguarded_and_recovers_guarded(demo_run):
    rc, text, out = demo_run
    summary = json.loads((out / "demo_summary.json").read_text())
    g, u = summary["guarded"], summary["unguarded"]
    # A random tiny policy at lr 0.02 is chaotic: after the first rollback it may finish (exit 0)
    # or collapse again until the rollback budget halts it (exit 3). Both are the guardrail working.
    assert (g["state"], rc) in (("completed", 0), ("halted", 3)), text[-3000:]
    # narrated as it happened: the alert, the decision with its numbers, the rollback's outcome
    assert "ALERT" in text and "critical bound/kl" in text
    assert "DECIDE" in text and "rollback -> step" in text and "kl_coef 0.02->0.08" in text
    assert "DONE     rollback: restored step" in text
    assert "the policy now writes" in text
    assert "[unguarded] COLLAPSE" in text

    assert g["rollbacks"] >= 1
    assert g["detection_delay_steps"] is not None and 0 <= g["detection_delay_steps"] <= 3
    assert g["final_constraints"]["kl_coef"] > 0.02 and g["final_constraints"]["lr"] < 0.02  # tightened
    assert g["first_critical_onset"] >= u["collapse_step"] - 1  # same seed: same onset, give or take a step
    assert u["collapse_step"] is not None
    gold = summary["gold"]
    assert set(gold) >= {"start", "guarded", "unguarded", "guarded_checkpoints"} and gold["guarded_checkpoints"]
    for name in ("start", "guarded", "unguarded"):
        m = gold[name]["metrics"]
        assert 0 <= m["gold_degenerate"] <= 1 and 0 <= m["gold_distinct_2"] <= 1 and m["gold_ref_perplexity"] > 1
        assert len(gold[name]["samples"]) == 4
    assert isinstance(summary["guarded_better"], bool)
    assert "gold metrics on held-out prompts" in text and "verdict: guarded run" in text


@pytest.mark.slow
def test_demo_writes_reports_and_keeps_the_supervisor_record(demo_run):
    rc, text, out = demo_run
    report = (out / "guarded" / "report.html").read_text()
    assert "rollback" in report.lower()
    assert (out / "unguarded" / "report.html").is_file()
    journal = [json.loads(x) for x in (out / "guarded" / "journal.jsonl").read_text().splitlines()]
    decided = [e for e in journal if e["kind"] == "decision" and e["phase"] == "decided"]
    assert decided and decided[0]["decision"]["action"] == "rollback"
    assert "live dashboard" not in text  # --no-serve


def test_demo_refuses_bad_settings_with_the_field_named(tmp_path, capsys):
    from rlguard.orchestrator.demo.run import main

    rc = main(["--model", "bundled", "--no-serve", "--out", str(tmp_path / "x"), "--set", "batch_size=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "minibatch_size" in err and "batch_size" in err
    rc = main(["--no-serve", "--out", str(tmp_path / "y"), "--set", "no_such_knob=1"])
    assert rc == 2 and "no_such_knob" in capsys.readouterr().err


def test_gold_text_metrics_flag_loops_and_empty_answers():
    from rlguard.orchestrator.demo.gold import is_empty, is_repetitive, pick_checkpoints, text_gold

    loop = "They understood your faith. They understood your faith. They understood your faith."
    fine = "The speech opened a conversation and encouraged people to speak out about their town."
    assert is_repetitive(loop) and not is_repetitive(fine)
    assert is_empty(" ") and is_empty("ok") and not is_empty(fine)
    m = text_gold([loop, fine, "", fine], [True, False, False, True], [0.5, 0.1, 0.0, -0.2])
    assert m["gold_degenerate"] == 0.5 and m["gold_repetitive"] == 0.25 and m["gold_empty"] == 0.25
    assert m["gold_truncated"] == 0.5 and m["gold_sentiment"] == pytest.approx(0.1)
    paths = [Path(f"step-{i:06d}") for i in range(1, 11)]
    picked = pick_checkpoints(paths, 4)
    assert len(picked) == 4 and picked[0] == paths[0] and picked[-1] == paths[-1]
    assert pick_checkpoints(paths, 0) == [] and pick_checkpoints(paths[:2], 4) == paths[:2]


def test_collapse_step_is_the_first_step_of_a_streak():
    from rlguard.orchestrator.demo.spec import collapse_step

    ev = [{"step": s, "metrics": {"kl": kl, "distinct_2": 0.9}} for s, kl in
          enumerate([0.1, 1.5, 0.2, 1.2, 1.3, 1.4], start=1)]
    assert collapse_step(ev) == 4  # step 2 alone is one noisy step, not a streak of 2
    assert collapse_step(ev[:4]) is None


def test_narrator_quotes_the_step_written_last_not_an_abandoned_later_one(tmp_path):
    from rlguard.orchestrator.demo.narrate import latest_sample

    path = tmp_path / "samples.jsonl"
    assert latest_sample(path) is None
    rows = [{"step": s, "prompt": "p", "response": f"old {s}.{i}", "reward": float(i)} for s in (1, 2, 3) for i in (0, 1)]
    rows += [{"step": 2, "prompt": "p", "response": "after the rollback", "reward": 0.5}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{half a line")
    assert latest_sample(path)["response"] == "after the rollback"
