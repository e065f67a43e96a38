"""The report's plots: matplotlib (Agg) PNGs of a RunHistory's metrics with the incidents
drawn on the curves they interrupted.

On every plot: the run's surviving lineage in blue; steps that a rollback undid in grey,
dashed (they happened, then were thrown away); alerts as dashed vertical lines (amber
warning, red critical) with the estimated onset..detection window shaded; rollbacks as a
purple line with an arrow back to the checkpoint they restored; a halt as a dark red line;
non-finite values as red crosses along the top; checkpoints as ticks along the bottom
coloured by health.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # never a display: reports are written by servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from rlguard.dashboards.history import RunHistory  # noqa: E402

COLORS = {"live": "#2563eb", "rolled": "#a3a9b6", "warning": "#f59e0b", "critical": "#dc2626",
          "rollback": "#7c3aed", "halt": "#7f1d1d", "nan": "#be123c", "healthy": "#16a34a",
          "pending": "#d97706", "suspect": "#dc2626", "constraint": "#0f766e"}
PLOT_POINTS = 3000  # per metric: min/max-preserving, so spikes survive at any run length
MAX_ALERT_MARKERS = 300  # per plot


def _style(ax, title: str) -> None:
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold", color="#1d2330")
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(labelsize=8, colors="#4b5563")
    ax.set_xlabel("step", fontsize=8, color="#6b7385")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def draw_incidents(ax, history: RunHistory, metric: str | None, all_alerts: bool = False) -> None:
    """Alert, rollback, halt and checkpoint markers on `ax` (x in steps). Alerts: those on
    `metric`, plus every critical one when `all_alerts` (the four main plots)."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    alerts = [a for a in history.alerts
              if a.get("metric") == metric or (all_alerts and a.get("severity") == "critical")]
    if len(alerts) > MAX_ALERT_MARKERS:
        # A chatty detector must not bury the plot (or take minutes): critical ones first.
        alerts = sorted(alerts, key=lambda a: a.get("severity") != "critical")[:MAX_ALERT_MARKERS]
    for a in alerts:
        color = COLORS["critical" if a.get("severity") == "critical" else "warning"]
        onset = a.get("onset_step", a["step"])
        if onset < a["step"]:
            ax.axvspan(onset, a["step"], color=color, alpha=0.10, linewidth=0)
        ax.axvline(a["step"], color=color, linestyle=(0, (4, 3)), linewidth=1.0, alpha=0.9)
    for d in history.decisions:
        if d["action"] == "rollback":
            ax.axvline(d["step"], color=COLORS["rollback"], linewidth=1.4)
            if d.get("target_step") is not None:
                ax.annotate("", xy=(d["target_step"], 0.93), xytext=(d["step"], 0.93), xycoords=top,
                            arrowprops={"arrowstyle": "-|>", "color": COLORS["rollback"], "lw": 1.2})
                ax.text(d["step"], 0.96, f" ↶{d['target_step']}", transform=top, fontsize=7,
                        color=COLORS["rollback"], va="bottom", ha="left")
        elif d["action"] == "halt":
            ax.axvline(d["step"], color=COLORS["halt"], linewidth=2.0)
            ax.text(d["step"], 0.96, " halt", transform=top, fontsize=7, color=COLORS["halt"], va="bottom")
    for c in history.checkpoints.values():
        ax.plot([c["step"]], [0.0], marker="|", markersize=9, markeredgewidth=2, transform=top, clip_on=False,
                color=COLORS.get(c.get("health", ""), "#9ca3af"))


def draw_metric(ax, history: RunHistory, metric: str) -> None:
    """The metric's curves: kept segments blue, rolled-back parts grey dashed, NaN/inf crosses."""
    data = history.downsample(metric, PLOT_POINTS)
    kept: list[tuple[int, float]] = []
    for s in data["series"]:
        if s["rolled_back"] and s["steps"]:
            ax.plot(s["steps"], s["values"], color=COLORS["rolled"], linewidth=1.0, linestyle=(0, (4, 2)))
        elif not s["rolled_back"]:
            kept += zip(s["steps"], s["values"])
    if kept:
        # The kept parts of all segments are disjoint in steps: together, the surviving run.
        kept.sort()
        ax.plot([k[0] for k in kept], [k[1] for k in kept], color=COLORS["live"], linewidth=1.3)
    if data["nonfinite"]:
        top = blended_transform_factory(ax.transData, ax.transAxes)
        xs = [p["step"] for p in data["nonfinite"]]
        ax.scatter(xs, [0.985] * len(xs), marker="x", s=28, color=COLORS["nan"], transform=top, clip_on=False,
                   zorder=5)
        ax.text(0.99, 0.80, f"{data['nonfinite_count']} non-finite", transform=ax.transAxes, ha="right",
                fontsize=7, color=COLORS["nan"])


def metric_png(history: RunHistory, metric: str, big: bool) -> bytes:
    fig, ax = plt.subplots(figsize=(6.6, 2.9) if big else (4.4, 2.3))
    draw_metric(ax, history, metric)
    draw_incidents(ax, history, metric, all_alerts=big)
    _style(ax, metric)
    return _png(fig)


def constraints_png(history: RunHistory, names: list[str]) -> bytes | None:
    """kl_coef / clip_range / lr over time, one panel each, with the decisions that moved them.

    The stream's own values are drawn when the producer emits them; otherwise the values
    are rebuilt from the checkpoints' manifests and the decisions' params (a step line)."""
    panels = []
    for name in names:
        if name in history.columns:
            panels.append((name, None))
            continue
        points = sorted((c["step"], c["value"]) for c in history.constraint_changes if c["name"] == name)
        if points:
            panels.append((name, points))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 2.3), squeeze=False)
    for ax, (name, points) in zip(axes[0], panels):
        if points is None:
            draw_metric(ax, history, name)
        else:
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", color=COLORS["constraint"], linewidth=1.4, marker="o", markersize=3)
        for c in history.constraint_changes:
            if c["name"] == name:
                ax.axvline(c["step"], color=COLORS["rollback" if c["action"] == "rollback" else "constraint"],
                           linewidth=0.8, linestyle=":")
        draw_incidents(ax, history, None)
        _style(ax, name)
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.tight_layout()
    return _png(fig)
