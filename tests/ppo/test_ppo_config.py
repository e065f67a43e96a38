"""TrainConfig: presets, overrides, and one-line errors that name the key."""

import pytest

from rlguard.orchestrator.cli import main
from rlguard.ppo.config import PRESETS, ConfigError, TrainConfig, describe_config, load_train_config


def test_presets_set_flag_defaults_and_explicit_values_win(tmp_path):
    cfg = load_train_config(None, []).resolved()
    assert cfg.preset == "ppo_max" and cfg.kl_penalty_per_token and cfg.reward_normalize
    assert cfg.grad_clip == 1.0 and cfg.value_clip_enabled and cfg.reward_clip == PRESETS["ppo_max"]["reward_clip"]
    van = load_train_config(None, ["preset=vanilla"]).resolved()
    assert not van.kl_penalty_per_token and not van.reward_normalize and van.grad_clip is None
    assert van.critic_pretrain_steps == 0 and van.reward_clip is None and not van.advantage_normalize
    # ppo_max is the paper's list plus advantage whitening; ppo_max_paper is the list verbatim.
    paper = load_train_config(None, ["preset=ppo_max_paper"]).resolved()
    assert cfg.advantage_normalize is True and paper.advantage_normalize is False
    for name in PRESETS["ppo_max_paper"]:
        if name != "advantage_normalize":
            assert getattr(paper, name) == getattr(cfg, name), name
    assert load_train_config(None, ["advantage_normalize=false"]).resolved().advantage_normalize is False
    path = tmp_path / "c.yaml"
    path.write_text("preset: ppo_max\nreward_clip: null\ngrad_clip: 0.5\nsteps: 7\n")
    cfg = load_train_config(path, ["lr=1e-6", "use_lora=true"]).resolved()
    assert cfg.reward_clip is None and cfg.grad_clip == 0.5 and cfg.steps == 7
    assert cfg.lr == 1e-6 and cfg.use_lora is True and cfg.kl_penalty_per_token is True


@pytest.mark.parametrize("override, words", [
    (["lr_typo=1"], ["unknown config key 'lr_typo'", "allowed keys", "lr"]),
    (["lr=-1"], ["lr=", "greater than 0"]),
    (["steps=many"], ["steps=", "integer"]),
    (["preset=maxi"], ["preset", "ppo_max", "ppo_max_paper", "vanilla"]),
    (["batch_size=6", "minibatch_size=4"], ["minibatch_size=4 must divide batch_size=6"]),
    (["ptx_coef=0.5"], ["ptx_data"]),
    (["noequals"], ["not key=value"]),
])
def test_bad_overrides_raise_one_line_errors_naming_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, override)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_train_config(tmp_path / "missing.yaml", [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad, [])
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_train_config(lst, [])


def test_describe_config_lists_every_field_with_a_description():
    text = describe_config(load_train_config(None, ["preset=vanilla"]))
    for name, field in TrainConfig.model_fields.items():
        assert field.description, name
        assert f"\n{name}: " in text
    assert "grad_clip: null" in text and "[from preset]" in text
    changed = describe_config(load_train_config(None, ["steps=7"]))
    assert "\nsteps: 7  # " in changed and "[default: 100]" in changed


def test_cli_prints_config_and_rejects_bad_keys_with_exit_2(capsys):
    assert main(["train", "--print-config", "--set", "preset=vanilla"]) == 0
    assert "kl_penalty_per_token: false" in capsys.readouterr().out
    assert main(["train", "--set", "klcoef=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'klcoef'" in err and err.count("\n") == 1
