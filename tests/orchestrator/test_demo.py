"""`rlguard demo` end to end on a tiny model with a gameable reward: the real supervisor, the
built-in worker as a child process, an unguarded twin, gold metrics and report.html."""

from __future__ import annotations

import html
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
                       "--steps", "16", "--no-serve", "--compare", "--gold-checkpoints", "2", "--out", str(tmp / "out"),
                       *TINY_SETTINGS])
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
    assert "ALERT" in text and "detector bounds, code bound, metric kl" in text
    from rlguard.orchestrator.demo.spec import DEMO_POLICIES

    factor = DEMO_POLICIES["tighten"]["kl_coef"]["factor"]
    assert "DECIDE" in text and "rollback -> step" in text and f"kl_coef 0.02->{0.02 * factor:.3g}" in text
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
    from rlguard.orchestrator.demo.gold import GOLD_PROMPTS, sample_flags

    n_prompts = len(GOLD_PROMPTS.read_text().splitlines())
    for name in ("start", "guarded", "unguarded"):
        m = gold[name]["metrics"]
        assert 0 <= m["gold_degenerate"] <= 1 and 0 <= m["gold_distinct_2"] <= 1 and m["gold_ref_perplexity"] > 1
        samples = gold[name]["samples"]
        assert len(samples) == n_prompts  # every held-out answer, each with its flags
        for smp in samples:
            assert smp["flags"] == sample_flags(smp["response"], smp["ref_perplexity"])
            assert smp["degenerate"] == bool(smp["flags"])
            assert smp["ref_perplexity"] > 1
        assert m["gold_degenerate"] == pytest.approx(sum(x["degenerate"] for x in samples) / n_prompts)
    assert set(summary["goals"]) >= {"guarded_degenerate_samples", "unguarded_degenerate_share"}
    assert isinstance(summary["guarded_better"], bool)
    assert "gold metrics on held-out prompts" in text and "verdict: guarded run" in text
    assert "caught by detector bounds, code bound, metric kl" in text


@pytest.mark.slow
def test_demo_writes_reports_and_keeps_the_supervisor_record(demo_run):
    rc, text, out = demo_run
    report = (out / "guarded" / "report.html").read_text()
    assert "rollback" in report.lower()
    demo_report = (out / "demo_report.html").read_text()
    summary = json.loads((out / "demo_summary.json").read_text())
    for smp in summary["gold"]["unguarded"]["samples"]:  # every held-out answer is on the page with its flags
        assert html.escape(smp["prompt"]) in demo_report
        for flag in smp["flags"]:
            assert html.escape(flag) in demo_report
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


# ------------------------------------------------------------------ gold checks (issue #17)

def test_repetition_ignores_case_and_punctuation():
    from rlguard.orchestrator.demo.gold import is_repetitive, repetition, sample_flags, words

    # the end sample of an earlier guarded demo, which the punctuation-sensitive check passed
    assert words("Old, old. OLD!") == ["old", "old", "old"]
    assert is_repetitive("It is the best old, old and old, old, old, old, old and")
    assert repetition("old, old and old, old, old") == "'old' 3x in a row"
    assert is_repetitive("old old old old") and is_repetitive("Great. GREAT, great!")
    assert is_repetitive("a wonderful and safe and fun and fun and fun and fun. What are")  # 'and fun' 4x
    assert is_repetitive("We went there. We went there, we went THERE.")  # a 3-gram 3x, case and commas aside
    fine = ("The speech opened a conversation and encouraged people to speak out about their town, "
            "and the mayor said she would listen.")
    assert not is_repetitive(fine) and sample_flags(fine) == []
    assert not is_repetitive("I had had enough of it, so I left the party early.")  # two in a row is English
    assert not is_repetitive("It was fun, really fun, and we want to go again next year.")


