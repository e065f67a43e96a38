"""HTML building blocks of report.html: one self-contained file (inline CSS, PNGs as data
URIs), so it opens offline, attaches to a ticket, and survives the run directory moving.
Every piece of run data goes through `esc`: prompts and responses are model output."""

from __future__ import annotations

import base64
import html

CSS = """
:root { --ink:#1d2330; --muted:#6b7385; --line:#e2e5eb; --bg:#f6f7f9; --live:#2563eb; --rolled:#a3a9b6;
  --warn:#f59e0b; --crit:#dc2626; --rollback:#7c3aed; --halt:#7f1d1d; --ok:#16a34a; --nan:#be123c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 "DejaVu Sans", system-ui, sans-serif; }
header { background:#111827; color:#f9fafb; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:20px; } header .sub { color:#9ca3af; font-size:12px; }
main { max-width:1400px; margin:0 auto; padding:8px 28px 40px; }
h2 { font-size:15px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); margin:28px 0 10px;
  border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { font-size:15px; margin:0 0 6px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin-top:16px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:130px; }
.card .v { font-size:20px; font-weight:700; } .card .k { color:var(--muted); font-size:11px; text-transform:uppercase; }
.card.bad .v { color:var(--crit); } .card.warn .v { color:#b45309; } .card.good .v { color:var(--ok); }
.grid { display:grid; gap:12px; } .g2 { grid-template-columns:repeat(2, minmax(0,1fr)); }
.g3 { grid-template-columns:repeat(3, minmax(0,1fr)); }
@media (max-width:1000px) { .g2, .g3 { grid-template-columns:1fr; } }
.plot { background:#fff; border:1px solid var(--line); border-radius:8px; padding:6px; }
.plot img { width:100%; height:auto; display:block; }
.legend { color:var(--muted); font-size:12px; display:flex; flex-wrap:wrap; gap:4px 16px; align-items:center; }
.sw { display:inline-block; width:20px; height:3px; margin-right:5px; vertical-align:middle; }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f3f4f6; color:var(--muted); font-size:11px; text-transform:uppercase; letter-spacing:.4px; }
td.num { font-variant-numeric:tabular-nums; white-space:nowrap; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:11px; font-weight:600; background:#e5e7eb; }
.pill.critical, .pill.halt, .pill.suspect, .pill.corrupt { background:#fee2e2; color:#991b1b; }
.pill.warning, .pill.pending, .pill.tighten { background:#fef3c7; color:#92400e; }
.pill.rollback { background:#ede9fe; color:#5b21b6; } .pill.healthy, .pill.relax { background:#dcfce7; color:#166534; }
.incident { background:#fff; border:1px solid var(--line); border-left:4px solid var(--rollback); border-radius:8px;
  padding:12px 16px; margin:12px 0; }
.incident.halt { border-left-color:var(--halt); } .incident.alert { border-left-color:var(--crit); }
.incident ul { margin:4px 0 8px 18px; padding:0; }
.samples { display:grid; grid-template-columns:repeat(3, minmax(0,1fr)); gap:10px; margin-top:8px; }
.samples .col h4 { margin:0 0 4px; font-size:12px; color:var(--muted); text-transform:uppercase; }
.sample { border:1px solid var(--line); border-radius:6px; padding:6px 8px; margin-bottom:6px; background:#fafafa; font-size:12px; }
.sample .meta { color:var(--muted); font-size:11px; }
.sample .prompt { color:#374151; font-style:italic; white-space:pre-wrap; word-break:break-word; }
.sample .resp { white-space:pre-wrap; word-break:break-word; margin-top:3px; }
.none { color:var(--muted); font-style:italic; }
.muted { color:var(--muted); }
pre { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px; overflow:auto; font-size:12px; }
.rolled { color:var(--muted); }
"""

LEGEND = [("#2563eb", "kept run"), ("#a3a9b6", "rolled back (undone)"), ("#f59e0b", "warning alert"),
          ("#dc2626", "critical alert (shaded: onset → detection)"), ("#7c3aed", "rollback (arrow: to checkpoint)"),
          ("#7f1d1d", "halt"), ("#be123c", "× non-finite value"), ("#16a34a", "| checkpoint (healthy/pending/suspect)")]


def esc(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def page(title: str, subtitle: str, body: str) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><div class=\"sub\">{esc(subtitle)}</div></header>"
            f"<main>{body}</main></body></html>\n")


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<div class=\"plot\"><img alt=\"{esc(alt)}\" src=\"data:image/png;base64,{data}\"></div>"


def legend() -> str:
    items = "".join(f"<span><span class=\"sw\" style=\"background:{c}\"></span>{esc(t)}</span>" for c, t in LEGEND)
    return f"<p class=\"legend\">{items}</p>"


def pill(text) -> str:
    return f"<span class=\"pill {esc(text)}\">{esc(text)}</span>"


def table(headers: list[str], rows: list[list[str]], empty: str = "none") -> str:
    """rows hold HTML cells (callers escape data with esc)."""
    if not rows:
        return f"<p class=\"none\">{esc(empty)}</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards(items: list[tuple[str, object, str]]) -> str:
    """(label, value, tone) with tone in '', 'good', 'warn', 'bad'."""
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card {tone}\"><div class=\"v\">{esc(v)}</div><div class=\"k\">{esc(k)}</div></div>"
        for k, v, tone in items) + "</div>"


def sample_box(s: dict, max_chars: int = 700) -> str:
    resp = str(s.get("response", ""))
    if len(resp) > max_chars:
        resp = resp[:max_chars] + f"… [{len(resp) - max_chars} more characters]"
    reward = s.get("reward")
    reward_txt = f" · reward {reward:.3g}" if isinstance(reward, (int, float)) and not isinstance(reward, bool) else ""
    return (f"<div class=\"sample\"><div class=\"meta\">step {esc(s.get('step'))}{esc(reward_txt)} · "
            f"{len(str(s.get('response', '')))} chars</div>"
            f"<div class=\"prompt\">{esc(str(s.get('prompt', ''))[:300])}</div>"
            f"<div class=\"resp\">{esc(resp)}</div></div>")


def sample_columns(columns: list[tuple[str, list[dict]]]) -> str:
    out = []
    for title, samples in columns:
        inner = "".join(sample_box(s) for s in samples) or "<p class=\"none\">no samples recorded</p>"
        out.append(f"<div class=\"col\"><h4>{esc(title)}</h4>{inner}</div>")
    return "<div class=\"samples\">" + "".join(out) + "</div>"
