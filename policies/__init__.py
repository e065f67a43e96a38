"""Alerts in, decisions out: the pure brains of the supervisor (no I/O, no torch).

config.py       PolicyConfig (YAML, one description per field), load_policy_config
view.py         RunView / CheckpointView / Health, and the checkpoint health rule
constraints.py  tighten / relax arithmetic within bounds
engine.py       PolicyEngine: the escalation ladder, cooldowns, rollback budget, relax
replay.py       ReplaySimulator: the policies on a recorded stream (`rlguard replay`)
decision.py     Decision / Action, the shared output type
"""
