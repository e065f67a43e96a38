"""The sinks and pages `rlguard run` plugs in by default, from the config's `dashboards:` section.

    exporter        Prometheus /metrics (rlguard_run_info carries config_hash; kl_budget exported)
    live dashboard  the web page at / (history preloaded from the journal on resume)
    notify          webhook / Alertmanager messages, when a URL is configured; failures counted
                    by the exporter (rlguard_notifications_failed_total)
    wandb           W&B logging when enabled (offline under RUN/wandb by default)

Each is optional: a dashboard that is missing or fails to build is logged and left out,
never a reason for the run not to start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlguard.orchestrator.dashboards_config import DashboardsConfig, config_hash

log = logging.getLogger("rlguard.default_sinks")


class _ControlAvailable:
    """Tells the dashboard page that this app serves the control API (/api/*): show the buttons."""


def default_sinks_and_routes(run_dir: Path, config, *, resume: bool = False) -> tuple[list, list]:
    """The sinks and extra HTTP routes for a run, as its `dashboards:` section asks."""
    sinks: list = []
    routes: list = []
    run_id = Path(run_dir).resolve().name
    dash: DashboardsConfig = getattr(config, "dashboards", None) or DashboardsConfig()
    dump = config.model_dump(mode="json")
    exporter = None
    if dash.exporter.enabled:
        try:
            from rlguard.dashboards.exporter import RunExporter

            info = {"preset": str(config.trainer.get("preset", "")), "model": str(config.trainer.get("model", "")),
                    "config_hash": config_hash(dump)}
            exporter = RunExporter(run_id, info=info, kl_budget=dash.exporter.kl_budget,
                                   max_extra_metrics=dash.exporter.max_extra_metrics)
            sinks.append(exporter)
            routes.append(exporter.asgi_route())
        except ImportError:
            pass
        except Exception:
            log.exception("Prometheus exporter not available for this run")
    if dash.live_dashboard:
        try:
            from rlguard.dashboards.history import RunHistory
            from rlguard.dashboards.web.app import dashboard_routes

            journal = Path(run_dir) / "journal.jsonl"
            history = RunHistory.from_run_dir(run_dir) if resume and journal.exists() else RunHistory()
            sinks.append(history)
            routes.extend(dashboard_routes(history, control=_ControlAvailable()))
        except ImportError:
            pass
        except Exception:
            log.exception("live dashboard not available for this run")
    if dash.notify.resolved_webhook_url or dash.notify.alertmanager_url:
        try:
            from rlguard.dashboards.notify import Notifier

            on_failure = exporter.notification_failed if exporter is not None else None
            sinks.append(Notifier(run_id, dash.notify, on_failure=on_failure))
        except Exception:
            log.exception("notifications not available for this run")
    if dash.wandb.enabled:
        try:
            from rlguard.dashboards.wandb_sink import WandbSink

            # WandbSink starts W&B lazily on its own thread: nothing here waits for it.
            sinks.append(WandbSink(run_dir, dash.wandb.sink_config(), run_config=dump))
        except Exception:
            log.exception("W&B logging not available for this run")
    return sinks, routes