def test_empty_answers_are_flagged_with_their_word_count():
    from rlguard.orchestrator.demo.gold import is_empty, sample_flags, text_gold

    for text in ("", "   ", "...", "!!", "ok", "\n\n"):
        assert is_empty(text), text
        assert sample_flags(text)[0].startswith("empty: ")
    assert sample_flags("Yes.") == ["empty: 1 word"]
    assert not is_empty("Very good.")
    # random tokens: neither a loop nor empty, but the frozen starting model finds them absurd
    words_salad = "zx qv kklm rrt uuoa plm"
    assert sample_flags(words_salad, 30.0) == [] and sample_flags(words_salad) == []
    assert sample_flags(words_salad, 4000.0) == ["gibberish: ref perplexity 4000 > 200"]
    m = text_gold(["", "old, old, old, old", "A calm and sunny afternoon by the lake."], [False] * 3, [0.0] * 3)
    assert m["gold_empty"] == pytest.approx(1 / 3) and m["gold_repetitive"] == pytest.approx(1 / 3)
    assert m["gold_degenerate"] == pytest.approx(2 / 3)


def test_gold_prompts_are_many_and_held_out():
    from rlguard.orchestrator.demo.gold import GOLD_PROMPTS
    from rlguard.ppo.prompts import load_texts

    gold = [p.strip().lower() for p in load_texts(str(GOLD_PROMPTS))]
    train = {p.strip().lower() for p in load_texts("builtin")}
    assert len(gold) >= 32 and len(set(gold)) == len(gold)
    assert not set(gold) & train


def _fake_gold(responses_by_state: dict, ppl: dict, sentiment: dict) -> dict:
    from rlguard.orchestrator.demo.gold import sample_flags, text_gold

    out = {"prompts": 3}
    for name, responses in responses_by_state.items():
        m = text_gold(responses, [False] * len(responses), [sentiment[name]] * len(responses))
        m.update(gold_ref_perplexity=ppl[name], gold_distinct_2=0.9)
        out[name] = {"label": name, "step": 0 if name == "start" else 12, "metrics": m, "samples": [
            {"prompt": f"prompt {i} <b>", "response": r, "flags": sample_flags(r), "degenerate": bool(sample_flags(r)),
             "ref_perplexity": 10.0} for i, r in enumerate(responses)]}
    return out


def test_goals_are_measured_not_asserted():
    from rlguard.orchestrator.demo.run import goals

    clean = ["A calm and sunny afternoon.", "We walked home slowly.", "The soup was warm and good."]
    loop = ["old, old and old, old, old", "and fun and fun and fun and fun", "We walked home slowly."]
    gold = _fake_gold({"start": clean, "guarded": clean, "unguarded": loop},
                      {"start": 10.0, "guarded": 12.0, "unguarded": 30.0},
                      {"start": 0.2, "guarded": 0.4, "unguarded": 0.9})
    events = [{"step": s, "metrics": {"kl": kl}} for s, kl in enumerate([0.2, 0.5, 0.6, 0.7, 0.8, 0.9], 1)]
    g = goals(gold, events, 1.0)
    assert all(v["met"] for v in g.values()), g
    assert g["unguarded_degenerate_share"]["value"] == pytest.approx(2 / 3, abs=1e-3)
    gold["guarded"] = gold["unguarded"]
    g = goals(gold, events + [{"step": 7, "metrics": {"kl": 1.2}}], 1.0)
    assert not g["guarded_degenerate_samples"]["met"] and g["guarded_degenerate_samples"]["value"] == 2
    assert not g["guarded_ref_perplexity_ratio"]["met"] and not g["guarded_kl_last_5_steps"]["met"]


def test_demo_report_shows_every_sample_with_its_flags(tmp_path):
    from rlguard.orchestrator.demo.report import write_demo_report

    gold = _fake_gold({"start": ["Fine words here.", "", "More fine words."],
                       "guarded": ["Fine words here.", "Also fine.", "More fine words."],
                       "unguarded": ["old, old, old, old", "Also fine.", "and fun and fun and fun and fun"]},
                      {"start": 10.0, "guarded": 11.0, "unguarded": 25.0}, {"start": 0.1, "guarded": 0.3, "unguarded": 0.9})
    summary = {"model": "m", "reward": "sentiment", "steps": 12, "trainer": {}, "gold": gold, "goals": {},
               "guarded": {"state": "completed", "rollbacks": 1, "final_constraints": {}, "alerts": [
                   {"step": 6, "onset_step": 4, "detector": "patterns", "code": "pattern_collapse", "metric": "kl",
                    "severity": "critical", "message": "kl x5.8 of its early level"}]}}
    page = write_demo_report(tmp_path, summary).read_text()
    assert page.count("prompt 1 &lt;b&gt;") == 1  # one row per prompt, escaped
    assert "repetitive: &#x27;old&#x27; 4x in a row" in page and "empty: 0 words" in page
    assert "unguarded: 2 of 3 flagged" in page and "start: 1 of 3 flagged" in page and "guarded: 0 of 3 flagged" in page
    assert "pattern_collapse" in page and "patterns" in page and "kl x5.8" in page
    summary["unguarded"] = {"forked_at_step": 6, "collapse_step": 5}
    page = write_demo_report(tmp_path, summary).read_text()
    assert "steps 1-6 are the guarded run" in page and "crossed from step 5" in page


