"""Operator requests reach the journal only once their body is valid, and only the checked
fields: a malformed or oversized body is answered 400 and leaves no trace to replay."""

from __future__ import annotations

from rlguard.orchestrator.operator import handle_operator
from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import journal


def _operator_entries(run_dir) -> list[dict]:
    return [e for e in journal(run_dir) if e["kind"] == "operator"]


def test_invalid_operator_bodies_are_not_journaled_and_valid_ones_only_with_checked_fields(tmp_path):
    sup = Supervisor(tmp_path / "run", parse_run_config({"supervisor": {"command": "python train.py"}}),
                     serve_http=False, scheduler=False)
    try:
        sup.live.state = RunState.RUNNING
        bad = [("rollback", {"to_step": "../../etc", "junk": "x" * 100_000}),
               ("rollback", {"to_step": 2, "skip_batches": -1}),
               ("approve", {"decision_id": ["d-1"]}),
               ("approve", {"decision_id": "d-" + "1" * 10_000}),
               ("halt", {"reason": {"nested": "x" * 10_000}}),
               ("explode", {"x": 1})]
        for action, body in bad:
            code, answer = handle_operator(sup, action, body)
            assert code in (400, 404) and "error" in answer, (action, code)
        assert _operator_entries(tmp_path / "run") == []

        code, _ = handle_operator(sup, "rollback", {"to_step": 999, "extra": "y" * 100_000, "source": "cli"})
        assert code == 404  # a valid body for a checkpoint that does not exist: journaled as asked
        code, _ = handle_operator(sup, "pause", {"anything": "z" * 100_000})
        assert code == 202
        entries = _operator_entries(tmp_path / "run")
        assert [(e["command"], e["args"], e["source"]) for e in entries] == [
            ("rollback", {"to_step": 999, "skip_batches": 0}, "cli"), ("pause", {}, "api")]
    finally:
        sup.journal.close()
