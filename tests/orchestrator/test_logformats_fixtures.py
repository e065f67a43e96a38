"""Real public trainer logs (tests/fixtures/logs, sources and licences in its README): read by
content, and replayed exactly like the same file converted by hand to METRICS.md."""

from __future__ import annotations

import json
from pathlib import Path

from rlguard.orchestrator.logformats import detect, load_run
from tests.orchestrator.logformat_helpers import replay_output

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


def _hand(tmp_path: Path, by_step: dict[int, dict]) -> Path:
    out = tmp_path / "hand.jsonl"
    out.write_text("".join(json.dumps({"step": s, "metrics": m}) + "\n" for s, m in sorted(by_step.items())))
    return out


def _same_replay(native: Path, hand: Path) -> None:
    rc, got, err = replay_output(native)
    assert rc == 0, err
    rc, want, err2 = replay_output(hand)
    assert rc == 0, err2
    assert got == want


def test_public_trainer_state_json(tmp_path):
    f = FIXTURES / "ab_verifier_cls_trainer_state.json"
    assert detect(f).name == "trainer-state"
    by_step: dict[int, dict] = {}
    names = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr", "eval_loss": "eval_loss",
             "eval_runtime": "eval_runtime", "eval_samples_per_second": "eval_samples_per_second",
             "eval_steps_per_second": "eval_steps_per_second"}
    for entry in json.loads(f.read_text())["log_history"]:  # by hand: train + eval of a step in one event
        kept = {names[k]: v for k, v in entry.items() if k in names}
        if kept:
            by_step.setdefault(entry["step"], {}).update(kept)
    events = load_run(f)
    assert [e.step for e in events] == sorted(by_step) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 63]
    assert [e.metrics for e in events] == [by_step[s] for s in sorted(by_step)]
    _same_replay(f, _hand(tmp_path, by_step))


def test_public_verl_console_lines(tmp_path):
    f = FIXTURES / "verl_quickstart_console.log"
    assert detect(f).name == "verl-console"
    names = {"actor/reward_kl_penalty": "kl", "critic/score/mean": "reward", "response_length/mean": "response_length",
             "actor/pg_loss": "policy_loss", "actor/ppo_kl": "approx_kl", "critic/vf_loss": "value_loss",
             "actor/reward_kl_penalty_coeff": "kl_coef", "actor/pg_clipfrac": "clipfrac", "actor/grad_norm": "grad_norm"}
    by_step = {}
    for line in f.read_text().splitlines():  # by hand: split on " - ", rename the keys we know
        step, *pairs = line.split(" - ")
        kv = dict(p.rsplit(":", 1) for p in pairs)  # a repeated key: the last one, as a dict keeps it
        by_step[int(step.split(":")[1])] = {names.get(k, k): float(v) for k, v in kv.items()}
    events = load_run(f)
    assert [e.step for e in events] == [0, 1]
    assert [e.metrics for e in events] == [by_step[0], by_step[1]]
    assert events[0].metrics["critic/lr(1e-4)"] == 0.1  # unknown keys pass through under their own name
    _same_replay(f, _hand(tmp_path, by_step))
