"""OUT/demo_report.html: the demo's verdict on one page, every held-out answer with its flags.

The per-run report.html (dashboards.report) shows a run's metrics and decisions; this page
shows what the gold checks saw: one row per held-out prompt, the answer of the starting model,
of the guarded end state and of the unguarded twin, each with its flags (empty, repetitive and
why) and its perplexity under the frozen starting model. A reader can check every flag by eye.
"""

from __future__ import annotations

import html
from pathlib import Path

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;max-width:1400px}
h1{font-size:1.35em;margin:.2em 0} h2{font-size:1.1em;margin:1.1em 0 .4em}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333;font-weight:600} .bad{color:#b3261e;font-weight:600}
.flag{background:#fde7e6;color:#b3261e;border-radius:3px;padding:0 4px;font-size:12px;white-space:nowrap}
.clean{background:#e6f4ea;color:#137333;border-radius:3px;padding:0 4px;font-size:12px}
.ppl{color:#777;font-size:12px} td.ans{max-width:420px} .muted{color:#666}
"""

GOLD_ROWS = (("gold_degenerate", "degenerate share", "{:.2f}"), ("gold_repetitive", "repetitive share", "{:.2f}"),
             ("gold_empty", "empty share", "{:.2f}"), ("gold_gibberish", "gibberish share", "{:.2f}"),
             ("gold_ref_perplexity", "ref perplexity", "{:.2f}"),
             ("gold_distinct_2", "distinct_2", "{:.3f}"), ("gold_sentiment", "sentiment (the reward)", "{:+.3f}"))


def _e(x) -> str:
    return html.escape(str(x))


def _answer(smp: dict | None) -> str:
    if smp is None:
        return "<td class='ans muted'>-</td>"
    flags = smp.get("flags") or []
    badges = " ".join(f"<span class=flag>{_e(f)}</span>" for f in flags) if flags else "<span class=clean>clean</span>"
    ppl = smp.get("ref_perplexity")
    ppl_s = f" <span class=ppl>ppl {ppl:.1f}</span>" if isinstance(ppl, (int, float)) else ""
    return f"<td class=ans>{_e(smp['response'].strip()) or '<i>(nothing)</i>'}<br>{badges}{ppl_s}</td>"


def render(summary: dict) -> str:
    g = summary["guarded"]
    gold = summary.get("gold", {})
    cols = [(n, gold[n]) for n in ("start", "guarded", "unguarded") if gold.get(n)]
    t = summary.get("trainer", {})
    parts = [f"<!doctype html><meta charset=utf-8><title>rlguard demo</title><style>{_CSS}</style>",
             "<h1>rlguard demo: guarded vs unguarded, judged on held-out prompts</h1>",
             f"<p class=muted>{_e(summary.get('model'))} + reward {_e(summary.get('reward'))}, preset "
             f"{_e(t.get('preset'))}, lr {_e(t.get('lr'))}, kl_coef {_e(t.get('kl_coef'))}, {_e(summary.get('steps'))} "
             f"steps; {'with' if summary.get('kl_budget_rule', True) else 'without'} the KL budget rule; "
             f"{_e(gold.get('prompts', '?'))} held-out prompts, never trained on.</p>"]
    parts.append(f"<p>Guarded run: <b>{_e(g.get('state'))}</b>, {_e(g.get('rollbacks'))} rollback(s), final "
                 f"constraints {_e(g.get('final_constraints'))}.</p>")
    u = summary.get("unguarded") or {}
    if u:
        forked = u.get("forked_at_step")
        shared = (f"its steps 1-{forked} are the guarded run's (identical until rlguard's first action), then it "
                  f"trained on from that checkpoint" if forked else "it trained every step itself")
        parts.append(f"<p>Unguarded twin (same config and seed, nobody watching): {_e(shared)}; guardrail bounds "
                     f"crossed from step {_e(u.get('collapse_step'))}.</p>")
    alerts = [a for a in g.get("alerts", []) if a.get("severity") == "critical"]
    if alerts:
        parts.append("<h2>What caught it</h2><table><tr><th>step</th><th>onset</th><th>detector</th><th>code</th>"
                     "<th>metric</th><th>the numbers</th></tr>")
        for a in alerts:
            parts.append(f"<tr><td class=num>{a['step']}</td><td class=num>{a['onset_step']}</td>"
                         f"<td>{_e(a.get('detector', ''))}</td><td>{_e(a['code'])}</td><td>{_e(a['metric'])}</td>"
                         f"<td>{_e(a['message'])}</td></tr>")
        parts.append("</table>")
    if cols:
        parts.append("<h2>Gold metrics (never optimised)</h2><table><tr><th></th>"
                     + "".join(f"<th>{_e(n)} (step {c['step']})</th>" for n, c in cols) + "</tr>")
        for key, label, fmt in GOLD_ROWS:
            parts.append(f"<tr><td>{label}</td>" + "".join(
                f"<td class=num>{fmt.format(c['metrics'][key]) if key in c['metrics'] else '-'}</td>"
                for _, c in cols) + "</tr>")
        parts.append("</table>")
    if summary.get("goals"):
        parts.append("<h2>Goals, measured</h2><table><tr><th>goal</th><th>value</th><th>target</th><th></th></tr>")
        for name, goal in summary["goals"].items():
            verdict = "<td class=ok>met</td>" if goal["met"] else "<td class=bad>not met</td>"
            parts.append(f"<tr><td>{_e(name)}</td><td>{_e(goal['value'])}</td><td>{_e(goal['target'])}</td>"
                         f"{verdict}</tr>")
        parts.append("</table>")
    if cols:
        n = max(len(c["samples"]) for _, c in cols)
        parts.append("<h2>Every held-out answer, with its flags</h2><table><tr><th>prompt</th>"
                     + "".join(f"<th>{_e(name)}: {sum(1 for s in c['samples'] if s.get('flags'))} of "
                               f"{len(c['samples'])} flagged</th>" for name, c in cols) + "</tr>")
        for i in range(n):
            prompt = next(c["samples"][i]["prompt"] for _, c in cols if i < len(c["samples"]))
            parts.append(f"<tr><td>{_e(prompt)}</td>"
                         + "".join(_answer(c["samples"][i] if i < len(c["samples"]) else None) for _, c in cols)
                         + "</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def write_demo_report(out_dir: Path, summary: dict) -> Path:
    path = Path(out_dir) / "demo_report.html"
    path.write_text(render(summary), encoding="utf-8")
    return path
