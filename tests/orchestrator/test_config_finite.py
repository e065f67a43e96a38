"""Configs take finite numbers only: `.inf` / `.nan` in YAML (or --set) name the field, instead
of an OverflowError later (time.monotonic() + inf -> a deadline nobody can compare)."""

from __future__ import annotations

import pytest

from rlguard.orchestrator.spec import ConfigError, load_run_config, parse_run_config
from rlguard.ppo.config import ConfigError as TrainConfigError
from rlguard.ppo.config import load_train_config


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_supervisor_values_are_config_errors_naming_the_field(tmp_path, value):
    path = tmp_path / "run.yaml"
    path.write_text(f"supervisor:\n  tick_s: {value}\n")
    with pytest.raises(ConfigError, match=r"supervisor\.tick_s: .*finite"):
        load_run_config(path)
    with pytest.raises(ConfigError, match=r"supervisor\.restart_backoff_max_s: .*finite"):
        parse_run_config({"supervisor": {"restart_backoff_max_s": float("inf")}})


@pytest.mark.parametrize("value", [".inf", "inf", "nan", "-.inf"])
def test_non_finite_trainer_overrides_are_config_errors_naming_the_field(value):
    with pytest.raises(TrainConfigError, match=r"^lr=.*finite"):
        load_train_config(None, [f"lr={value}"])
    with pytest.raises(TrainConfigError, match=r"^kl_coef=.*finite"):
        load_train_config(None, [f"kl_coef={value}"])
    assert load_train_config(None, ["lr=1e-6"]).lr == 1e-6
