"""The regime detector and the stack's step merging on the shapes of real trainers' logs.

Streams here log the way trl and verl do: every 10 optimizer steps (step numbers 10, 20, ...),
20-40 points in a run, without perplexity and often without KL. Collapses start at the 4th logged
point; the goal (issue 13) is a critical alert within 2 logged points of the onset. The hard
negatives are the healthy shapes of real runs that must stay non-critical.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rlguard.monitors.events import MetricEvent
from rlguard.monitors.stack import MonitorStack
from rlguard.orchestrator.event_reader import EventReader

FIXTURES = Path(__file__).resolve().parents[2] / "bench" / "fixtures"
EVERY = 10  # logging_steps


def _stream(n_points: int, seed: int = 0, **columns) -> list[MetricEvent]:
    """Events at steps 10, 20, ...; each column is a function point_index -> value (None: not logged)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_points):
        metrics = {}
        for name, fn in columns.items():
            v = fn(i, rng)
            if v is not None:
                metrics[name] = float(v)
        out.append(MetricEvent(step=(i + 1) * EVERY, metrics=metrics))
    return out


def _critical(events) -> list:
    stack = MonitorStack()
    return [a for ev in events for a in stack.update(ev) if a.severity == "critical"]


def _noisy(level, rel=0.05):
    return lambda i, rng: level(i) * (1 + rel * rng.standard_normal())


ONSET = 3  # point index (0-based) of the collapse: the 4th logged point


def _after(i):
    return i >= ONSET


def _assert_caught(crit, code, max_points_late=2, also=()):
    """The first critical alert is `code` (or one of `also`, other names for the same failure)
    within `max_points_late` logged points of the onset; `code` itself is raised too."""
    assert crit, "no critical alert"
    first = crit[0]
    assert first.code in (code, *also) and code in [a.code for a in crit], [a.code for a in crit]
    onset_step = (ONSET + 1) * EVERY
    assert onset_step <= first.step <= onset_step + max_points_late * EVERY, first
    assert first.onset_step <= first.step


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_tokens_without_kl_or_perplexity_is_critical_within_two_points(seed):
    # trl GRPO at beta 0: entropy 0.3 -> 6 nats, reward to ~0, length to the cap, clipped share to 1.
    events = _stream(
        30, seed,
        reward=_noisy(lambda i: 0.05 if _after(i) else 0.6),
        entropy=_noisy(lambda i: 6.0 if _after(i) else 0.3),
        response_length=_noisy(lambda i: 256 if _after(i) else 120, 0.02),
        truncated_fraction=lambda i, rng: 1.0 if _after(i) else 0.05,
        grad_norm=_noisy(lambda i: 1.0, 0.3),
    )
    _assert_caught(_critical(events), "random_tokens", also=("length_runaway",))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answer_length_collapse_without_kl_is_critical(seed):
    # Length 60 -> 3 tokens between two logged points, entropy collapsing, reward flat.
    events = _stream(
        30, seed,
        reward=_noisy(lambda i: 0.5),
        entropy=_noisy(lambda i: 0.05 if _after(i) else 0.8),
        response_length=_noisy(lambda i: 3 if _after(i) else 60, 0.05),
    )
    _assert_caught(_critical(events), "length_collapse")


def test_pinned_at_the_cap_while_reward_stalls_is_critical():
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.4, 0.03),
        entropy=_noisy(lambda i: 0.5),
        response_length=_noisy(lambda i: 512 if _after(i) else 200, 0.01),
        truncated_fraction=lambda i, rng: 1.0 if _after(i) else 0.1,
    )
    # the share must hold for pinned_points (3) points: caught at the onset's 3rd point
    # length 200 -> 512 with reward flat is also a length runaway
    _assert_caught(_critical(events), "pinned_at_cap", max_points_late=2, also=("length_runaway",))


def test_reward_collapse_when_only_reward_is_logged():
    events = _stream(30, 0, reward=_noisy(lambda i: 0.02 if _after(i) else 0.7, 0.05))
    _assert_caught(_critical(events), "reward_collapse")


def test_kl_to_the_reference_exploding_is_critical_while_reward_stays_flat():
    # The paper's signal: KL 0.002 -> 3 nats per token, reward flat.
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.5),
        kl=lambda i, rng: 0.002 * math.exp(0.6 * max(0, i - ONSET + 1)) * (1 + 0.05 * rng.standard_normal()),
        entropy=_noisy(lambda i: 1.0),
    )
    crit = _critical(events)
    assert crit and crit[0].code == "kl_explosion", crit
    kl_at = {e.step: e.metrics["kl"] for e in events}
    assert kl_at[crit[0].step] < 3.0  # before it reached the paper's 3 nats


def test_random_tokens_judged_on_perplexity_when_entropy_is_not_logged():
    events = _stream(
        30, 0,
        reward=_noisy(lambda i: 0.05 if _after(i) else 0.6),
        perplexity=_noisy(lambda i: 900.0 if _after(i) else 12.0),
        response_length=_noisy(lambda i: 256 if _after(i) else 120, 0.02),
    )
    _assert_caught(_critical(events), "random_tokens", also=("length_runaway",))


