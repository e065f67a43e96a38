"""Coverage: from the metrics a run logs, which failure classes the monitors can see, said out loud.

A trl GRPO run at beta 0 logs no KL; nobody but us logs perplexity. Each detector stays idle without
the metrics it needs, and a user must know what they are NOT protected against
("kl not logged: kl_runaway, kl_explosion, negative_kl off"). `coverage(names)` answers from the
names seen so far; the table is docs/METRICS.md's coverage table, one row per class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureClass:
    name: str
    what: str
    needs: tuple[tuple[str, ...], ...]  # every group must have at least one of its metrics logged
    strengthens: tuple[str, ...] = ()  # witnesses that make it surer or faster when logged


KL = ("kl", "kl_seq")
CLASSES: tuple[FailureClass, ...] = (
    FailureClass("non_finite", "NaN or infinity in any metric", ()),
    FailureClass("stall", "no metrics for too long (hung or dead trainer)", ()),
    FailureClass("pattern_collapse", "the paper's collapse: KL up, answers to the cap, diversity down",
                 (KL, ("response_length", "truncated_fraction"), ("perplexity", "entropy", "distinct_2")),
                 ("reward",)),
    FailureClass("random_tokens", "random tokens / gibberish: uncertainty exploding", (("entropy", "perplexity"),),
                 ("reward", "response_length", "truncated_fraction", "perplexity", "ref_perplexity")),
    FailureClass("repetition", "repetitive answers toward the cap (the paper's collapse without KL)",
                 (("distinct_2",), ("entropy", "perplexity"), ("response_length", "truncated_fraction")), ("reward",)),
    FailureClass("mode_collapse", "every answer the same: entropy near zero, no learning signal left",
                 (("entropy",), ("frac_reward_zero_std", "grad_norm"))),
    FailureClass("length_collapse", "answers collapsing to a few tokens", (("response_length",),),
                 ("entropy", "kl", "kl_seq")),
    FailureClass("length_runaway", "answers running away in length while reward does not rise",
                 (("response_length",), ("reward",)), ("entropy",)),
    FailureClass("pinned_at_cap", "answers pinned at the length cap", (("truncated_fraction",),), ("reward",)),
    FailureClass("reward_collapse", "reward falling to ~0 and staying there", (("reward",),),
                 ("entropy", "response_length", "kl", "perplexity")),
    FailureClass("kl_explosion", "per-token KL to the reference above a nat", (("kl",),)),
    FailureClass("kl_runaway", "KL a large multiple of its established level, still rising", (KL,)),
    FailureClass("negative_kl", "KL far below zero", (KL,)),
    FailureClass("eval_long_tail", "held-out reward distribution turning long-tailed",
                 (("eval_reward_skew", "eval_reward_p90"),)),
)


@dataclass(frozen=True)
class ClassCoverage:
    name: str
    what: str
    armed: bool
    missing: tuple[str, ...]  # for an unarmed class: one metric of each unmet group ("kl or kl_seq")
    weaker_without: tuple[str, ...]  # strengthening metrics not logged

    def to_dict(self) -> dict:
        return {"class": self.name, "what": self.what, "armed": self.armed, "missing": list(self.missing),
                "weaker_without": list(self.weaker_without)}


def coverage(names: Iterable[str]) -> list[ClassCoverage]:
    seen = set(names)
    out = []
    for c in CLASSES:
        unmet = [g for g in c.needs if not seen.intersection(g)]
        out.append(ClassCoverage(c.name, c.what, not unmet, tuple(" or ".join(g) for g in unmet),
                                 tuple(m for m in c.strengthens if m not in seen and not _other_kl_seen(m, seen))))
    return out


def _other_kl_seen(m: str, seen: set[str]) -> bool:
    """kl and kl_seq are one witness in two units: with one logged, the other is not "missing"."""
    return m in KL and bool(seen.intersection(KL))


def gaps(cov: list[ClassCoverage]) -> list[str]:
    """One line per missing metric group and the classes it switches off: "kl not logged: ... off"."""
    by_missing: dict[str, list[str]] = {}
    for c in cov:
        for m in c.missing:
            by_missing.setdefault(m, []).append(c.name)
    return [f"{m} not logged: {', '.join(classes)} off" for m, classes in by_missing.items()]


def summary(names: Iterable[str]) -> str:
    """One line for logs and the journal: armed classes, then what is off and why."""
    cov = coverage(names)
    armed = [c.name for c in cov if c.armed]
    lines = gaps(cov)
    return f"detection armed for {len(armed)}/{len(cov)} failure classes ({', '.join(armed)})" + (
        "; " + "; ".join(lines) if lines else "")


# Every metric name some class needs or is strengthened by: only these are tracked, so a stream
# inventing names (one per step) cannot grow the tracker.
RELEVANT: frozenset[str] = frozenset(
    m for c in CLASSES for m in (*(n for g in c.needs for n in g), *c.strengthens))


def report(names: Iterable[str]) -> dict:
    """The coverage as data, for the journal, /api/status, the live page and replay's JSON record.

    summary: `summary()`'s line; armed / off: class names; gaps: `gaps()`'s lines ("kl not logged:
    kl_explosion off"); metrics: the names seen that coverage looks at; classes: one
    `ClassCoverage.to_dict()` per class, in CLASSES order."""
    seen = set(names)
    cov = coverage(seen)
    return {"summary": summary(seen), "armed": [c.name for c in cov if c.armed],
            "off": [c.name for c in cov if not c.armed], "gaps": gaps(cov),
            "metrics": sorted(seen & RELEVANT), "classes": [c.to_dict() for c in cov]}


def text_block(rep: dict) -> list[str]:
    """The coverage for people, a few lines: what is armed, then one line per missing metric."""
    return [f"coverage: {len(rep['armed'])}/{len(rep['classes'])} failure classes armed "
            f"({', '.join(rep['armed'])})"] + [f"coverage: NOT WATCHED: {g}" for g in rep["gaps"]]


class CoverageTracker:
    """The metric names a run has logged so far, and the coverage they give.

    `observe(metrics)` returns the new report on the first event and whenever a newly logged name
    changes the coverage (a class armed, a missing or strengthening metric now present); None
    otherwise, so callers log and journal only on a change. A value of None ("not measured this
    step") does not count as logged; NaN does (the non-finite check reads it)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._report: dict | None = None

    def observe(self, metrics: dict) -> dict | None:
        new = [n for n, v in metrics.items() if v is not None and n in RELEVANT and n not in self.names]
        if self._report is not None and not new:
            return None
        self.names.update(new)
        rep = report(self.names)
        if self._report is not None and rep["classes"] == self._report["classes"]:
            return None
        self._report = rep
        return rep

    @property
    def current(self) -> dict:
        """The latest report (before any event: what nothing logged arms)."""
        return self._report if self._report is not None else report(())


def doc_table() -> str:
    """docs/METRICS.md's coverage table, from CLASSES (a test keeps the doc equal to it)."""

    def group(ms, many: bool) -> str:
        text = " or ".join(f"`{m}`" for m in ms)
        return f"({text})" if many and len(ms) > 1 else text

    rows = ["| class | what it catches | needs | strengthened by |", "|---|---|---|---|"]
    for c in CLASSES:
        needs = " and ".join(group(g, len(c.needs) > 1) for g in c.needs) or "nothing: always armed"
        rows.append(f"| `{c.name}` | {c.what} | {needs} | {', '.join(f'`{m}`' for m in c.strengthens) or '-'} |")
    return "\n".join(rows) + "\n"
