"""Fuzz the config loaders: hostile YAML/mappings give the loader's own error class with a
message that says where, never another exception (a traceback is not an error message)."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard.monitors.config import (
    MonitorConfig,
    MonitorConfigError,
    load_monitor_config,
    monitor_config_from_dict,
)
from rlguard.orchestrator.components import validate_all
from rlguard.orchestrator.spec import (
    ConfigError,
    RunConfig,
    SupervisorConfig,
    load_run_config,
    parse_run_config,
)
from rlguard.policies.config import (
    PolicyConfig,
    PolicyConfigError,
    load_policy_config,
    policy_config_from_dict,
)
from rlguard.ppo.config import ConfigError as TrainConfigError
from rlguard.ppo.config import TrainConfig, load_train_config
from tests.reliability.chaos_lib import record
from tests.reliability.fuzz_strategies import JSONISH, config_mapping

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
TALLY: dict[str, list[int]] = {}


def _sub_fields(model) -> dict[str, list[str]]:
    out = {}
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out[name] = list(ann.model_fields)
    return out


def _tally(name: str, refused: bool) -> None:
    t = TALLY.setdefault(name, [0, 0])
    t[0] += 1
    t[1] += refused
    if t[0] % 40 == 0 or t[0] == 1:  # the figures file is rewritten every 40 examples, not on each
        _record(name)


# The hypothesis test behind each tally (named beside its figures in RELIABILITY.md).
TESTS = {"monitors": "test_monitor_config", "policies": "test_policy_config", "trainer": "test_train_config",
         "run spec": "test_run_spec", "raw YAML": "test_unparseable_files_give_the_loaders_error"}


def _record(name: str) -> None:
    t = TALLY[name]
    record(f"fuzz_config_{name}", kind="input", name=f"fuzzed {name} config", tried=t[0], refused=t[1],
           accepted=t[0] - t[1], crashes=0, test=f"test_fuzz_configs.py::{TESTS[name]}")


def _dump(tmp_path, data) -> str:
    p = tmp_path / "fuzz.yaml"
    try:
        p.write_text(yaml.safe_dump(data))
    except yaml.YAMLError:
        p.write_text(repr(data))
    return str(p)


def _yaml_text():
    return st.one_of(st.text(max_size=80), st.sampled_from(["- a\n- b", "a: [", "{", "!!python/object:os.system x",
                                                              "a: &x [*x]", "\t\t", "a: 1\na: 2", "? [a]\n: b"]))


@FUZZ
@given(data=config_mapping(list(MonitorConfig.model_fields), _sub_fields(MonitorConfig)))
def test_monitor_config(tmp_path, data):
    try:
        monitor_config_from_dict(data)
        _tally("monitors", False)
    except MonitorConfigError as e:
        assert "monitor config" in str(e)
        _tally("monitors", True)


@FUZZ
@given(data=config_mapping(list(PolicyConfig.model_fields), _sub_fields(PolicyConfig)))
def test_policy_config(tmp_path, data):
    try:
        policy_config_from_dict(data)
        _tally("policies", False)
    except PolicyConfigError as e:
        assert "policy config" in str(e)
        _tally("policies", True)


@FUZZ
@given(data=config_mapping(list(TrainConfig.model_fields)),
       overrides=st.lists(st.one_of(st.text(max_size=20), st.sampled_from(sorted(TrainConfig.model_fields)).map(
           lambda k: f"{k}=oops")), max_size=3))
def test_train_config(tmp_path, data, overrides):
    try:
        load_train_config(_dump(tmp_path, data), overrides)
        _tally("trainer", False)
    except TrainConfigError as e:
        assert str(e)
        _tally("trainer", True)


@FUZZ
@given(data=config_mapping(list(RunConfig.model_fields), {
    "supervisor": list(SupervisorConfig.model_fields), "monitors": list(MonitorConfig.model_fields),
    "policies": list(PolicyConfig.model_fields), "trainer": list(TrainConfig.model_fields)}))
def test_run_spec(tmp_path, data):
    """What `rlguard run` does with a config file: load, then validate every section."""
    try:
        cfg, _ = load_run_config(_dump(tmp_path, data))
        validate_all(cfg)
        _tally("run spec", False)
    except ConfigError as e:
        assert str(e)
        _tally("run spec", True)


@FUZZ
@given(text=_yaml_text(), which=st.sampled_from(["monitors", "policies", "trainer", "run"]))
def test_unparseable_files_give_the_loaders_error(tmp_path, text, which):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    loader, error = {"monitors": (load_monitor_config, MonitorConfigError),
                     "policies": (load_policy_config, PolicyConfigError),
                     "trainer": (lambda x: load_train_config(x, []), TrainConfigError),
                     "run": (load_run_config, ConfigError)}[which]
    try:
        loader(str(p))
        _tally("raw YAML", False)
    except error:
        _tally("raw YAML", True)


@FUZZ
@given(data=JSONISH)
def test_non_mapping_top_levels(data):
    for fn, err in ((monitor_config_from_dict, MonitorConfigError), (policy_config_from_dict, PolicyConfigError),
                    (parse_run_config, ConfigError)):
        try:
            fn(data)
        except err:
            pass


def test_zz_record_the_tallies():
    for name in TALLY:
        _record(name)
    assert TALLY
