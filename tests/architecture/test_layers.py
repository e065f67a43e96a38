"""The code's layers, checked on its imports: no circle anywhere, no arrow pointing up.

    monitors  <-  policies  <-  orchestrator / dashboards
    ppo apart: of the others it imports only monitors' event type (the METRICS.md contract it
    writes) and the settings describer

and inside the supervisor, each part imports only the parts below it (run_context.py says why).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.architecture.import_graph import cycles, graph

# package -> the rlguard packages it may import (besides itself)
ALLOWED = {
    "ppo": {"monitors"},
    "monitors": set(),
    "policies": {"monitors"},
    "orchestrator": {"monitors", "policies", "dashboards", "ppo"},
    "dashboards": {"monitors", "policies", "orchestrator", "ppo"},
}

# bottom to top: a part may import those before it, never those after it
SUPERVISOR_LAYERS = ["recorder", "run_context", "restarts", "acting", "recovery", "liveness", "operator",
                     "supervisor"]


# ppo's doors into monitors: the event format it writes and the settings describer every
# `--print-config` shares; nothing that detects
PPO_MAY_IMPORT = {"rlguard.monitors.events", "rlguard.monitors.describe"}


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_is_read_from_the_source():
    edges = graph()
    assert len(edges) > 100  # every module of the five folders
    assert "rlguard.monitors.alerts" in edges["rlguard.policies.engine"]
    assert "rlguard.orchestrator.run_context" in edges["rlguard.orchestrator.acting"]


def test_no_import_circle_anywhere():
    found = cycles(graph())
    assert not found, "import circles (each a set of modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_packages_import_only_downward():
    upward = sorted(f"{m} -> {t}" for m, targets in graph().items() for t in targets
                    if package_of(t) != package_of(m) and package_of(t) not in ALLOWED[package_of(m)])
    assert not upward, "imports that point up (or into ppo's island):\n" + "\n".join(upward)
    ppo_out = sorted(f"{m} -> {t}" for m, targets in graph().items() if package_of(m) == "ppo" for t in targets
                     if package_of(t) != "ppo" and t not in PPO_MAY_IMPORT)
    assert not ppo_out, "ppo reaching beyond the event format:\n" + "\n".join(ppo_out)


def test_supervisor_parts_import_only_the_parts_below():
    edges = graph()
    rank = {f"rlguard.orchestrator.{name}": i for i, name in enumerate(SUPERVISOR_LAYERS)}
    upward = sorted(f"{m} -> {t}" for m, targets in edges.items() if m in rank
                    for t in targets if t in rank and rank[t] >= rank[m])
    assert not upward, "supervisor parts importing a part at or above their own layer:\n" + "\n".join(upward)


def test_the_circle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("statement, works", [("import rlguard.monitors", True),
                                              ("import rlguard.orchestrator.supervisor", True),
                                              ("import monitors", False), ("import policies", False),
                                              ("import orchestrator", False), ("import dashboards", False),
                                              ("import ppo", False)])
def test_installed_under_one_import_name(tmp_path, statement, works):
    """Outside the checkout only `rlguard` is importable: the generic names would collide with
    (or silently replace) a training environment's own `monitors` or `policies`."""
    proc = subprocess.run([sys.executable, "-I", "-c", statement], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode == 0) == works, proc.stderr[-2000:]
