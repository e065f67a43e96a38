"""Building the supervisor's brains (monitors, policies) from the run config's sections.

Errors surface as ConfigError naming the section, so `rlguard run` can print one clear
message and exit 2 before anything starts.
"""

from __future__ import annotations

from rlguard.monitors.config import MonitorConfig, MonitorConfigError, monitor_config_from_dict
from rlguard.monitors.stack import MonitorStack
from rlguard.orchestrator.spec import ConfigError, RunConfig
from rlguard.policies.config import PolicyConfig, PolicyConfigError, policy_config_from_dict
from rlguard.policies.engine import PolicyEngine


def build_monitors(section: MonitorConfig | dict):
    """The detector stack of a run config's (typed) `monitors:` section; a mapping is validated first."""
    if not isinstance(section, MonitorConfig):
        try:
            section = monitor_config_from_dict(section, "monitors")
        except MonitorConfigError as e:
            raise ConfigError(str(e)) from None
    return MonitorStack(section)


def build_engine(section: PolicyConfig | dict):
    """The policy engine of a run config's (typed) `policies:` section; a mapping is validated first."""
    if not isinstance(section, PolicyConfig):
        try:
            section = policy_config_from_dict(section, "policies")
        except PolicyConfigError as e:
            raise ConfigError(str(e)) from None
    return PolicyEngine(section)


def validate_trainer_section(config: RunConfig) -> None:
    """For the built-in worker: check the trainer section now, not minutes later in the child."""
    if config.supervisor.command is not None:
        return  # a custom command owns its own configuration
    try:
        from rlguard.ppo.config import ConfigError as TrainConfigError
        from rlguard.ppo.config import TrainConfig
    except ImportError:
        return
    from pydantic import ValidationError

    from rlguard.orchestrator.spec import format_validation_error

    try:
        TrainConfig.model_validate(config.trainer)
    except ValidationError as e:
        raise ConfigError("trainer section:\n" + format_validation_error(e, "trainer.")) from None
    except TrainConfigError as e:
        raise ConfigError(f"trainer section: {e}") from None


def validate_all(config: RunConfig) -> None:
    build_monitors(config.monitors)
    build_engine(config.policies)
    validate_trainer_section(config)
