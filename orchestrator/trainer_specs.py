"""Config sections of the trainer launchers: `supervisor.launcher: verl | openrlhf`.

    supervisor:
      launcher: verl
      rollback_mode: restart            # the only mode: these trainers take no commands
      verl:
        overrides: [data.train_files=..., algorithm.adv_estimator=grpo, ...]   # Hydra overrides

    supervisor:
      launcher: openrlhf
      openrlhf:
        args: [--actor.model_name_or_path, Qwen/..., --ckpt.save_steps, "20", ...]

The launcher adds what supervision needs (its log file, the checkpoint directory, retention
off, the resume target, the tightened knobs) to the user's overrides: see
orchestrator/verl_launch.py and orchestrator/openrlhf_launch.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VerlSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        default_factory=lambda: ["{python}", "-m", "verl.trainer.main_ppo"],
        description="How to start verl's PPO driver ({python}: this interpreter). Its Hydra overrides follow.")
    overrides: list[str] = Field(default_factory=list, description="The user's Hydra overrides (key=value, "
                                 "+key=value, ++key=value), passed as given except the keys the launcher owns.")
    checkpoint_dir: str | None = Field(None, description="trainer.default_local_dir. Default: the one in "
                                       "`overrides`, else RUN/verl-checkpoints. Multi-node: on shared storage.")
    poll_s: float = Field(0.5, gt=0, description="How often the file logger and the checkpoint directory are read.")


class OpenRLHFSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        default_factory=lambda: ["{python}", "-m", "openrlhf.cli.train_ppo_ray"],
        description="How to start OpenRLHF's PPO driver ({python}: this interpreter). Its flags follow.")
    args: list[str] = Field(default_factory=list, description="The user's flags (--group.name value ...), "
                            "passed as given except the ones the launcher owns.")
    checkpoint_dir: str | None = Field(None, description="--ckpt.path. Default: the one in `args`, else "
                                       "RUN/openrlhf-checkpoints. Multi-node: on shared storage.")
    poll_s: float = Field(0.5, gt=0, description="How often the driver's log and the checkpoint tags are read.")
