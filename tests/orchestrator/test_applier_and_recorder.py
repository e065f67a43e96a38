"""The one applier of a decision and the one recorder: modes read once, journal before sinks."""

from __future__ import annotations

import json

import pytest

from rlguard.monitors.alerts import Alert, Severity
from rlguard.orchestrator.acting import Applier, DecisionSource
from rlguard.orchestrator.journal import Journal
from rlguard.orchestrator.recorder import Recorder
from rlguard.orchestrator.sinks import SinkFanout
from rlguard.policies.decision import Action, Decision, Disposition, Mode, Phase, disposition

ROLLBACK = dict(action=Action.ROLLBACK, step=40, reason="kl collapse", target_step=20)


@pytest.mark.parametrize("mode, can_ask, on_timeout_approve, expected", [
    (Mode.AUTO, False, False, Disposition.ACT),
    (Mode.ADVISE, True, True, Disposition.SKIP),
    (Mode.APPROVE, True, False, Disposition.ASK),
    (Mode.APPROVE, False, True, Disposition.ACT),   # watch/replay: nobody answers, the timeout rule approves
    (Mode.APPROVE, False, False, Disposition.SKIP),
])
def test_the_mode_is_read_once_for_every_caller(mode, can_ask, on_timeout_approve, expected):
    how, why = disposition(Decision(**ROLLBACK, mode=mode), someone_can_approve=can_ask,
                           approve_on_timeout=on_timeout_approve)
    assert how is expected
    assert (why != "") == (how is Disposition.SKIP)


def test_a_notify_is_always_carried_out_and_a_mode_is_checked():
    notify = Decision(Action.NOTIFY, 3, "fyi", mode="advise")
    assert disposition(notify, someone_can_approve=False, approve_on_timeout=False)[0] is Disposition.ACT
    assert Decision(**ROLLBACK, mode="approve").mode is Mode.APPROVE  # a policy config holds it as text
    with pytest.raises(ValueError, match="mode='sometimes'"):
        Decision(**ROLLBACK, mode="sometimes")


class Calls:
    """A sink that records what it was told, and the journal length at that moment."""

    def __init__(self, journal_path):
        self.journal_path = journal_path
        self.seen: list[tuple] = []

    def _lines(self) -> int:
        return len(self.journal_path.read_text().splitlines())

    def on_alert(self, alert):
        self.seen.append(("alert", alert.code, self._lines()))

    def on_decision(self, decision, phase, outcome, *, decision_id=None, reason=None):
        self.seen.append(("decision", phase, decision_id, self._lines()))


class Exploding:
    def on_alert(self, alert):
        raise RuntimeError("sink down")

    def on_decision(self, decision, phase, outcome):
        raise RuntimeError("sink down")


def make(tmp_path, *, act=None, ask=None, on_timeout=False):
    journal = Journal(tmp_path / "journal.jsonl")
    calls = Calls(tmp_path / "journal.jsonl")
    recorder = Recorder(journal, SinkFanout([Exploding(), calls]))
    acted: list = []

    def default_act(d, did, source):
        acted.append((d.action, did, source))
        recorder.outcome(d, did, Phase.DONE, "done by the test")

    applier = Applier(recorder, act=act or default_act, finish=recorder.outcome, ask=ask,
                      approve_on_timeout=on_timeout)
    return journal, calls, applier, acted


def entries(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]


def test_journal_first_then_sinks_and_a_failing_sink_loses_nothing(tmp_path):
    journal, calls, applier, acted = make(tmp_path)
    alert = Alert("kl_explosion", "regimes", "kl", 40, Severity.CRITICAL, 35, "kl 9.1")
    applier.recorder.alerts([alert])
    did = applier.apply(Decision(**ROLLBACK), alerts=[alert], constraints={"kl_coef": 0.05},
                        target={"step": 20})
    # each sink call came after its journal line was written
    assert calls.seen == [("alert", "kl_explosion", 1), ("decision", "decided", did, 2),
                          ("decision", "done", did, 3)]
    kinds = [(e["kind"], e.get("phase")) for e in entries(tmp_path)]
    assert kinds == [("alert", None), ("decision", "decided"), ("decision", "done")]
    assert acted == [(Action.ROLLBACK, did, DecisionSource.POLICY)]


def test_advise_is_journaled_skipped_and_nothing_is_done(tmp_path):
    _, _, applier, acted = make(tmp_path)
    applier.apply(Decision(**ROLLBACK, mode="advise"))
    assert acted == []
    done = entries(tmp_path)[-1]
    assert (done["phase"], done["outcome"]["message"]) == ("skipped", "advise mode: would rollback; not carried out")


def test_approve_asks_where_someone_can_answer_and_decides_by_the_timeout_rule_where_nobody_can(tmp_path):
    asked = []
    for sub in "abc":
        (tmp_path / sub).mkdir()
    _, _, applier, acted = make(tmp_path / "a", ask=lambda d, did: asked.append(did))
    did = applier.apply(Decision(**ROLLBACK, mode="approve"))
    assert asked == [did] and acted == []
    assert entries(tmp_path / "a")[-1]["phase"] == "decided"  # open until the answer

    _, _, applier, acted = make(tmp_path / "b", on_timeout=True)
    applier.apply(Decision(**ROLLBACK, mode="approve"))
    assert [a for a, _, _ in acted] == [Action.ROLLBACK]

    _, _, applier, acted = make(tmp_path / "c", on_timeout=False)
    applier.apply(Decision(**ROLLBACK, mode="approve"))
    assert acted == [] and entries(tmp_path / "c")[-1]["phase"] == "skipped"


def test_decisions_not_made_by_the_policies_are_journaled_by_source_and_kept_apart(tmp_path):
    _, _, applier, _ = make(tmp_path)
    by_operator = applier.apply(Decision(Action.HALT, 5, "operator halt"), source=DecisionSource.OPERATOR)
    by_supervisor = applier.apply(Decision(Action.HALT, 6, "rollback impossible"),
                                  source=DecisionSource.SUPERVISOR)
    by_policy = applier.apply(Decision(Action.NOTIFY, 7, "fyi"))
    decided = {e["decision_id"]: e["source"] for e in entries(tmp_path) if e.get("phase") == "decided"}
    assert decided == {by_operator: "operator", by_supervisor: "policy", by_policy: "policy"}
    assert applier.not_by_policy == {by_operator, by_supervisor}  # the engine never learns their outcomes
