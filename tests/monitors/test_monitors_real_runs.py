"""Real recorded runs: the collapse of a vanilla PPO run is caught within its first steps; bounded
and benign runs are not called critical (bench/fixtures/, ../shared/data/real-traces/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlguard.monitors.alerts import Severity
from rlguard.monitors.events import MetricEvent, event_from_dict
from rlguard.monitors.stack import MonitorStack

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "bench" / "fixtures"


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def _replay(events: list[MetricEvent], stack: MonitorStack | None = None):
    stack = stack or MonitorStack()
    alerts = []
    for ev in events:
        alerts.extend(stack.update(ev))
    return stack, alerts


def _renumbered(rows: list[dict], first_step: int) -> list[MetricEvent]:
    return [MetricEvent(step=first_step + i, metrics=r["metrics"]) for i, r in enumerate(rows)]


def _critical(alerts):
    return [a for a in alerts if a.severity is Severity.CRITICAL]


def _real_traces() -> list[Path]:
    env = os.environ.get("RLGUARD_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        d = cand / "data" / "real-traces"
        if d.is_dir():
            return sorted(p for p in d.glob("*.jsonl") if not p.name.endswith(".oracle.jsonl"))
    return []


def test_vanilla_collapse_is_critical_by_step_6_with_early_onset():
    _, alerts = _replay([event_from_dict(r) for r in _load("hacking_vanilla_collapse")])
    crit = _critical(alerts)
    assert crit, "the real vanilla-PPO collapse raised no critical alert"
    first = crit[0]
    assert first.code == "pattern_collapse" and first.detector == "patterns"
    assert first.step <= 6
    assert 2 <= first.onset_step <= 4
    # One incident, not a storm: the collapse stays one critical alert.
    assert len([a for a in crit if a.code == "pattern_collapse"]) == 1


def test_ppo_max_bounded_run_is_not_critical():
    _, alerts = _replay([event_from_dict(r) for r in _load("hacking_ppo_max")])
    assert _critical(alerts) == []


def test_vanilla_drift_into_incoherence_is_a_warning_not_healthy():
    # Perplexity 8.8 -> 37 and entropy 2.6 -> 4.3 while reward RISES: the policy is drifting into
    # incoherence but the reward model still likes it; a warning (gibberish proper needs reward falling).
    _, alerts = _replay([event_from_dict(r) for r in _load("hacking_vanilla")])
    assert alerts, "a run drifting into incoherence must raise at least a warning"
    assert _critical(alerts) == []
    assert any(a.code == "gibberish" and a.severity is Severity.WARNING for a in alerts)


@pytest.mark.parametrize(("fixture", "by_step"), [("hacking_diverge_vanilla", 12), ("hacking_diverge_ppo_max", 22)])
def test_divergence_into_random_tokens_is_critical_gibberish(fixture, by_step):
    # lr 3e-4 on SmolLM2 (bench/notes/ppo_bench.md, session 2): entropy climbs to ~9.5 nats,
    # perplexity to ~10^4, reward falls back to ~0. Both presets get there, ppo_max ~5 steps later.
    _, alerts = _replay([event_from_dict(r) for r in _load(fixture)])
    crit = _critical(alerts)
    assert crit, f"{fixture}: the divergence raised no critical alert"
    assert crit[0].code == "gibberish" and crit[0].step <= by_step
    assert crit[0].onset_step < crit[0].step


def test_divergence_the_reward_does_not_see_is_critical_gibberish():
    # ppo_max_paper at lr 2e-4 (bench/notes/ppo_bench.md): perplexity 16 -> 2,600 and entropy 3.4 -> 8 nats
    # by step 29 while the VADER reward stays flat (~0.1-0.3: random tokens read as neutral). Before
    # gibberish_extreme_ratio this run raised only warnings.
    events = _load("hacking_lr2e-4_ppo_max_paper_s0")
    _, alerts = _replay([event_from_dict(r) for r in events])
    crit = _critical(alerts)
    assert crit and crit[0].code == "gibberish" and crit[0].step <= 24
    assert "reward does not see it" in crit[0].message
    rewards = [e["metrics"]["reward"] for e in events]
    assert max(rewards[crit[0].step - 5:crit[0].step]) > min(rewards[:5])  # the reward did not fall


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_max_at_lr_2e4_stays_bounded_and_is_not_critical(seed):
    # ppo_max (the paper's list + advantage whitening) at the learning rate where vanilla and the paper's
    # list turn to random tokens: no divergence, and the monitors do not call it critical.
    events = _load(f"hacking_lr2e-4_ppo_max_s{seed}")
    assert len(events) == 40 and max(e["metrics"]["perplexity"] for e in events) < 40
    _, alerts = _replay([event_from_dict(r) for r in events])
    assert _critical(alerts) == []


@pytest.mark.parametrize("healthy_steps", [4, 10, 20])
def test_collapse_after_healthy_steps_is_detected_within_6_steps(healthy_steps):
    healthy = _load("hacking_ppo_max")[:healthy_steps]
    start = healthy_steps + 1
    events = _renumbered(healthy, 1) + _renumbered(_load("hacking_vanilla_collapse"), start)
    _, alerts = _replay(events)
    crit = _critical(alerts)
    assert crit and crit[0].code == "pattern_collapse"
    assert crit[0].step <= start + 5
    assert start <= crit[0].onset_step <= start + 3


def test_recurrence_after_rollback_is_judged_against_the_healthy_history():
    healthy, collapse = _load("hacking_ppo_max"), _load("hacking_vanilla_collapse")
    stack, alerts = _replay(_renumbered(healthy[:10], 1) + _renumbered(collapse[:8], 11))
    assert _critical(alerts)
    onset = stack.open_incidents()["patterns/kl"]
    assert 11 <= onset <= 14
    # Roll back to the checkpoint at step 10 and let the collapse recur: caught in the same ~5 steps,
    # because the values before the onset (steps 1-10) remain the reference.
    _, again = _replay(_renumbered(collapse, 11), stack)
    crit = _critical(again)
    assert crit and crit[0].code == "pattern_collapse" and crit[0].step <= 16
    # Without that history (a fresh start at step 11) the contaminated first values would be the reference.
    _, fresh = _replay(_renumbered(collapse, 11))
    assert _critical(fresh)[0].step >= crit[0].step


def test_healthy_continuation_after_rollback_stays_quiet():
    healthy, collapse = _load("hacking_ppo_max"), _load("hacking_vanilla_collapse")
    stack, _ = _replay(_renumbered(healthy[:10], 1) + _renumbered(collapse[:8], 11))
    _, after = _replay(_renumbered(healthy[10:], 11), stack)
    assert _critical(after) == []
    assert stack.open_incidents() == {}


def test_real_benign_traces_no_critical_and_few_warnings():
    traces = _real_traces()
    if not traces:
        pytest.skip("shared data not found: set RLGUARD_SHARED or put shared/ beside the repo (../shared)")
    assert len(traces) == 10
    warnings = 0
    for path in traces:
        _, alerts = _replay([event_from_dict(json.loads(line)) for line in path.read_text().splitlines() if line])
        assert _critical(alerts) == [], (path.name, [a.to_dict() for a in _critical(alerts)])
        warnings += len(alerts)
    # 1,200 benign steps: measured 0 warnings; allow a little slack for profile tweaks, not a storm.
    assert warnings <= 3


def test_state_round_trip_in_early_life_gives_identical_alerts():
    events = [event_from_dict(r) for r in _load("hacking_vanilla_collapse")]
    _, expected = _replay(events)
    first, _ = _replay(events[:4])
    restored = MonitorStack()
    restored.load_state_dict(json.loads(json.dumps(first.state_dict())))
    _, rest = _replay(events[4:], restored)
    assert [a.to_dict() for a in rest] == [a.to_dict() for a in expected]


def test_answers_shrinking_while_kl_climbs_is_critical_in_early_life():
    # ppo_max + advantage whitening at lr 3e-4 on SmolLM2 (bench/notes/ppo_bench.md, session 2):
    # response length 32 -> 16 by step 14, -> 5 by step 20, "awesome." for a whole answer, KL 0.3 -> 3.
    # Before the early empty_answers check the first critical alert came at step 27.
    _, alerts = _replay([event_from_dict(r) for r in _load("hacking_shrink_ppo_max_whitened")])
    crit = _critical(alerts)
    assert crit and crit[0].step <= 22 and crit[0].onset_step <= 16
    # The KL blow-up (0.3 -> 1.1 nats/token by step 16) is the first critical now; the shrinking answers
    # are named too, by step 22.
    short = [a for a in crit if a.metric == "response_length" and a.code in ("empty_answers", "length_collapse")]
    assert short and short[0].step <= 22