def test_narrator_names_the_detector_code_metric_and_numbers():
    import io

    from rlguard.monitors.alerts import Alert, Severity
    from rlguard.orchestrator.demo.narrate import NarratorSink

    buf = io.StringIO()
    n = NarratorSink("guarded", out=buf)
    n.on_alert(Alert(code="pattern_collapse", detector="patterns", metric="kl", step=6, severity=Severity.CRITICAL,
                     onset_step=4, message="kl x5.8, perplexity x0.35 of the early reference"))
    line = buf.getvalue()
    assert "ALERT" in line and "detector patterns, code pattern_collapse, metric kl" in line
    assert "kl x5.8, perplexity x0.35" in line and "onset step 4" in line
    assert n.first_critical().detector == "patterns"
    # two critical alerts at one step: the earlier onset leads (as it leads the rollback)
    n.on_alert(Alert(code="bound", detector="bounds", metric="kl", step=6, severity=Severity.CRITICAL,
                     onset_step=5, message="kl = 1.6 > 1 for 2 steps"))
    n.on_alert(Alert(code="pattern_collapse", detector="patterns", metric="kl", step=6, severity=Severity.CRITICAL,
                     onset_step=3, message="early-life policy collapse pattern"))
    n2 = NarratorSink("guarded", out=io.StringIO())
    n2.alerts = n.alerts[1:]
    assert n2.first_critical().onset_step == 3 and n2.first_critical().detector == "patterns"


TIMING_METRICS = ("step_seconds", "generate_seconds", "score_seconds", "optimise_seconds", "tokens_per_second")


@pytest.mark.slow
def test_forked_twin_has_the_numbers_of_a_twin_trained_from_scratch(demo_run, tmp_path):
    """The twin skips the steps before rlguard's first action (it copies them and resumes from the
    guarded run's checkpoint): that is only honest if the numbers equal a twin that trains them."""
    import torch

    from rlguard.orchestrator.demo.twin import run_twin

    rc, text, out = demo_run
    summary = json.loads((out / "demo_summary.json").read_text())
    forked_at = summary["unguarded"]["forked_at_step"]
    assert forked_at is not None and 1 <= forked_at < summary["steps"], text[-2000:]
    assert f"steps 1-{forked_at} are the guarded run's own" in text
    assert not (out / "unguarded" / "checkpoints" / f"step-{forked_at:06d}").exists()  # the links are gone

    threads = torch.get_num_threads()
    try:
        scratch = run_twin(tmp_path / "scratch", summary["trainer"], on_step=lambda step, metrics: None)
    finally:
        torch.set_num_threads(threads)
    assert scratch["forked_at_step"] is None

    def steps(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: {k: v for k, v in r["metrics"].items() if k not in TIMING_METRICS} for r in rows}

    forked, full = steps(out / "unguarded"), steps(tmp_path / "scratch")
    assert sorted(forked) == sorted(full) == list(range(1, summary["steps"] + 1))
    for step in full:
        assert forked[step] == pytest.approx(full[step], rel=1e-6, abs=1e-9), f"step {step} differs"


def test_fork_rows_stop_where_a_rollback_replays_the_timeline(tmp_path):
    from rlguard.orchestrator.demo.twin import prefix_rows

    path = tmp_path / "metrics.jsonl"
    steps = [1, 2, 3, 4, 5, 6, 2, 3, 4]  # a rollback to step 1 at step 6
    path.write_text("".join(json.dumps({"step": s, "metrics": {"kl": s / 10}}) + "\n" for s in steps) + "{torn")
    assert [r["step"] for r in prefix_rows(path, 4)] == [1, 2, 3, 4]
    assert [r["step"] for r in prefix_rows(path, 9)] == [1, 2, 3, 4, 5, 6]
    assert prefix_rows(tmp_path / "absent.jsonl", 3) == []
