"""The detection benchmark runs end to end on every family, source and logging interval, and
reports every section; --json / --compare round-trip. It checks the bench's plumbing and the
generators' labels, not how well the monitors detect (that is the bench's output)."""

from __future__ import annotations

import json

import numpy as np

from bench.corpus_runs import load_corpus
from bench.detection import main
from bench.scenarios import FAILURES, HEALTHY
from bench.scenarios_real import REAL_FAILURES, REAL_FAMILIES, SUBSETS, make_real
from bench.sparse_logging import subsample, with_records

SMALL = ["--seeds", "1", "--real-seeds", "1", "--healthy-seeds", "1", "--baseline-seeds", "1",
         "--throughput-seeds", "1", "--baselines", "threshold"]


def test_detection_benchmark_smoke(capsys, tmp_path):
    out_json = tmp_path / "before.json"
    # several records per step only in the second run, at interval 10: today's stack restarts its
    # windows on every repeated step, which makes those streams ~10x slower to score
    assert main([*SMALL, "--records-seeds", "0", "--json", str(out_json), "--corpus", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    for section in ("Goals (issue 13)", "Per source and logging interval", "per family and logging interval",
                    "Per metric subset", "Corpus runs", "Baselines", "Throughput"):
        assert section in out, section
    streams = json.loads(out_json.read_text())["streams"]
    seen = {(s["source"], s["family"], s["interval"]) for s in streams}
    for fam in FAILURES + HEALTHY:
        assert {("synthetic-old", fam, iv) for iv in (1, 5, 10)} <= seen, fam
    for fam in REAL_FAMILIES:
        assert {("synthetic-real", fam, iv) for iv in (1, 5, 10)} <= seen, fam
    assert {s["subset"] for s in streams if s["source"] == "synthetic-real"} == set(SUBSETS)
    assert len({s["id"] for s in streams}) == len(streams)  # ids are the --compare key

    # the same streams at interval 10, plus their several-records variants, compared with the first run
    assert main([*SMALL, "--intervals", "10", "--records-seeds", "1", "--compare", str(out_json), "--baselines", "",
                 "--corpus", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Several records per step" in out and "| split | 10 |" in out and "| train_eval | 10 |" in out
    assert "| newly detected | 0 |" in out and "| newly missed | 0 |" in out and "| new false alarms | 0 |" in out


def test_sparse_logging_keeps_optimizer_steps_and_averages_windows():
    sc = make_real("random_tokens", 0, "trl_beta0", interval=5)
    logged = subsample(sc, 5)
    assert [e["step"] for e in logged.events[:3]] == [5, 10, 15]
    want = np.mean([e["metrics"]["entropy"] for e in sc.events[5:10]])
    assert logged.events[1]["metrics"]["entropy"] == want
    assert 20 <= len(logged.events) <= 50 and logged.onset == sc.onset
    doubled = with_records(logged, "dup")
    assert [e["step"] for e in doubled.events[:4]] == [5, 5, 10, 10]
    split = with_records(logged, "split")
    assert set(split.events[0]["metrics"]) | set(split.events[1]["metrics"]) == set(logged.events[0]["metrics"]) | {"lr"}


def test_real_families_log_only_their_subset_and_label_an_onset():
    for fam, subsets in REAL_FAMILIES.items():
        for sub in subsets:
            sc = make_real(fam, 1, sub, interval=10)
            assert set(sc.events[0]["metrics"]) == set(SUBSETS[sub])
            assert (sc.onset is not None) == (fam in REAL_FAILURES)
            if sc.onset is not None:
                assert 1 <= sc.onset <= len(sc.events)


def test_corpus_loader_skips_incomplete_folders_with_a_reason(tmp_path):
    good = tmp_path / "ours" / "run_a"
    good.mkdir(parents=True)
    (good / "metrics.jsonl").write_text('{"step": 5, "metrics": {"reward": 1.0}}\n{"step": 10, "metrics": {"reward": 0.0}}\n')
    (good / "label.json").write_text(json.dumps({"label": "collapse", "class": "reward_collapse", "onset_step": 10,
                                                 "logging_steps": 5}))
    bad = tmp_path / "ours" / "run_b"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "metrics": {"reward": 1.0}}\n')
    (bad / "label.json").write_text(json.dumps({"label": "collapse"}))
    (tmp_path / "ours" / "run_c").mkdir()
    runs, skipped = load_corpus(tmp_path)
    assert [r.name for r in runs] == ["run_a"] and runs[0].onset == 10 and runs[0].interval == 5
    assert any("onset_step" in s for s in skipped) and any("run_c" in s for s in skipped)


def test_compare_names_newly_missed_and_new_false_alarms():
    from dataclasses import asdict

    from bench.detection_score import StreamResult, compare

    def res(id, onset, first, fa):
        return StreamResult(id, "synthetic-real", "f", "s", 5, "single", onset, 100, 20, 50, first_critical=first,
                            code="x" if first else None, delay_steps=(first - onset) if first else None,
                            delay_points=1 if first else None, false_critical=fa, false_codes=["bound@3"] * fa)

    old = [res("a", 50, 55, 0), res("b", 50, None, 0), res("c", None, None, 0)]
    new = [res("a", 50, None, 0), res("b", 50, 60, 0), res("c", None, None, 2)]
    out = "\n".join(compare({r.id: asdict(r) for r in old}, new))
    assert "| newly missed | 1 |" in out and "- a: was x" in out
    assert "| newly detected | 1 |" in out and "- b: x" in out
    assert "| new false alarms | 1 |" in out and "- c: 0 -> 2 (bound@3, bound@3)" in out
