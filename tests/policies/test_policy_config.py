"""Policy config: YAML in, clear errors naming the field on bad input; knob arithmetic."""

from __future__ import annotations

import pytest

from rlguard.policies.config import (
    PolicyConfig,
    PolicyConfigError,
    load_policy_config,
    policy_config_from_dict,
)
from rlguard.policies.constraints import relax, tighten


def test_defaults_and_partial_yaml(tmp_path):
    assert load_policy_config(None) == PolicyConfig()
    p = tmp_path / "policy.yaml"
    p.write_text(
        "rollback:\n  budget: 2\n  skip_batches: 200\nmodes:\n  rollback: approve\n"
        + "approval:\n  on_timeout: approve\ntighten:\n  lr: {factor: 0.25, min: 1.0e-7, max: 1.0}\n"
    )
    cfg = load_policy_config(p)
    assert (cfg.rollback.budget, cfg.rollback.skip_batches, cfg.rollback.budget_window_steps) == (2, 200, 500)
    assert cfg.mode_for("rollback") == "approve" and cfg.mode_for("tighten") == "auto"
    assert cfg.mode_for("notify") == "auto" and cfg.approval.on_timeout == "approve"
    assert cfg.tighten.lr.factor == 0.25 and cfg.tighten.kl_coef.factor == 1.5
    assert cfg.relax.enabled is False


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"rollback": {"budgte": 2}}, "rollback.budgte: unknown field"),
        ({"modes": {"rollback": "ask"}}, "modes.rollback:"),
        ({"tighten": {"kl_coef": {"factor": 1.5, "min": 2.0, "max": 1.0}}}, "min 2.0 > max 1.0: swap them"),
        ({"tighten": {"lr": {"factor": 1.0, "min": 0, "max": 1}}}, "factor 1.0 would never change"),
        ({"cooldown": {"steps": -1}}, "cooldown.steps:"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_config_names_the_field(data, needle):
    with pytest.raises(PolicyConfigError) as e:
        policy_config_from_dict(data, "policy.yaml")
    assert needle in str(e.value) and "policy.yaml" in str(e.value)


def test_bad_files_say_which(tmp_path):
    with pytest.raises(PolicyConfigError, match="cannot read it"):
        load_policy_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollback: [unclosed\n")
    with pytest.raises(PolicyConfigError, match="not valid YAML"):
        load_policy_config(bad)


def test_tighten_and_relax_are_inverse_within_bounds():
    cfg = PolicyConfig().tighten
    start = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-6}
    cur = dict(start)
    for _ in range(3):
        cur.update({c.name: c.new for c in tighten(cur, cfg)})
    assert cur == {"kl_coef": 0.16875, "clip_range": 0.1024, "lr": 1.25e-7}
    for _ in range(5):
        cur.update({c.name: c.new for c in relax(cur, start, cfg)})
    assert cur == start
    assert relax(cur, start, cfg) == []  # nothing left to relax
    # A knob the run does not report is never invented; one loosened by hand is not relaxed.
    assert [c.name for c in tighten({"kl_coef": 0.1}, cfg)] == ["kl_coef"]
    assert relax({"kl_coef": 0.01}, {"kl_coef": 0.05}, cfg) == []
