"""logformats in small pieces: sniffing that tells look-alike formats apart, the Python-repr parser,
tailing (torn lines, truncation, the held-back last step), and the refusals that must be loud."""

from __future__ import annotations

import math

import pytest

from rlguard.orchestrator.logformats import LogFormatError, detect, load_run, open_source
from rlguard.orchestrator.logformats.pyliteral import NotALiteral, parse_literal


def _write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,name", [
    ('{"step": 1, "metrics": {"kl": 0.1}}\n', "metrics-jsonl"),
    ('{broken\n{"step": 1, "time": 5, "metrics": {}}\n', "metrics-jsonl"),
    ('{"step": 1, "data": {"actor/ppo_kl": 0.1}}\n', "verl-jsonl"),
    ("banner\n(TaskRunner pid=1) step:3 - actor/pg_loss:0.5 - critic/score/mean:np.float64(1.0)\n", "verl-console"),
    ("INFO 12-02 08:00:00 ppo_trainer.py:547] ✨ Global step 3: {'kl': 0.1, 'reward': nan}\n", "openrlhf"),
    ("\r 10%|█ | 1/10 [00:01<00:09]\r{'loss': '0.1', 'kl': '0.02', 'epoch': '0.1'}\n", "trl-console"),
    ('{\n  "best_metric": null,\n  "log_history": [{"loss": 1.0, "step": 1}]\n}\n', "trainer-state"),
])
def test_detection_by_content(tmp_path, text, name):
    assert detect(_write(tmp_path / "log", text)).name == name


def test_python_reprs_as_trainers_print_them():
    v = parse_literal("{'a': nan, 'b': -inf, 'c': np.float64(0.5), 'd': tensor(0.25, device='cuda:0'), 'e': [1, 2],"
                      " 'f': 'x', 'g': np.nan}")
    assert math.isnan(v["a"]) and v["b"] == -math.inf and v["c"] == 0.5 and v["d"] == 0.25 and v["e"] == [1, 2]
    assert math.isnan(v["g"]) and v["f"] == "x"
    for code in ("__import__('os').system('false')", "{'a': x + 1}", "(lambda: 1)()"):
        with pytest.raises(NotALiteral):  # nothing is ever evaluated
            parse_literal(code)


def test_verl_numpy_reprs_and_ray_prefix(tmp_path):
    f = _write(tmp_path / "v.log", "(TaskRunner pid=9) step:2 - actor/ppo_kl:np.float32(0.5) - actor/pg_loss:nan"
                                   " - critic/score/mean:3 - note:text\n")
    (ev,) = load_run(f)
    assert ev.step == 2 and ev.metrics["approx_kl"] == 0.5 and math.isnan(ev.metrics["policy_loss"])
    assert ev.metrics["reward"] == 3.0 and "note" not in ev.metrics


