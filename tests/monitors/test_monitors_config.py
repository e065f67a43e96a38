"""Monitor config: validated defaults, YAML, clear errors; `rlguard monitors --print-config`."""

from __future__ import annotations

import pytest

from rlguard.monitors.config import (
    MonitorConfig,
    MonitorConfigError,
    load_monitor_config,
    monitor_config_from_dict,
)
from rlguard.orchestrator.monitors_cli import describe_fields, main


def test_defaults_load_without_a_file():
    cfg = load_monitor_config(None)
    assert cfg == MonitorConfig()
    assert cfg.patterns.enabled and cfg.non_finite.enabled


def test_yaml_overrides_and_run_config_section(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("monitors:\n  change_point:\n    target_arl_steps: 50000\n  stall:\n    min_s: 30\n")
    cfg = load_monitor_config(p)
    assert cfg.change_point.target_arl_steps == 50000 and cfg.stall.min_s == 30
    assert cfg.track == MonitorConfig().track


def test_unknown_key_is_named_with_the_fix():
    with pytest.raises(MonitorConfigError) as e:
        monitor_config_from_dict({"patterns": {"shfit_z": 3}})
    assert "patterns.shfit_z: unknown key" in str(e.value) and "--print-config" in str(e.value)


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(MonitorConfigError, match=r"bounds.rules.0"):
        monitor_config_from_dict({"bounds": {"rules": [{"metric": "kl"}]}})
    with pytest.raises(MonitorConfigError, match=r"track.warmup_steps"):
        monitor_config_from_dict({"track": {"warmup_steps": 0}})
    p = tmp_path / "bad.yaml"
    p.write_text("track: [1, 2\n")
    with pytest.raises(MonitorConfigError, match="not valid YAML"):
        load_monitor_config(p)
    with pytest.raises(MonitorConfigError, match="cannot read"):
        load_monitor_config(tmp_path / "missing.yaml")


def test_print_config_lists_every_field_with_default_and_meaning(capsys):
    assert main(["--print-config"]) == 0
    out = capsys.readouterr().out
    leaves = [row for row in describe_fields(MonitorConfig()) if row[1] != ""]
    assert len(leaves) > 40
    for key, default, doc in leaves:
        assert f"{key} = {default}" in out
        assert doc, f"{key} has no docstring"
    assert "h = " in out  # the derived CUSUM threshold


def test_check_and_yaml_round_trip(tmp_path, capsys):
    assert main(["--print-config", "--yaml"]) == 0
    p = tmp_path / "defaults.yaml"
    p.write_text(capsys.readouterr().out)
    assert load_monitor_config(p) == MonitorConfig()
    assert main(["--check", str(p)]) == 0
    p.write_text("spike: {threshold: 3}\n")
    assert main(["--check", str(p)]) == 2
    assert "spike.threshold: unknown key" in capsys.readouterr().err
