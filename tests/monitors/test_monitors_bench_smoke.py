"""The detection benchmark runs end to end (one scenario per family) and reports every section."""

from __future__ import annotations

import re

from bench.detection import main
from bench.scenarios import FAILURES


def test_detection_benchmark_smoke(capsys):
    assert main(["--seeds", "1", "--baseline-seeds", "1", "--throughput-seeds", "1",
                 "--baselines", "threshold,early_stopping,page_hinkley"]) == 0
    out = capsys.readouterr().out
    for section in ("failure families", "healthy families", "Baselines", "Throughput"):
        assert section in out
    row = re.search(r"\| \*\*all\*\* \| (\d+)/(\d+) \|", out)
    assert row and int(row.group(2)) == len(FAILURES) and int(row.group(1)) >= len(FAILURES) - 1
    crit = re.search(r"all healthy steps \(incl\. pre-onset\)\*\* \| \d+ \| ([\d.]+) \|", out)
    assert crit and float(crit.group(1)) == 0.0
