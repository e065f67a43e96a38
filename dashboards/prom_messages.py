"""The messages rlguard's notifier sends, and how it sends one: Slack-compatible webhook JSON,
Alertmanager API v2 alerts, and one HTTP POST whose failure says whether a retry can help.
Pure functions; the queue, the thread and the retry loop are in dashboards/notify.py."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SEVERITY_COLORS = {"critical": "#d93025", "warning": "#f9a825", "info": "#1e88e5"}


@dataclass(frozen=True)
class Notification:
    """One message, before it is rendered for a target.

    kind: "alert", "decision", "state" or "restart" (becomes the Alertmanager alertname).
    severity: "critical", "warning" or "info".
    title: the one-line summary.
    fields: the numbers, in display order.
    labels: identifying labels for Alertmanager (grouping, silences, routing).
    """

    kind: str
    severity: str
    title: str
    detail: str = ""
    fields: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)


class HTTPFailure(Exception):
    """A try that failed; `retry` says whether another try can help, `wait_s` a server's hint."""

    def __init__(self, reason: str, retry: bool, wait_s: float | None = None):
        super().__init__(reason)
        self.retry = retry
        self.wait_s = wait_s


def _strict_json(value):
    """`value` with non-finite floats as strings: "NaN" is not JSON and receivers reject it."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def post_json(url: str, payload, timeout_s: float) -> int:
    """POST `payload` as JSON; the HTTP status on 2xx, HTTPFailure otherwise."""
    body = json.dumps(_strict_json(payload), allow_nan=False, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        retry = e.code >= 500 or e.code == 429
        wait = e.headers.get("Retry-After") if e.headers else None
        try:
            wait_s = float(wait) if wait is not None else None
        except ValueError:
            wait_s = None
        raise HTTPFailure(f"HTTP {e.code} {e.reason}", retry, wait_s) from None
    except (urllib.error.URLError, OSError) as e:  # refused, reset, DNS, timeout
        raise HTTPFailure(f"unreachable: {getattr(e, 'reason', e)}", retry=True) from None


def slack_payload(note: Notification, dashboard_url: str | None = None) -> dict:
    """Slack incoming-webhook JSON; also readable by Mattermost, Rocket.Chat and plain receivers."""
    text = note.title + (f"\n{note.detail}" if note.detail else "")
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in note.fields.items()]
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    # Slack allows at most 10 fields per section block.
    blocks += [{"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)]
    if dashboard_url:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{dashboard_url}|dashboard>"}]}
        )
    return {
        "text": text,
        "blocks": blocks,
        "attachments": [
            {
                "color": SEVERITY_COLORS.get(note.severity, SEVERITY_COLORS["info"]),
                "fields": [{"title": k, "value": str(v), "short": True} for k, v in note.fields.items()],
            }
        ],
        "rlguard": {
            "kind": note.kind,
            "severity": note.severity,
            "title": note.title,
            "detail": note.detail,
            "fields": note.fields,
            "labels": note.labels,
        },
    }


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def alertmanager_payload(
    note: Notification, run_id: str, now: float, ttl_s: float, dashboard_url: str | None = None
) -> list[dict]:
    """The body of POST /api/v2/alerts: a list with one alert."""
    labels = {"severity": note.severity, "run_id": run_id, "source": "rlguard", **note.labels}
    labels = {k: str(v) for k, v in labels.items() if v not in (None, "")}
    alert = {
        "labels": labels,
        "annotations": {
            "summary": note.title,
            "description": note.detail or note.title,
            **{k.replace(" ", "_"): str(v) for k, v in note.fields.items()},
        },
        "startsAt": _rfc3339(now),
        "endsAt": (datetime.fromtimestamp(now, UTC) + timedelta(seconds=ttl_s))
        .isoformat()
        .replace("+00:00", "Z"),
    }
    if dashboard_url:
        alert["generatorURL"] = dashboard_url
    return [alert]
