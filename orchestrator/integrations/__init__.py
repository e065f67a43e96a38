"""Adapters that put trainers rlguard did not write under its supervision.

- `metric_names`: other trainers' metric names -> docs/METRICS.md names (trl, verl, OpenRLHF).
- `trl_callback.RLGuardCallback`: trl GRPOTrainer / RLOOTrainer (any transformers Trainer) via
  the worker SDK: metrics per step, tighten/save/rollback/stop commands at step boundaries.

Imported lazily so that `from orchestrator.integrations import map_metrics` needs no torch.
"""

from rlguard.orchestrator.integrations.metric_names import map_metrics, table_for

__all__ = ["RLGuardCallback", "map_metrics", "table_for"]


def __getattr__(name: str):
    if name == "RLGuardCallback":
        from rlguard.orchestrator.integrations.trl_callback import RLGuardCallback

        return RLGuardCallback
    raise AttributeError(name)
