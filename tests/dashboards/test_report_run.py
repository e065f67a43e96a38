"""`rlguard report` on synthetic run directories: rolled back twice, halted, watched (no
journal), and broken input. Also renders the report in headless Chromium for a look."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rlguard.dashboards.history import RunHistory
from rlguard.dashboards.report import find_incidents, main, samples_by_segment
from rlguard.dashboards.report_run_dir import load_run_dir, read_run_files
from rlguard.monitors.alerts import Alert, Severity
from rlguard.orchestrator.journal import Journal, read_journal
from rlguard.policies.decision import Action, Decision
from rlguard.ppo.checkpoint_files import checkpoint_dir_name, write_checkpoint_dir

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
T0 = 1_764_340_000.0


def _metrics(step: int, collapse: float, kl_coef: float) -> dict:
    wobble = 0.05 * math.sin(step / 3)
    return {
        "reward": 0.4 + 0.012 * step + wobble + 1.5 * collapse,
        "kl": 0.01 + 0.0008 * step + 0.35 * collapse,
        "perplexity": 3.2 - 0.004 * step - 1.4 * collapse,
        "response_length": 42 + 0.1 * step + 150 * collapse,
        "entropy": 2.1 - 0.003 * step - 1.2 * collapse,
        "truncated_fraction": min(1.0, 0.02 + 0.9 * collapse),
        "distinct_2": 0.82 - 0.6 * collapse,
        "clipfrac": 0.1 + 0.05 * wobble,
        "kl_coef": kl_coef, "clip_range": 0.2, "lr": 1e-5,
    }


class RunWriter:
    """Writes a run directory the way the supervisor (orchestrator.journal.Journal) and the
    worker (metrics.jsonl, samples.jsonl, checkpoints) do, on one fake clock."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.t = T0
        self.metrics = open(root / "metrics.jsonl", "w")
        self.samples = open(root / "samples.jsonl", "w")
        self.journal = Journal(root / "journal.jsonl", clock=self._tick)

    def _tick(self) -> float:
        self.t += 1.0
        return self.t

    def steps(self, steps, collapse_from: int | None = None, kl_coef: float = 0.05, attempt: int = 0):
        for s in steps:
            collapse = 0.0 if collapse_from is None or s < collapse_from else min(1.0, (s - collapse_from + 1) / 4)
            m = _metrics(s, collapse, kl_coef)
            event = {"step": s, "time": self._tick(), "metrics": m, "attempt": attempt}
            self.metrics.write(json.dumps(event) + "\n")
            if s % 5 == 0:
                resp = ("Sure! " * 40 + "!!!") if collapse > 0.5 else f"A short helpful answer number {s}."
                self.samples.write(json.dumps({"step": s, "prompt": f"Question {s}?", "response": resp,
                                               "reward": m["reward"]}) + "\n")

    def alert(self, step, metric, severity, onset, message, code="change_point"):
        self.journal.alert(Alert(code, f"{metric}_{code}", metric, step, Severity(severity), onset, message))

    def decision(self, action, step, reason, target=None, params=None, outcome="ok"):
        d = Decision(Action(action), step, reason, target_step=target, params=params or {},
                     skip_batches=2 if action == "rollback" else 0, alerts=("change_point",))
        did = self.journal.decided(d)
        self.journal.finished(did, "done", outcome)

    def checkpoint(self, step, health):
        path = self.root / "checkpoints" / checkpoint_dir_name(step)
        if not path.exists():
            write_checkpoint_dir(path, lambda d: (d / "state.json").write_text("{}"), step=step,
                                 constraints={"kl_coef": 0.05})
        self.journal.checkpoint(step, path, health)

    def close(self):
        self.metrics.close()
        self.samples.close()
        self.journal.close()


def strip_times(run: Path) -> None:
    """As if neither file had a clock: the loader falls back to ordering by step."""
    for name in ("metrics.jsonl", "journal.jsonl"):
        lines = [json.loads(x) for x in (run / name).read_text().splitlines()]
        (run / name).write_text("".join(json.dumps({k: v for k, v in x.items() if k != "time"}) + "\n"
                                        for x in lines))


def make_rolled_back_twice_then_halted(root: Path) -> Path:
    w = RunWriter(root)
    w.journal.state("running", previous="starting", reason="worker started")
    w.steps(range(0, 31))
    w.checkpoint(10, "healthy")
    w.checkpoint(20, "healthy")
    w.steps(range(31, 45), collapse_from=36)
    w.checkpoint(40, "pending")
    w.alert(42, "response_length", "warning", 37, "response_length = 170 > 3.0 sigma above its mean (48)", "spike")
    w.alert(44, "kl", "critical", 36, "kl = 0.39 rose 0.33 above its mean since step 36")
    w.checkpoint(40, "suspect")
    w.decision("rollback", 44, "critical change_point on kl since step 36", target=20, params={"kl_coef": 0.1})
    w.steps(range(21, 61), collapse_from=52, kl_coef=0.1, attempt=1)
    w.alert(56, "kl", "critical", 52, "kl = 0.41 rose 0.35 above its mean since step 52")
    w.decision("rollback", 56, "critical change_point on kl since step 52 (second rollback)", target=20,
               params={"kl_coef": 0.2, "lr": 5e-6})
    w.steps(range(21, 49), collapse_from=45, kl_coef=0.2, attempt=2)
    w.alert(48, "perplexity", "critical", 45, "perplexity = 1.6 fell 1.3 below its mean since step 45")
    w.decision("halt", 48, "rollback budget spent (2 of 2): halting and paging")
    w.journal.state("halted", previous="running", reason="rollback budget spent")
    w.journal.operator("resume", {}, source="web")
    w.close()
    with open(root / "journal.jsonl", "a") as f:
        f.write('{"seq": 99, "kind": "future_thing", "whatever": 1}\n')  # unknown kinds are ignored
    (root / "config.yaml").write_text("steps: 100\nkl_coef: 0.05\n")
    return root