def test_tailing_waits_for_whole_lines_and_restarts_on_truncation(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_text('{"step":1,"data":{"actor/ppo_kl":0.1}}\n{"step":2,"data":{"actor/pp')
    name, src = open_source(f)
    assert name == "verl-jsonl"
    assert src.poll() == []  # step 1 may still get records; step 2's line is torn
    with f.open("a") as fh:
        fh.write('o_kl":0.2}}\n{"step":3,"data":{"actor/ppo_kl":0.3}}\n')
    assert [(e.step, e.metrics["approx_kl"]) for e in src.poll()] == [(1, 0.1), (2, 0.2)]
    f.write_text('{"step":1,"data":{"actor/ppo_kl":0.9}}\n')  # verl restarted: its file logger truncates
    got = src.poll() + src.close()
    assert [(e.step, e.metrics["approx_kl"]) for e in got] == [(3, 0.3), (1, 0.9)]
    assert "restarted 1x" in src.summary()


def test_snapshot_holds_back_the_last_step_until_close(tmp_path):
    from transformers import TrainerState

    f = tmp_path / "trainer_state.json"
    TrainerState(log_history=[{"kl": 0.1, "step": 1}, {"kl": 0.2, "step": 2}]).save_to_json(str(f))
    _, src = open_source(f)
    assert [e.step for e in src.poll()] == [1]
    TrainerState(log_history=[{"kl": 0.1, "step": 1}, {"kl": 0.2, "step": 2}, {"eval_kl": 0.3, "step": 2},
                              {"kl": 0.4, "step": 3}]).save_to_json(str(f))
    got = src.poll()
    assert [(e.step, e.metrics) for e in got] == [(2, {"kl": 0.2, "eval_kl": 0.3})]
    assert [e.step for e in src.close()] == [3]


def test_trl_console_refuses_dicts_whose_step_the_bar_cannot_tell(tmp_path):
    # stdout block-buffered: two dicts, then the bar frames
    f = _write(tmp_path / "t.log", "{'loss': '0.1', 'epoch': '0.1'}\n{'loss': '0.2', 'epoch': '0.2'}\n"
                                   "\r 20%|██ | 2/10 [00:01<00:04]\n")
    with pytest.raises(LogFormatError, match="--logging-steps"):
        load_run(f)
    assert [e.step for e in load_run(f, logging_steps=3)] == [3, 6]


def test_trl_console_ignores_other_bars(tmp_path):
    text = ("\r  0%|  | 0/10 [00:00<?]\rMap: 100%|██| 8/8 [00:00]\n"
            "\r 10%|█ | 1/10 [00:01<00:09]\r    \r{'loss': '0.1', 'kl': '0.01', 'epoch': '0.1'}\n"
            "\r 10%|█ | 1/10 [00:01<00:09]\r 50%|█ | 1/2 [00:00<00:00]\r100%|█| 2/2 [00:00]\r"
            "{'eval_loss': '0.3', 'eval_kl': '0.02', 'epoch': '0.1'}\n\r 10%|█ | 1/10 [00:01<00:09]\n")
    (ev,) = load_run(_write(tmp_path / "t.log", text))
    assert ev.step == 1 and ev.metrics["kl"] == 0.01 and ev.metrics["eval_kl"] == 0.02


def test_tensorboard_refuses_two_runs_logging_the_same_tag(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    for run in ("a", "b"):
        w = SummaryWriter(log_dir=str(tmp_path / run))
        w.add_scalar("actor/ppo_kl", 0.1, 1)
        w.close()
    with pytest.raises(LogFormatError, match="different runs"):
        load_run(tmp_path)
    assert load_run(tmp_path / "a")[0].metrics == {"approx_kl": pytest.approx(0.1)}


def test_tensorboard_directory_tailed_as_the_writer_flushes(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path / "run"))
    for step in (1, 2, 3):
        w.add_scalar("actor/ppo_kl", step / 10, step)
    w.flush()
    name, src = open_source(tmp_path)
    assert name == "tensorboard" and [e.step for e in src.poll()] == [1, 2]  # step 3 may get more tags
    for step in (4, 5):
        w.add_scalar("actor/ppo_kl", step / 10, step)
    w.close()
    assert [e.step for e in src.poll()] == [3, 4]
    assert [(e.step, round(e.metrics["approx_kl"], 6)) for e in src.close()] == [(5, 0.5)]


def test_openrlhf_evaluation_line_joins_its_step(tmp_path):
    f = _write(tmp_path / "o.log",
               "INFO 12-02 08:00:00 ppo_trainer.py:547] ✨ Global step 20: {'kl': 0.01, 'reward': 0.5}\n"
               "INFO 12-02 08:00:01 ppo_trainer.py:581] ⏰ Evaluation start time: 2026-12-02 08:00:01\n"
               "INFO 12-02 08:01:03 ppo_trainer.py:594] ✨ Evaluation completed in 0:01:02, global_step 20, "
               "eval_metrics: {'eval_gsm8k_pass1': 0.42, 'reward': 0.4}\n"
               "INFO 12-02 08:02:00 ppo_trainer.py:547] ✨ Global step 21: {'kl': 0.02, 'reward': 0.6}\n")
    ev = load_run(f)
    assert [(e.step, e.metrics) for e in ev] == [
        (20, {"kl": 0.01, "reward": 0.5, "eval_gsm8k_pass1": 0.42, "eval_reward": 0.4}),
        (21, {"kl": 0.02, "reward": 0.6})]


def test_trainer_guessed_from_tags():
    from rlguard.orchestrator.logformats.base import guess_trainer

    assert guess_trainer({"train/policy_loss", "train/learning_rate", "train/kl"}) == "trl"  # trl logs policy_loss too
    assert guess_trainer({"train/policy_loss", "train/actor_lr", "train/kl"}) == "openrlhf"
    assert guess_trainer({"actor/ppo_kl", "critic/score/mean"}) == "verl"
    assert guess_trainer({"kl", "reward"}) == "rlguard"
