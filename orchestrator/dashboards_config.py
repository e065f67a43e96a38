"""The `dashboards:` section of a run config: W&B, notifications and the Prometheus exporter.

    dashboards:
      wandb:    {enabled: true, mode: offline, project: rlhf, entity: my-team}
      notify:   {webhook_url_env: SLACK_WEBHOOK_URL, alertmanager_url: http://am:9093}
      exporter: {kl_budget: 0.2}

Every part is optional and validated with the rest of the config (unknown keys are errors
naming the field). A webhook URL is a secret: `webhook_url_env: NAME` reads it from the
environment variable NAME when the config is loaded, so it stays out of RUN/config.yaml
(written 0600 anyway) and out of report.html (which redacts secrets it finds there). orchestrator/default_sinks.py turns it into sinks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlguard.dashboards.notify import NotifyConfig


class WandbSection(BaseModel):
    """Weights & Biases logging. It runs on its own thread: W&B trouble never blocks or stops a run."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Log metrics, alerts and decisions to W&B.")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: files under RUN/wandb, upload later with `wandb sync RUN/wandb`. "
        "online: stream to the W&B server (needs `wandb login` or WANDB_API_KEY).")
    project: str | None = Field(None, description="W&B project (None: 'rlguard').")
    entity: str | None = Field(None, description="W&B team or user (None: the logged-in default).")
    name: str | None = Field(None, description="Run name in W&B (None: the run directory's name).")
    tags: list[str] = Field(default_factory=list, description="W&B tags.")
    close_timeout_s: float = Field(30.0, ge=0, description="At the end of the run, wait at most this long "
                                   "for queued W&B calls; then leave them behind.")

    def sink_config(self):
        from rlguard.dashboards.wandb_sink import WandbSinkConfig

        return WandbSinkConfig(project=self.project, entity=self.entity, mode=self.mode, name=self.name,
                               tags=list(self.tags), close_timeout_s=self.close_timeout_s)


class ExporterSection(BaseModel):
    """The Prometheus exporter served at /metrics on the supervisor's port."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve /metrics (rlguard_* series).")
    kl_budget: float | None = Field(None, gt=0, description="KL budget in nats per token, exported as "
                                    "rlguard_kl_budget for the KL alert rule (None: the rule's 0.2 default).")
    max_extra_metrics: int = Field(100, ge=0, description="Metric names outside docs/METRICS.md exported as "
                                   "rlguard_extra_metric{metric=...}; values of further names are dropped.")


class DashboardsConfig(BaseModel):
    """Where a run is shown and who is told about it."""

    model_config = ConfigDict(extra="forbid")

    wandb: WandbSection = Field(default_factory=WandbSection, description="W&B logging (off by default).")
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="Webhook (Slack-compatible) and "
                                 "Alertmanager notifications of incidents, decisions and the run's end; "
                                 "off until a URL is set.")
    exporter: ExporterSection = Field(default_factory=ExporterSection, description="Prometheus /metrics.")
    live_dashboard: bool = Field(True, description="Serve the live web dashboard at / on the supervisor's port.")


def config_hash(config_dump: dict) -> str:
    """A short, stable fingerprint of a run config (same settings -> same hash), for rlguard_run_info."""
    canonical = json.dumps(config_dump, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
