"""The dashboards plugged in through the sink protocol and served on the supervisor's one port."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

from rlguard.orchestrator import control_cli
from rlguard.orchestrator.default_sinks import default_sinks_and_routes
from rlguard.orchestrator.run_files import read_supervisor_info
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import fake_config, run_supervisor


class Crashing:
    """A sink that fails on everything: the run must not notice."""

    def __getattr__(self, name):
        def fail(*args):
            raise RuntimeError(f"{name} exploded")

        return fail


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_exporter_and_live_dashboard_ride_on_the_supervisor_port(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 60, "step_s": 0.03, "checkpoint_every": 2, "faults": {"0": {"nan_at": 7}}})
    sinks, routes = default_sinks_and_routes(run_dir, cfg)
    assert [type(s).__name__ for s in sinks] == ["RunExporter", "RunHistory"]
    sup = Supervisor(run_dir, cfg, sinks=sinks + [Crashing()], extra_routes=routes)
    seen: dict = {}

    def probe():  # while the run is live: scrape, load the page, ask for status through the CLI
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = read_supervisor_info(run_dir)
            if info.get("url") and (sup.live.step or 0) >= 12:
                seen["metrics"] = _get(info["url"] + "/metrics").decode()
                seen["page"] = _get(info["url"] + "/")
                seen["history"] = json.loads(_get(info["url"] + "/api/history?max_points=50"))
                seen["status_rc"] = control_cli.status_main([str(run_dir)])
                return
            time.sleep(0.05)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    result = run_supervisor(sup)
    t.join(5)
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    assert result.counters["sink_errors"] > 10  # every call to the crashing sink failed, and nothing else did
    assert 'rlguard_kl{run_id="run"}' in seen["metrics"]
    assert 'rlguard_rollbacks_total{run_id="run"} 1.0' in seen["metrics"]
    assert b"<html" in seen["page"].lower()
    assert "kl" in seen["history"]["metrics"] and seen["history"]["decisions"]
    assert seen["status_rc"] == 0
    out = capsys.readouterr().out
    assert "state:        running" in out and "checkpoints:" in out and "non_finite" in out
    import re

    from rlguard.monitors.coverage import CLASSES

    armed = re.search(r"coverage: +(\d+)/(\d+) failure classes armed", out)
    assert armed and int(armed.group(2)) == len(CLASSES) and int(armed.group(1)) < len(CLASSES)
    assert "not watched:  truncated_fraction not logged: pinned_at_cap off" in out
    # after the run, status reads the files (coverage from the journal)
    assert control_cli.status_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "state:        completed" in out and "not watched:  truncated_fraction not logged" in out