def test_repetition_to_the_cap_without_kl_is_critical():
    events = _stream(
        30, 0,
        reward=_noisy(lambda i: 0.7 if _after(i) else 0.5),
        entropy=_noisy(lambda i: 0.3 if _after(i) else 1.5),
        distinct_2=lambda i, rng: (0.35 if _after(i) else 0.9) + 0.01 * rng.standard_normal(),
        response_length=_noisy(lambda i: 256 if _after(i) else 100, 0.02),
    )
    crit = _critical(events)
    assert crit and crit[0].code == "repetition" and crit[0].step <= (ONSET + 3) * EVERY, crit


def test_reasoning_run_growing_its_answers_while_entropy_falls_is_not_repetition():
    n = 50
    events = _stream(
        n, 0,
        reward=_noisy(lambda i: 0.2 + 0.5 * i / n),
        entropy=_noisy(lambda i: 1.0 * math.exp(-2.0 * i / n)),
        distinct_2=lambda i, rng: 0.85 + 0.01 * rng.standard_normal(),
        response_length=_noisy(lambda i: 300 + 600 * i / n, 0.03),  # x3 longer answers
    )
    assert _critical(events) == []


# -- hard negatives: healthy shapes of real runs ------------------------------------------------------

def test_healthy_reasoning_run_entropy_falling_kl_rising_smoothly_is_not_critical():
    n = 50
    events = _stream(
        n, 0,
        reward=_noisy(lambda i: 0.2 + 0.5 * i / n),
        entropy=_noisy(lambda i: 0.8 * math.exp(-2.0 * i / n)),  # x7 lower by the end
        kl=_noisy(lambda i: 0.3 * i / n + 1e-4, 0.1),
        response_length=_noisy(lambda i: 600 - 200 * i / n, 0.03),  # drifts down a third
        truncated_fraction=lambda i, rng: 0.05,
    )
    assert _critical(events) == []


def test_lora_kl_growing_several_fold_from_zero_while_reward_climbs_is_not_critical():
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.1 + 0.02 * i),
        kl=_noisy(lambda i: 0.0005 * (1 + i), 0.1),  # 0.0005 -> 0.02: x40
        entropy=_noisy(lambda i: 0.6),
        response_length=_noisy(lambda i: 150),
    )
    assert _critical(events) == []


def test_answers_at_the_cap_from_the_start_while_reward_climbs_is_not_critical():
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.1 + 0.02 * i),
        entropy=_noisy(lambda i: 0.4),
        response_length=_noisy(lambda i: 1024, 0.005),
        truncated_fraction=lambda i, rng: min(1.0, 0.9 + 0.1 * rng.random()),
    )
    assert _critical(events) == []


def test_single_point_kl_and_grad_norm_spike_that_recovers_is_not_critical():
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.5),
        kl=lambda i, rng: 2.5 if i == 12 else 0.02 * (1 + 0.1 * rng.standard_normal()),
        grad_norm=lambda i, rng: 80.0 if i == 12 else 1.0 + 0.1 * rng.standard_normal(),
        entropy=_noisy(lambda i: 0.5),
    )
    assert _critical(events) == []


def test_binary_reward_of_a_small_batch_dipping_to_zero_is_not_a_reward_collapse():
    # A weak model's accuracy reward with 16 samples: 0.125 -> 0 for three points, then back; entropy and
    # length steady (the real benign complex_seed2 trace has this shape).
    rewards = [0.0625, 0.125, 0.125, 0.0625, 0.0, 0.0, 0.0, 0.1875, 0.125, 0.125] * 3
    events = _stream(30, 0, reward=lambda i, rng: rewards[i], entropy=_noisy(lambda i: 1.2, 0.2),
                     response_length=_noisy(lambda i: 100, 0.2))
    assert _critical(events) == []


# -- several records per step ----------------------------------------------------------------------

def _fixture(name: str) -> list[MetricEvent]:
    return list(EventReader(FIXTURES / f"{name}.jsonl"))


def _alert_keys(events) -> list[tuple]:
    stack = MonitorStack()
    return [(a.step, a.code, a.severity.value, a.onset_step) for ev in events for a in stack.update(ev)]


@pytest.mark.parametrize("name", ["hacking_vanilla_collapse", "hacking_shrink_ppo_max_whitened"])
def test_a_stream_whose_every_line_appears_twice_gives_the_same_alerts(name):
    events = _fixture(name)
    original = _alert_keys(events)
    assert any(k[2] == "critical" for k in original)
    doubled = [e for ev in events for e in (ev, MetricEvent(step=ev.step, metrics=dict(ev.metrics)))]
    assert _alert_keys(doubled) == original


