"""verl and OpenRLHF under the real supervisor: stand-in trainers (tests/orchestrator/standin_*.py)
that honour the real flags and write the real log formats and checkpoint layouts collapse at
step 7; the supervisor must detect it, roll back by relaunch to global step 4 (6 was written
before the collapse, but its samples were scored at 7), with the tightened knobs as the
trainer's own flags, journaled, and retention must never delete the target."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from rlguard.orchestrator.openrlhf_launch import OpenRLHFLauncher, openrlhf_stdout_line_to_event, parse_flags
from rlguard.orchestrator.spec import ConfigError, parse_run_config
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.orchestrator.trainer_specs import OpenRLHFSection, VerlSection
from rlguard.orchestrator.verl_launch import VerlLauncher, verl_file_record_to_event
from tests.orchestrator.harness import FAST_SUPERVISOR, QUIET_MONITORS, journal, run_supervisor, story

HERE = Path(__file__).parent
STANDIN_VERL = HERE / "standin_verl.py"
STANDIN_OPENRLHF = HERE / "standin_openrlhf.py"


def _config(launcher: str, section: dict):
    sup = {k: v for k, v in FAST_SUPERVISOR.items() if k != "checkpoints"}
    # Retention prunes hard (keep_last 1): a target that survives it was protected.
    sup.update({"launcher": launcher, launcher: section,
                "checkpoints": {"confirm_steps": 1, "keep_last": 1, "keep_healthy": 2}})
    return parse_run_config({"monitors": QUIET_MONITORS, "policies": {"cooldown": {"steps": 3}}, "supervisor": sup})


def _launches(run_dir: Path) -> list[dict]:
    return [e for e in journal(run_dir) if e.get("kind") == "note" and e.get("event") == "launch"]


def _rollbacks(run_dir: Path) -> list[dict]:
    return [e for e in journal(run_dir) if e.get("kind") == "decision" and e.get("phase") == "decided"
            and (e.get("action") or e["decision"]["action"]) == "rollback"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ============================================================ verl

def test_verl_collapse_is_rolled_back_by_relaunch_from_global_step_4_with_tightened_overrides(tmp_path):
    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "actor_rollout_ref.actor.use_kl_loss=true", "trainer.save_freq=2", "trainer.logger=[console]",
        "trainer.max_actor_ckpt_to_keep=1",  # verl would delete global_step_4 when saving 6
        f"trainer.default_local_dir={ckpt}", "+standin.collapse_at=7", "+standin.safe_kl_coef=0.0012",
        "+standin.total_steps=12", "+standin.step_s=0.1"]})
    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False), timeout_s=50)

    assert result.state.value == "completed", story(run_dir, kinds=("decision", "state", "launch", "restart"))
    launches = _launches(run_dir)
    assert [(e["attempt"], Path(e["resume"]).name if e.get("resume") else None) for e in launches] == [
        (0, None), (1, "step-000004")]
    rb = _rollbacks(run_dir)
    assert len(rb) == 1 and rb[0]["decision"]["target_step"] == 4
    argv = launches[1]["argv"]
    assert "trainer.resume_mode=resume_path" in argv
    assert f"trainer.resume_from_path={ckpt}/global_step_4" in argv
    assert "actor_rollout_ref.actor.kl_loss_coef=0.0015" in argv  # 0.001 * 1.5
    for key in ("clip_ratio", "clip_ratio_low", "clip_ratio_high"):
        assert f"actor_rollout_ref.actor.{key}=0.16" in argv  # 0.2 * 0.8: _low/_high are the ones in force
    assert "actor_rollout_ref.actor.optim.lr=5e-07" in argv
    # The restored scheduler would override the new lr: the relaunch leaves "extra" out of the load.
    assert "actor_rollout_ref.actor.checkpoint.load_contents=[model,optimizer]" in argv
    assert "trainer.max_actor_ckpt_to_keep=null" in argv and "trainer.max_actor_ckpt_to_keep=1" not in argv
    assert any(a.startswith("++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=") for a in argv)
    # One file logger per attempt (verl truncates it on start).
    assert (run_dir / "logs" / "verl-metrics-attempt-0.jsonl").exists()
    assert (run_dir / "logs" / "verl-metrics-attempt-1.jsonl").exists()

    events = _metrics(run_dir)
    second = [e for e in events if e.get("attempt") == 1]
    assert [e["step"] for e in second][:3] == [4, 5, 6]  # validation record at the resumed step, then 5, 6
    assert all(e["metrics"]["kl"] < 0.5 for e in second if "kl" in e["metrics"])  # the collapse did not recur
    lr_after = {e["step"]: e["metrics"]["lr"] for e in second if "lr" in e["metrics"]}
    assert lr_after[5] == 1e-6 and lr_after[7] == 5e-7  # one step at the restored lr, then the new one
    # rlguard's retention pruned (global_step_2 gone) but never the target before it was loaded.
    assert not (ckpt / "global_step_2").exists()
    assert "Load from checkpoint folder" in (run_dir / "logs" / "worker-attempt-1.log").read_text()
    notes = [e for e in journal(run_dir) if e.get("event") == "trainer_checkpoint_pruned"]
    assert any("global_step_2" in e["message"] for e in notes)


def test_verl_knobs_follow_what_is_in_force():
    both = VerlSection(overrides=["algorithm.use_kl_in_reward=True", "actor_rollout_ref.actor.use_kl_loss=true",
                                  "actor_rollout_ref.actor.kl_loss_coef=0.01", "algorithm.kl_ctrl.kl_coef=0.02",
                                  "actor_rollout_ref.actor.clip_ratio_high=0.28"])
    launcher = VerlLauncher(Path("/tmp/run"), Path("/tmp/run/config.yaml"), both, env={})
    launcher.initial = launcher.initial_constraints()
    assert launcher.initial == {"kl_coef": 0.01, "clip_range": 0.2, "lr": 1e-6}
    knobs = launcher.knob_overrides({"kl_coef": 0.015, "clip_range": 0.16})
    assert knobs["actor_rollout_ref.actor.kl_loss_coef"] == pytest.approx(0.015)
    assert knobs["algorithm.kl_ctrl.kl_coef"] == pytest.approx(0.03)  # same factor on both KL knobs
    assert knobs["actor_rollout_ref.actor.clip_ratio_high"] == pytest.approx(0.224)  # DAPO clip-higher kept asymmetric
    none = VerlLauncher(Path("/tmp/run"), Path("/tmp/run/config.yaml"), VerlSection(), env={})
    assert "kl_coef" not in none.initial_constraints()  # no KL in force: no KL knob to turn


def test_verl_file_record_reads_null_as_non_finite():
    ev = verl_file_record_to_event(b'{"step": 3, "data": {"actor/kl_loss": null, "actor/entropy": 0.5, '
                                   b'"actor/ppo_kl": 0.01, "custom/x": 1}}', attempt=2)
    assert ev.step == 3 and ev.attempt == 2 and math.isnan(ev.metrics["kl"])
    assert ev.metrics["entropy"] == 0.5 and ev.metrics["approx_kl"] == 0.01 and ev.metrics["custom/x"] == 1.0
    with pytest.raises(ValueError):
        verl_file_record_to_event(b'{"step": 3, "metrics": {}}')


def test_verl_file_logger_fixture_written_by_verls_own_file_logger():
    # fixtures/verl_file_logger.jsonl was written by the FileLogger class of verl/utils/tracking.py
    # @ b178a3c with orjson 3.13 (numpy float32/float64 values, NaN and inf among them): it shows
    # that verl writes non-finite values as null, which the reader turns back into NaN.
    lines = (HERE / "fixtures" / "verl_file_logger.jsonl").read_bytes().splitlines()
    events = [verl_file_record_to_event(x, attempt=0) for x in lines]
    assert [e.step for e in events] == [1, 2, 2]
    assert events[0].metrics["kl"] == pytest.approx(0.0123) and events[0].metrics["reward"] == 0.5
    assert events[0].metrics["response_length"] == 212.0 and events[0].metrics["approx_kl"] == 0.002
    assert math.isnan(events[1].metrics["kl"]) and math.isnan(events[1].metrics["entropy"])  # inf -> null -> NaN
    assert events[2].metrics == {"val-core/openai/gsm8k/reward/mean@1": 0.31}


# ============================================================ OpenRLHF

def test_openrlhf_collapse_is_rolled_back_by_pointing_latest_at_global_step4(tmp_path):
    run_dir, ckpt = tmp_path / "run", tmp_path / "orl-ckpt"
    cfg = _config("openrlhf", {"command": [sys.executable, str(STANDIN_OPENRLHF)], "poll_s": 0.05, "args": [
        "--ckpt.path", str(ckpt), "--ckpt.save_steps", "2", "--ckpt.max_num", "2",  # OpenRLHF would drop 4 at 8
        "--algo.kl.init_coef", "0.01", "--standin.collapse_at", "7", "--standin.safe_kl_coef", "0.012",
        "--standin.total_steps", "12", "--standin.step_s", "0.1"]})
    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False), timeout_s=50)

    assert result.state.value == "completed", story(run_dir, kinds=("decision", "state", "launch", "restart"))
    launches = _launches(run_dir)
    assert [(e["attempt"], Path(e["resume"]).name if e.get("resume") else None) for e in launches] == [
        (0, None), (1, "step-000004")]
    assert _rollbacks(run_dir)[0]["decision"]["target_step"] == 4
    argv = launches[1]["argv"]
    flags = dict(parse_flags(argv[2:]))
    assert flags["--ckpt.load_enable"] == []
    assert flags["--algo.kl.init_coef"] == ["0.015"] and flags["--actor.eps_clip"] == ["0.16"]
    assert flags["--ckpt.max_num"] == ["1000000000"] and "--actor.adam.lr" not in flags
    assert argv.count("--algo.kl.init_coef") == 1  # the user's value replaced, not repeated
    log = (run_dir / "logs" / "worker-attempt-1.log").read_text()
    assert "'global_step': 4" in log  # the stand-in loaded the tag `latest` named
    second = [e for e in _metrics(run_dir) if e.get("attempt") == 1]
    assert second[0]["step"] == 5 and all(e["metrics"]["kl"] < 0.5 for e in second)
    assert not (ckpt / "_actor" / "global_step2").exists()  # rlguard's retention did prune


def test_openrlhf_stdout_line_with_ray_prefix_and_nan():
    line = ("(PPOTrainer pid=4242) INFO 12-02 08:00:00 ppo_trainer.py:547] ✨ Global step 12: {'policy_loss': nan, "
            "'kl': 0.02, 'actor_lr': 1e-06, 'rollout/reward_mean': -inf, 'note': 'x'}")
    ev = openrlhf_stdout_line_to_event(line.encode(), attempt=1)
    assert ev.step == 12 and math.isnan(ev.metrics["policy_loss"]) and ev.metrics["kl"] == 0.02
    assert ev.metrics["lr"] == 1e-6 and ev.metrics["rollout/reward_mean"] == -math.inf and "note" not in ev.metrics
    assert openrlhf_stdout_line_to_event(b"INFO Global step 3: {'kl': 0.1}").step == 3  # the async trainer's form
    assert openrlhf_stdout_line_to_event(b"Episode [1/1]: 10%|#") is None


def test_openrlhf_clip_low_high_is_tightened_with_eps_clip():
    section = OpenRLHFSection(args=["--actor.eps_clip_low_high", "0.2", "0.28", "--algo.kl.init_coef", "0"])
    launcher = OpenRLHFLauncher(Path("/tmp/run"), Path("/tmp/run/config.yaml"), section, env={})
    launcher.initial = launcher.initial_constraints()
    assert launcher.initial == {"clip_range": 0.2}  # init_coef 0: no reference model, no KL knob
    argv, _ = launcher.build(1, None, True, {"clip_range": 0.16})
    assert argv[1:3] == ["-m", "openrlhf.cli.train_ppo_ray"]
    flags = dict(parse_flags(argv[3:]))
    assert flags["--actor.eps_clip_low_high"] == ["0.16", "0.224"] and "--ckpt.load_enable" not in flags


# ============================================================ config errors

@pytest.mark.parametrize("extra, needle", [
    ({"rollback_mode": "in_process"}, "rollback_mode"),
    ({"checkpoints": {"confirm_steps": 0}}, "confirm_steps"),
    ({"command": "python x.py"}, "verl.command"),
    ({"checkpoint_every_s": 60}, "checkpoint_every_s"),
])
def test_verl_launcher_config_errors_name_the_field(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_run_config({"supervisor": {"launcher": "verl", "verl": {}, **extra}})


def test_a_launcher_without_its_section_is_an_error():
    with pytest.raises(ConfigError, match="needs its `openrlhf:` section"):
        parse_run_config({"supervisor": {"launcher": "openrlhf"}})
    assert parse_run_config({"supervisor": {"launcher": "verl", "verl": {}}}).supervisor.rollback_mode == "restart"


# ============================================================ a supervisor restart

def test_a_new_supervisor_reattaches_to_a_running_verl_and_reads_on_from_the_record(tmp_path):
    import threading
    import time

    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "actor_rollout_ref.actor.use_kl_loss=true", "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}",
        "+standin.collapse_at=9", "+standin.safe_kl_coef=0.0012", "+standin.total_steps=14",
        "+standin.step_s=0.2"]})
    first = Supervisor(run_dir, cfg, serve_http=False, scheduler=False)
    t = threading.Thread(target=first.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(e["step"] >= 4 for e in _metrics_or_none(run_dir)):
        time.sleep(0.05)
    first.detach("test: the supervisor goes away, the trainer trains on")
    t.join(15)
    assert first.live.state.value == "detached" and first.live.worker.poll()[0] is False

    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False, resume=True), timeout_s=50)
    assert result.state.value == "completed", story(run_dir, kinds=("decision", "state", "launch", "restart"))
    assert any(e.get("kind") == "state" and "reattached to worker" in e.get("reason", "") for e in journal(run_dir))
    assert [(e["attempt"], Path(e["resume"]).name if e.get("resume") else None) for e in _launches(run_dir)] == [
        (0, None), (1, "step-000006")]  # collapse at 9: 8's samples were scored at 9
    pairs = [(e.get("attempt"), e["step"]) for e in _metrics(run_dir)]
    assert len(pairs) == len(set(pairs))  # the reattached reader skipped what the record held
    assert [s for a, s in pairs if a == 0] == list(range(1, max(s for a, s in pairs if a == 0) + 1))


def _metrics_or_none(run_dir: Path) -> list[dict]:
    return _metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []


def test_a_halt_stops_the_verl_process_group(tmp_path):
    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "actor_rollout_ref.actor.use_kl_loss=true", "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}",
        "+standin.collapse_at=5", "+standin.total_steps=400", "+standin.step_s=0.1"]})
    cfg.policies.rollback.budget = 0  # every critical alert halts
    sup = Supervisor(run_dir, cfg, serve_http=False, scheduler=False)
    result = run_supervisor(sup, timeout_s=40)
    assert result.state.value == "halted"
    assert ("decision", "halt", "done") in story(run_dir)
    assert sup.live.worker is None and sup.exited_worker.poll()[0]  # the trainer is gone, not left training
    assert max(e["step"] for e in _metrics(run_dir)) < 20


def test_a_trainer_that_finished_while_no_supervisor_ran_is_not_relaunched(tmp_path):
    import threading
    import time

    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}", "+standin.total_steps=8", "+standin.step_s=0.2"]})
    first = Supervisor(run_dir, cfg, serve_http=False, scheduler=False)
    t = threading.Thread(target=first.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _metrics_or_none(run_dir):
        time.sleep(0.05)
    first.detach("test: the supervisor goes away")
    t.join(15)
    trainer = first.live.worker
    while time.monotonic() < deadline and not trainer.poll()[0]:
        time.sleep(0.05)
    assert json.loads((run_dir / "worker-status.json").read_text())["status"] == "completed"

    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False, resume=True), timeout_s=30)
    assert result.state.value == "completed" and len(_launches(run_dir)) == 1


def test_a_rewritten_rollback_target_is_marked_corrupt_and_the_next_older_healthy_one_is_used(tmp_path):
    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "actor_rollout_ref.actor.use_kl_loss=true", "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}",
        "trainer.max_actor_ckpt_to_keep=2", "+standin.collapse_at=7", "+standin.safe_kl_coef=0.0012",
        "+standin.total_steps=10", "+standin.step_s=0.1", "+standin.rewrite_at=7", "+standin.rewrite_step=4"]})
    cfg.supervisor.checkpoints.keep_healthy = 3  # keeps global_step_2 as the fallback
    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False), timeout_s=50)

    assert result.state.value == "completed", story(run_dir, kinds=("decision", "state", "launch", "restart"))
    launches = _launches(run_dir)
    assert [(e["attempt"], Path(e["resume"]).name if e.get("resume") else None) for e in launches] == [
        (0, None), (1, "step-000002")]
    assert f"trainer.resume_from_path={ckpt}/global_step_2" in launches[1]["argv"]
    corrupt = [e for e in journal(run_dir) if e.get("kind") == "checkpoint" and e.get("health") == "corrupt"]
    assert [e["step"] for e in corrupt] == [4] and "changed since step 4 was registered" in corrupt[0]["note"]
    assert (ckpt / "global_step_4").is_dir()  # a rewritten checkpoint is never deleted by rlguard


@pytest.mark.parametrize("name", ["verl_grpo.yaml", "openrlhf_ppo.yaml"])
def test_the_example_configs_parse_and_build_a_command_line(name, tmp_path):
    from rlguard.orchestrator.run_context import make_launcher
    from rlguard.orchestrator.spec import load_run_config

    cfg, _ = load_run_config(HERE.parents[1] / "examples" / name)
    launcher = make_launcher(tmp_path, tmp_path / "config.yaml", cfg.supervisor)
    launcher.initial = launcher.initial_constraints()
    assert "kl_coef" in launcher.initial and "clip_range" in launcher.initial
    argv, _ = launcher.build(0, None, False, {})
    assert argv[0] == sys.executable and len(argv) > 10


def test_a_crashed_verl_is_relaunched_from_its_last_healthy_global_step_with_its_own_knobs(tmp_path):
    run_dir, ckpt = tmp_path / "run", tmp_path / "verl-ckpt"
    cfg = _config("verl", {"command": [sys.executable, str(STANDIN_VERL)], "poll_s": 0.05, "overrides": [
        "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}", "+standin.crash_at=5",
        "+standin.total_steps=8", "+standin.step_s=0.05"]})
    result = run_supervisor(Supervisor(run_dir, cfg, serve_http=False, scheduler=False), timeout_s=40)
    assert result.state.value == "completed", story(run_dir, kinds=("decision", "state", "launch", "restart"))
    launches = _launches(run_dir)
    assert [(e["attempt"], Path(e["resume"]).name if e.get("resume") else None) for e in launches] == [
        (0, None), (1, "step-000004")]
    argv = launches[1]["argv"]
    assert f"trainer.resume_from_path={ckpt}/global_step_4" in argv
    assert not any(a.startswith("actor_rollout_ref.actor.") for a in argv)  # nothing was tightened
    assert "simulated crash after step 5" in next(e for e in journal(run_dir) if e["kind"] == "restart")["worker_log_tail"]
