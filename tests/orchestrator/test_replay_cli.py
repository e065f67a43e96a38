"""`rlguard replay` on METRICS.md JSONL: JSON lines in step order, policies' decisions, exit codes, the real benign traces."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from rlguard.orchestrator.replay_cli import main
from tests.monitors.monitor_streams import collapse, events, healthy_stream

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    env = os.environ.get("RLGUARD_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if cand.is_dir():
            return cand
    return None


def _write(path: Path, evs, extra_lines=()) -> Path:
    with path.open("w") as f:
        for i, ev in enumerate(evs):
            if i == 50:
                for line in extra_lines:
                    f.write(line + "\n")
            f.write(ev.to_json() + "\n")
    return path


@pytest.fixture
def collapse_trace(tmp_path) -> Path:
    rows = collapse(healthy_stream(260, seed=31, extra=("entropy",)), onset=200)
    for r in rows:
        r.update(kl_coef=0.05, clip_range=0.2, lr=1e-6)
    return _write(tmp_path / "metrics.jsonl", events(rows), extra_lines=["{broken", '{"step": "x"}'])


def test_json_lines_in_step_order_with_alerts_and_decisions(collapse_trace, capsys):
    assert main([str(collapse_trace), "--format", "json"]) == 0
    cap = capsys.readouterr()
    recs = [json.loads(line) for line in cap.out.splitlines()]
    assert recs[0]["type"] == "coverage"  # what the trace's metrics arm comes first
    recs = recs[1:]
    steps = [r["step"] for r in recs]
    assert steps == sorted(steps)
    crit = [r for r in recs if r["type"] == "alert" and r["severity"] == "critical"]
    assert crit[0]["code"] == "pattern_collapse" and crit[0]["metric"] in ("kl", "response_length")
    assert 200 <= crit[0]["step"] <= 210 and crit[0]["onset_step"] <= crit[0]["step"]
    assert set(crit[0]) >= {"step", "type", "detector", "metric", "severity", "onset_step", "message"}
    assert "2 bad lines" in cap.err and "line 51" in cap.err
    if importlib.util.find_spec("rlguard.policies.replay") is not None:
        actions = [r for r in recs if r["type"] == "action"]
        assert actions, "policies are importable: decisions must be printed"
        assert {"action", "target_step", "reason", "params"} <= set(actions[0])
        assert any(a["action"] in ("rollback", "halt", "tighten") and a["step"] >= crit[0]["step"] for a in actions)


def test_text_format_run_directory_and_no_policies(collapse_trace, capsys):
    assert main([str(collapse_trace.parent), "--no-policies"]) == 0
    out = capsys.readouterr().out
    assert "CRITICAL pattern_collapse" in out and "ACTION" not in out


def test_unreadable_inputs_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    trace = _write(tmp_path / "t.jsonl", events(healthy_stream(5)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitors:\n  nope: 1\n")
    assert main([str(trace), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nope: unknown key" in err and "monitors" in err


def test_monitors_only_config_file_is_accepted(tmp_path, capsys):
    trace = _write(tmp_path / "t.jsonl", events(healthy_stream(60)))
    cfg = tmp_path / "m.yaml"
    cfg.write_text("bounds:\n  rules:\n    - {metric: kl, upper: 0.001, patience_steps: 2, severity: critical}\n")
    assert main([str(trace), "--config", str(cfg), "--format", "json", "--no-policies"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()][1:]  # [0]: coverage
    assert recs[0]["code"] == "bound" and recs[0]["step"] == 2


def test_real_benign_traces_raise_no_critical_alert(capsys):
    sd = shared_dir()
    if sd is None or not (sd / "data" / "real-traces").is_dir():
        pytest.skip("shared data not found: set RLGUARD_SHARED or put shared/ beside the repo (../shared)")
    traces = sorted((sd / "data" / "real-traces").glob("*[0-9].jsonl"))
    assert len(traces) == 10
    for trace in traces:
        assert main([str(trace), "--format", "json", "--no-policies"]) == 0
        recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        crit = [r for r in recs if r["type"] == "alert" and r["severity"] == "critical"]
        assert crit == [], f"{trace.name}: {crit}"


# -- coverage: what the trace could not have caught is said before the alerts ----------------------

def _trl_beta0_trace(tmp_path) -> Path:
    """trl GRPO at beta 0: no KL, no perplexity; kl is null (not measured), which is not logging it."""
    rows = [{"reward": 0.5 + 0.01 * i, "entropy": 0.4, "response_length": 80.0, "truncated_fraction": 0.1,
             "kl": None} for i in range(30)]
    return _write(tmp_path / "metrics.jsonl", events(rows))


def test_text_output_starts_with_the_coverage_block(tmp_path, capsys):
    assert main([str(_trl_beta0_trace(tmp_path)), "--no-policies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from rlguard.monitors.coverage import CLASSES, coverage

    names = ["reward", "entropy", "response_length", "truncated_fraction"]
    armed = sum(c.armed for c in coverage(names))
    assert lines[0].startswith(f"coverage: {armed}/{len(CLASSES)} failure classes armed (non_finite, stall, random_tokens")
    assert "coverage: NOT WATCHED: kl or kl_seq not logged: pattern_collapse, kl_runaway, negative_kl off" in lines
    assert "coverage: NOT WATCHED: kl not logged: kl_explosion off" in lines
    assert all(x.startswith("coverage: ") for x in lines[:4])


def test_json_coverage_record_comes_first_and_names_the_missing_metrics(tmp_path, capsys):
    assert main([str(_trl_beta0_trace(tmp_path)), "--format", "json", "--no-policies"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in recs].count("coverage") == 1 and recs[0]["type"] == "coverage"
    cov = recs[0]
    assert cov["metrics"] == ["entropy", "response_length", "reward", "truncated_fraction"]
    by_class = {c["class"]: c for c in cov["classes"]}
    assert by_class["kl_runaway"] == {"class": "kl_runaway", "what": by_class["kl_runaway"]["what"], "armed": False,
                                      "missing": ["kl or kl_seq"], "weaker_without": []}
    assert by_class["random_tokens"]["armed"] and "perplexity" in by_class["random_tokens"]["weaker_without"]
    assert "kl_explosion" in cov["off"] and "length_collapse" in cov["armed"]


def test_a_metric_logged_only_late_in_the_trace_still_counts(tmp_path, capsys):
    rows = [{"reward": 1.0} for _ in range(20)] + [{"reward": 1.0, "kl": 0.01}]
    assert main([str(_write(tmp_path / "m.jsonl", events(rows))), "--format", "json", "--no-policies"]) == 0
    cov = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {"kl_explosion", "kl_runaway", "negative_kl"} <= set(cov["armed"])


def test_checkpoint_start_lets_a_first_update_collapse_roll_back(tmp_path, capsys):
    """The shape of the demo's seed 1: the first update breaks the policy (kl 0 -> 1.4 -> 2.2)."""
    trace = tmp_path / "metrics.jsonl"
    kls = [0.0, 1.42, 2.18, 2.04, 2.13, 2.21]
    trace.write_text("".join(json.dumps({"step": i + 1, "metrics": {"kl": kl, "reward": 0.4 + 0.1 * i,
                                                                    "kl_coef": 0.005, "clip_range": 0.2, "lr": 5e-4}})
                             + "\n" for i, kl in enumerate(kls)))
    config = tmp_path / "run.yaml"
    config.write_text("monitors:\n  bounds:\n    rules:\n      - {metric: kl, upper: 1.0, patience_steps: 2, "
                      "severity: critical}\n")

    def first_action(*extra):
        assert main([str(trace), "--config", str(config), "--format", "json", "--checkpoint-every", "4", *extra]) == 0
        recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return next(r for r in recs if r["type"] == "action")

    assert first_action()["action"] == "halt"  # nothing written before the onset (step 2)
    rolled = first_action("--checkpoint-start")
    assert (rolled["action"], rolled["target_step"]) == ("rollback", 0)