def test_train_and_eval_records_of_one_step_give_the_alerts_of_the_merged_step():
    events = _fixture("hacking_vanilla_collapse")
    original = _alert_keys(events)
    split = []
    for ev in events:
        names = sorted(ev.metrics)
        first, second = names[::2], names[1::2]  # one step's metrics over two records
        split.append(MetricEvent(step=ev.step, metrics={k: ev.metrics[k] for k in first}))
        split.append(MetricEvent(step=ev.step, metrics={k: ev.metrics[k] for k in second}))
    got = _alert_keys(split)
    crit = [k for k in original if k[2] == "critical"]
    assert [k for k in got if k[2] == "critical"][:1] == crit[:1]


def test_the_same_step_in_a_new_attempt_is_a_rollback_not_more_of_the_step():
    stack = MonitorStack()
    for s in range(1, 6):
        stack.update(MetricEvent(step=s, metrics={"reward": 1.0}, attempt=0))
    assert stack.segments == 0
    stack.update(MetricEvent(step=5, metrics={"reward": 1.0}, attempt=0))
    assert stack.segments == 0
    stack.update(MetricEvent(step=5, metrics={"reward": 1.0}, attempt=1))
    assert stack.segments == 1
    reader = EventReader([ev.to_json() for ev in (MetricEvent(step=3, metrics={}, attempt=0),
                                                   MetricEvent(step=3, metrics={}, attempt=0),
                                                   MetricEvent(step=3, metrics={}, attempt=1),
                                                   MetricEvent(step=2, metrics={}, attempt=1))])
    list(reader)
    assert reader.segments == 3  # the reader counts segments by the same rule as the stack


# -- coverage said out loud --------------------------------------------------------------------------

def test_coverage_of_trl_grpo_at_beta_zero_says_kl_classes_are_off():
    from rlguard.monitors.coverage import coverage, summary

    trl_beta0 = ["reward", "reward_std", "entropy", "response_length", "truncated_fraction", "grad_norm"]
    cov = {c.name: c for c in coverage(trl_beta0)}
    assert cov["random_tokens"].armed and cov["length_collapse"].armed and cov["pinned_at_cap"].armed
    assert not cov["kl_runaway"].armed and cov["kl_runaway"].missing == ("kl or kl_seq",)
    assert not cov["pattern_collapse"].armed
    line = summary(trl_beta0)
    assert "kl or kl_seq not logged: pattern_collapse, kl_explosion" not in line  # kl_explosion needs kl itself
    assert "kl or kl_seq not logged: pattern_collapse, kl_runaway, negative_kl off" in line
    assert "kl not logged: kl_explosion off" in line
    full = {c.name: c for c in coverage(trl_beta0 + ["kl", "perplexity"])}
    assert {n for n, c in full.items() if not c.armed} == {"eval_long_tail", "repetition"}


def test_kl_and_kl_seq_are_one_witness_for_the_classes_they_strengthen():
    from rlguard.monitors.coverage import coverage

    cov = {c.name: c for c in coverage(["response_length", "kl"])}
    assert cov["length_collapse"].weaker_without == ("entropy",)  # not kl_seq: kl is logged
    assert {c.name: c for c in coverage(["response_length"])}["length_collapse"].weaker_without == (
        "entropy", "kl", "kl_seq")


def test_metrics_doc_coverage_table_is_generated_from_classes():
    from pathlib import Path

    from rlguard.monitors.coverage import CLASSES, doc_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "METRICS.md").read_text()
    assert "## Coverage: which failure classes each metric arms" in doc
    assert doc_table() in doc, "docs/METRICS.md's coverage table is stale: paste monitors.coverage.doc_table()"
    assert all(f"| `{c.name}` |" in doc_table() for c in CLASSES)
    assert "| `kl_runaway` | KL a large multiple" in doc_table() and "(`kl` or `kl_seq`) and" in doc_table()


def test_answers_running_away_in_length_while_reward_is_flat_is_critical():
    # verl with a 16k cap: lengths 170 -> 600 in a few points, reward flat, entropy falling (loops). Judged
    # against a reference that predates the last 8 points: here the 16th logged point.
    late = 15
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.7, 0.03),
        entropy=_noisy(lambda i: 0.15 if i >= late else 0.5),
        response_length=_noisy(lambda i: 600 if i >= late else 170, 0.03),
        truncated_fraction=lambda i, rng: 0.0,
    )
    crit = _critical(events)
    assert crit and crit[0].code == "length_runaway", crit
    assert (late + 1) * EVERY <= crit[0].step <= (late + 3) * EVERY


def test_reasoning_answers_lengthening_while_reward_climbs_is_not_a_runaway():
    events = _stream(
        40, 0,
        reward=_noisy(lambda i: 0.2 + 0.6 * (1 - math.exp(-i / 8))),
        entropy=_noisy(lambda i: 0.6),
        response_length=_noisy(lambda i: 200 * (1 + 2.0 * (1 - math.exp(-i / 8))), 0.03),  # x3 over the run
        truncated_fraction=lambda i, rng: 0.0,
    )
    assert _critical(events) == []
