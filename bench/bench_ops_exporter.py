"""What the Prometheus exporter costs the supervisor, and how fast the ops path pages.

    .venv/bin/python bench/bench_ops_exporter.py            # exporter costs only
    .venv/bin/python bench/bench_ops_exporter.py --e2e      # + real Prometheus/Alertmanager latency

Figures: time per on_event (all 27 METRICS.md metrics + 3 unlisted), size and time of one
exposition (what one scrape costs), and with --e2e the wall time from an induced collapse to
the page arriving at a webhook through Prometheus (1 s scrape/eval) and Alertmanager
(group_wait 1 s), and of a direct Notifier push through Alertmanager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlguard.dashboards.exporter import RunExporter  # noqa: E402
from rlguard.dashboards.notify import Notifier  # noqa: E402
from rlguard.dashboards.prom_catalog import STEP_METRICS  # noqa: E402
from rlguard.monitors.alerts import Alert, Severity  # noqa: E402
from rlguard.monitors.events import MetricEvent  # noqa: E402


def bench_exporter(n: int = 20000) -> None:
    e = RunExporter("bench", info={"model": "m", "preset": "p", "config_hash": "h"}, kl_budget=0.2)
    metrics = {m.name: 0.5 for m in STEP_METRICS} | {"custom/a": 1.0, "custom/b": 2.0, "custom/c": 3.0}
    events = [MetricEvent(step=i, metrics=metrics, time=1e9 + i) for i in range(n)]
    t0 = time.perf_counter()
    for ev in events:
        e.on_event(ev)
    per_event_us = (time.perf_counter() - t0) / n * 1e6
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        body = e.exposition()
        samples.append(time.perf_counter() - t0)
    print(f"on_event ({len(metrics)} metrics): {per_event_us:.1f} us per event (mean of {n})")
    print(
        f"exposition: {len(body)} bytes, {len(body.splitlines())} lines, "
        f"median {statistics.median(samples) * 1e3:.2f} ms (200 runs)"
    )


def bench_e2e() -> None:
    from tests.dashboards.conftest_ops import (
        PROM_DIR,
        Receiver,
        http_json,
        shorten_for,
        start_alertmanager,
        start_prometheus,
        wait_until,
    )

    tmp = Path(tempfile.mkdtemp(prefix="rlguard-bench-ops-"))
    webhook = Receiver()
    exporter = RunExporter("bench-e2e", info={}, kl_budget=0.2)
    server = exporter.serve()
    stop = threading.Event()

    def feed():
        step = 0
        exporter.on_state("running")
        while not stop.wait(0.2):
            step += 1
            exporter.on_event(MetricEvent(step=step, metrics={"kl": 0.02, "reward": 1.0}))

    threading.Thread(target=feed, daemon=True).start()
    am, am_url = start_alertmanager(tmp, webhook.url)
    prom, prom_url = start_prometheus(
        tmp, f"127.0.0.1:{server.port}", [shorten_for(PROM_DIR / "rules.yml", tmp / "rules.yml")], am_url
    )
    try:
        t_start = time.monotonic()
        wait_until(
            "first sample",
            lambda: http_json(f"{prom_url}/api/v1/query", {"query": "rlguard_step"})["data"]["result"],
            timeout_s=30,
            interval_s=0.05,
        )
        first_sample_s = time.monotonic() - t_start
        t0 = time.monotonic()
        exporter.on_alert(Alert("pattern_collapse", "collapse", "kl", 1, Severity.CRITICAL, 1, "bench"))
        wait_until(
            "page",
            lambda: any(
                a["labels"]["alertname"] == "RLGuardCollapseDetected"
                for b in webhook.bodies()
                for a in b["alerts"]
            ),
            timeout_s=60,
            interval_s=0.05,
        )
        page_s = time.monotonic() - t0
        n = Notifier("bench-direct", {"alertmanager_url": am_url})
        t0 = time.monotonic()
        n.on_alert(Alert("non_finite", "nan", "kl", 2, Severity.CRITICAL, 2, "bench"))
        wait_until(
            "direct page",
            lambda: any(
                a["labels"].get("run_id") == "bench-direct" for b in webhook.bodies() for a in b["alerts"]
            ),
            timeout_s=30,
            interval_s=0.05,
        )
        direct_s = time.monotonic() - t0
        n.close()
        print(f"Prometheus start -> first queryable sample: {first_sample_s:.1f} s")
        print(f"collapse alert -> page at webhook via Prometheus + Alertmanager: {page_s:.1f} s")
        print(f"Notifier push -> page at webhook via Alertmanager: {direct_s:.1f} s")
    finally:
        stop.set()
        prom.stop()
        am.stop()
        exporter.close()
        webhook.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--e2e", action="store_true", help="also measure the alert path with real programs")
    args = ap.parse_args()
    bench_exporter()
    if args.e2e:
        bench_e2e()
    return 0


if __name__ == "__main__":
    sys.exit(main())