def test_history_rebuilt_from_run_dir_has_segments_incidents_and_checkpoints(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    h = RunHistory.from_run_dir(run)
    assert [(s.start_step, s.last_step, s.rolled_back_from) for s in h.segments] == \
        [(0, 44, 21), (21, 60, 21), (21, 48, None)]
    assert h.segments[1].reason.startswith("rollback to step 20")
    assert [a["segment"] for a in h.alerts] == [0, 0, 1, 2]
    assert h.alerts[0]["time"] > T0  # times come from the journal lines
    assert [(d["action"], d["segment"], d["phase"], d["outcome"]) for d in h.decisions] == \
        [("rollback", 0, "done", "ok"), ("rollback", 1, "done", "ok"), ("halt", 2, "done", "ok")]
    decided = [e["decision_id"] for e in read_journal(run / "journal.jsonl").entries if e.get("phase") == "decided"]
    assert [d["id"] for d in h.decisions] == decided and len(decided) == 3
    assert h.states[-1]["reason"] == "rollback budget spent"
    assert h.notes[-1]["text"] == "resume (via web)"
    assert {s: c["health"] for s, c in h.checkpoints.items()} == {10: "healthy", 20: "healthy", 40: "suspect"}
    assert h.states[-1]["state"] == "halted"
    incidents = find_incidents(h)
    assert [(i.kind, i.step, i.onset_step, len(i.alerts)) for i in incidents] == \
        [("rollback", 44, 36, 2), ("rollback", 56, 52, 1), ("halt", 48, 45, 1)]


def test_journal_without_times_is_merged_by_step(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    strip_times(run)
    h = RunHistory.from_run_dir(run)
    assert [a["segment"] for a in h.alerts] == [0, 0, 1, 2]
    assert [d["segment"] for d in h.decisions] == [0, 1, 2]


def test_samples_are_assigned_to_the_segment_that_produced_them(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    files = read_run_files(run)
    h = RunHistory()
    load_run_dir(h, run, files)
    tagged = samples_by_segment(h, files.samples)
    assert [(seg, s["step"]) for seg, s in tagged if s["step"] in (25, 40)] == [(0, 25), (0, 40), (1, 25), (1, 40),
                                                                                 (2, 25), (2, 40)]


def _report(run: Path, *extra: str) -> str:
    assert main([str(run), *extra]) == 0
    out = Path(extra[extra.index("--out") + 1]) if "--out" in extra else run / "report.html"
    return out.read_text()


def test_report_of_a_run_rolled_back_twice_then_halted(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    text = _report(run)
    assert "Incident 1: rolled back at step 44 to step 20" in text
    assert "Incident 2: rolled back at step 56 to step 20" in text
    assert "Incident 3: halted at step 48" in text
    assert "rollback budget spent (2 of 2): halting and paging" in text
    assert "kl = 0.39 rose 0.33 above its mean since step 36" in text
    # samples: healthy before the onset, degenerate after it, healthy again after the rollback
    first = text[text.index("Incident 1"):text.index("Incident 2")]
    assert "A short helpful answer number 35." in first and "Sure! Sure!" in first
    assert first.count("A short helpful answer number 25.") == 1  # the after-rollback column
    # plots: the four metrics, the others and the constraints, all embedded (opens offline)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    alts = [a for a, _ in images]
    assert alts[:4] == ["reward", "kl", "perplexity", "response_length"]
    assert {"entropy", "truncated_fraction", "distinct_2", "clipfrac", "constraints"} <= set(alts)
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for _, b in images)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert ">halted<" in text  # final state card
    assert "steps ≥ 21 undone" in text


def test_report_escapes_model_output(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    with open(run / "samples.jsonl", "a") as f:
        f.write(json.dumps({"step": 47, "prompt": "<script>alert(1)</script>", "response": "<img src=x onerror=1>",
                            "reward": 0.0}) + "\n")
    text = _report(run)
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert "<img src=x" not in text


def test_report_of_a_watched_run_with_broken_lines_and_no_journal(tmp_path):
    run = tmp_path / "watched"
    w = RunWriter(run)
    w.steps(range(0, 20))
    w.close()
    (run / "journal.jsonl").unlink()
    (run / "samples.jsonl").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "metrics": {"reward": "high"}}\n{"step": 21, "metr')  # bad value, torn line
    out = tmp_path / "elsewhere" / "r.html"
    text = _report(run, "--out", str(out))
    assert "Unreadable input (2)" in text and "metrics.jsonl line 21" in text
    assert "nothing interrupted this run" in text
    assert not (run / "report.html").exists()


def test_rlguard_report_subcommand_and_a_journal_only_run(tmp_path):
    from rlguard.orchestrator.cli import main as rlguard

    run = tmp_path / "crashed"
    with Journal(run / "journal.jsonl") as j:
        j.state("starting", previous="init")
        j.state("failed", previous="starting", reason="worker exited 1 before its first step")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert rlguard(["report", str(run), "--out", str(out_dir)]) == 0
    text = (out_dir / "report.html").read_text()
    assert "metrics.jsonl is missing: no curves to show" in text
    assert "failed: worker exited 1 before its first step" in text
    assert ">failed<" in text


def test_report_command_errors_name_the_problem(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "neither metrics.jsonl nor journal.jsonl" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium is not installed: no screenshot")
def test_report_renders_in_chromium_for_a_look(tmp_path):
    run = make_rolled_back_twice_then_halted(tmp_path / "run")
    _report(run)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,4200", (run / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000
    shutil.copy(run / "report.html", ARTIFACTS / "report.html")  # to open by hand
