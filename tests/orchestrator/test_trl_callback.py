"""RLGuardCallback on a real trl GRPOTrainer (tiny random Llama, CPU), standalone and under the
real supervisor (`rlguard run` with a `command:` worker): metrics per step in METRICS.md names,
checkpoints handed to the registry, tighten + in-process and restart rollback end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlguard.orchestrator.integrations.metric_names import has_training_metrics, map_metrics, table_for
from rlguard.orchestrator.journal import read_journal
from rlguard.ppo.checkpoint_files import list_checkpoints, verify_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "trl_grpo.py"
TRL_LOG = {"loss": 0.01, "grad_norm": 2.3, "learning_rate": 5e-5, "num_tokens": 144.0, "kl": 0.002,
           "reward": 1.5, "reward_std": 0.3, "entropy": 6.2, "completions/mean_length": 8.0,
           "completions/clipped_ratio": 1.0, "clip_ratio/region_mean": 0.0, "rewards/len/mean": 1.5,
           "step_time": 0.04, "epoch": 0.05}


def test_trl_names_map_to_metrics_md_and_unknown_ones_pass_through():
    m = map_metrics(TRL_LOG, "trl")
    assert m["response_length"] == 8.0 and m["truncated_fraction"] == 1.0 and m["clipfrac"] == 0.0
    assert m["kl"] == 0.002 and m["reward"] == 1.5 and m["lr"] == 5e-5 and m["step_seconds"] == 0.04
    assert m["rewards/len/mean"] == 1.5 and m["loss"] == 0.01  # kept under their own names
    assert "epoch" not in m and "num_tokens" not in m and "completions/mean_length" not in m
    ev = map_metrics({"eval_kl": 0.1, "eval_completions/mean_length": 12, "eval_runtime": 3.0}, "trl")
    assert ev == {"eval_kl": 0.1, "eval_response_length": 12.0, "eval_runtime": 3.0}
    assert not has_training_metrics(ev) and has_training_metrics(m)
    assert map_metrics({"kl": None, "reward": "n/a", "entropy": float("nan")}, "trl")["entropy"] != 0.0
    assert "kl" not in map_metrics({"kl": None}, "trl")


def test_verl_and_openrlhf_names():
    v = map_metrics({"actor/ppo_kl": 0.01, "response_length/mean": 300, "critic/score/mean": 2.0,
                     "actor/kl_loss": 0.05}, "verl")
    assert v == {"approx_kl": 0.01, "response_length": 300.0, "reward": 2.0, "kl": 0.05}
    o = map_metrics({"train/kl": 0.02, "train/response_length": 120, "train/reward": 1.0}, "openrlhf")
    assert o == {"kl": 0.02, "response_length": 120.0, "reward": 1.0}
    with pytest.raises(ValueError, match="unknown trainer 'deepspeed-chat'"):
        table_for("deepspeed-chat")


def _trl_names_still_logged():
    """The trl names the table relies on are still the ones trl 1.x logs (guards an upgrade)."""
    import importlib.util

    trl_dir = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "trainer"  # no import: fast
    src = (trl_dir / "grpo_trainer.py").read_text() + (trl_dir / "rloo_trainer.py").read_text()
    return [k for k in table_for("trl") if k not in ("grad_norm", "learning_rate") and f'"{k}"' not in src]


def test_trl_source_still_logs_the_mapped_names():
    assert _trl_names_still_logged() == []


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_constraints_checkpoints_and_rollback_on_a_real_trl_trainer(tmp_path, kind):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    Config, Trainer = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)

    from rlguard.orchestrator.integrations.trl_callback import ConstraintError, RLGuardCallback
    from rlguard.ppo.tiny import build_tiny_lm

    torch.set_num_threads(1)
    model_dir = build_tiny_lm(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(model_dir)

    def trainer(beta: float, out: str):
        args = Config(output_dir=str(tmp_path / out), max_steps=2, save_steps=1, logging_steps=5, beta=beta,
                          per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                          learning_rate=1e-4, epsilon=0.2, epsilon_high=0.28, report_to=[], use_cpu=True,
                          disable_tqdm=True, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4)
        return Trainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                           reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions], args=args,
                           train_dataset=Dataset.from_dict({"prompt": ["the day was"] * 8}),
                           eval_dataset=Dataset.from_dict({"prompt": ["my friend said"]}), processing_class=tok)

    t = trainer(0.04, "a")
    guard = RLGuardCallback.install(t, run_dir=tmp_path / "run")  # no RLGUARD_CONTROL: standalone
    assert not guard.client.supervised
    t.train()
    assert t.args.logging_steps == 1  # forced: every step is judged
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == [1, 2]
    assert "eval_reward" not in events[0]["metrics"] and "eval_reward" in events[1]["metrics"]  # eval at step 2
    assert "eval_response_length" in events[1]["metrics"]
    assert {"kl", "reward", "response_length", "entropy", "kl_coef", "clip_range", "lr"} <= set(events[0]["metrics"])
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000001", "step-000002"]
    manifest = verify_checkpoint(ckpts[-1])
    assert "trainer_state.json" in manifest["files"] and "optimizer.pt" in manifest["files"]
    assert manifest["constraints"]["kl_coef"] == 0.04
    assert not (tmp_path / "a" / "checkpoint-2").exists()  # moved: the registry owns it now

    sched_lr = t.optimizer.param_groups[0]["lr"]
    now = guard.set_constraints(kl_coef=0.08, clip_range=0.1, lr=5e-5)
    assert now == {"kl_coef": 0.08, "clip_range": 0.1, "lr": 5e-5}
    assert t.beta == 0.08 and t.epsilon_low == 0.1 and t.epsilon_high == pytest.approx(0.14)  # shape kept
    assert set(t.lr_scheduler.base_lrs) == {5e-5} and t.optimizer.param_groups[0]["lr"] == pytest.approx(sched_lr / 2)

    guard.load_checkpoint(ckpts[0])
    assert t.state.global_step == 1 and t._globalstep_last_logged == 1
    with pytest.raises(ConstraintError, match="beta=0.0"):
        RLGuardCallback(trainer(0.0, "b"), run_dir=tmp_path / "run-b").set_constraints(kl_coef=0.1)


CONFIG = """\
trainer: {{kl_coef: 0.04, clip_range: 0.2, lr: 0.0001}}
monitors:
  track: {{warmup_steps: 4}}
  spike: {{enabled: false}}
  change_point: {{enabled: false}}
  drift: {{enabled: false}}
  patterns: {{enabled: false}}
  bounds:
    rules: [{{metric: reward, upper: 100.0, patience_steps: 1, severity: critical}}]
