"""The built-in PPO-max RLHF trainer (the default rlguard workload).

    config.py     TrainConfig, presets, load_train_config      trainer.py   PPOTrainer
    ppo_max.py    the PPO-max math (pure torch functions)       metrics.py   METRICS.md formulas
    rollout.py    seeded sampling and token scoring             models.py    policy / reference / critic
    rewards.py    sentiment, module:function, HF reward models  prompts.py   prompt files, data cursor
    state_io.py   optimizer/RNG state without pickle            cli.py       `rlguard train`
    tiny.py       tiny random models for tests                  checkpoint_files.py  atomic checkpoints
"""