supervisor:
  command: "{{python}} {example} --tiny --run-dir {{run_dir}} --steps 10 --spike-at-step 7"
  checkpoints: {{confirm_steps: 2}}
  heartbeat_interval_s: 0.5
  restart_backoff_initial_s: 0.1
  rollback_mode: {mode}
"""


@pytest.mark.parametrize("mode", ["in_process", pytest.param("restart", marks=pytest.mark.slow)])
def test_grpo_under_the_supervisor_is_tightened_and_rolled_back(tmp_path, mode):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG.format(example=EXAMPLE, mode=mode))
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg), "--out", str(run), "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = read_journal(run / "journal.jsonl").entries
    decided = [e for e in entries if e["kind"] == "decision" and e["phase"] == "decided"]
    assert [e["decision"]["action"] for e in decided] == ["rollback"]
    rollback = decided[0]["decision"]
    assert rollback["step"] == 7 and rollback["target_step"] == 4  # step 6 turned suspect: onset 7 <= 6 + 2
    done = [e for e in entries if e["kind"] == "decision" and e["phase"] == "done"]
    assert done and done[0]["decision_id"] == decided[0]["decision_id"]
    registered = {e["step"] for e in entries if e["kind"] == "checkpoint" and e["health"] == "pending"}
    assert {2, 4, 6} <= registered  # every trainer checkpoint was announced

    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    before = [e for e in events if e["attempt"] == 0]
    after = [e for e in events if e["attempt"] == 1]
    assert [e["step"] for e in before] == list(range(1, 8))
    assert [e["step"] for e in after] == list(range(5, 11))  # resumed right after the step-4 checkpoint
    tightened = rollback["params"]
    assert tightened["kl_coef"] > 0.04 and tightened["clip_range"] < 0.2 and tightened["lr"] < 1e-4
    for e in after:  # the tightened values are in force in the trainer itself
        m = e["metrics"]
        assert m["kl_coef"] == pytest.approx(tightened["kl_coef"])
        assert m["clip_range"] == pytest.approx(tightened["clip_range"])
        assert m["lr"] == pytest.approx(tightened["lr"])
        assert m["reward"] < 100  # the hacked reward regime was left behind
    assert json.loads(proc.stderr.strip().splitlines()[-1])["rollbacks"] == 1
