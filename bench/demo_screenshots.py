"""README screenshots from a real `rlguard demo` run: the live page mid-incident, and the reports.

    .venv/bin/python bench/demo_screenshots.py --out /tmp/demo-shots [--img-dir docs/img] [-- EXTRA DEMO ARGS]
    .venv/bin/python bench/demo_screenshots.py --from-run /tmp/demo-shots   # only the report pages again

Runs `rlguard demo --compare` with the live dashboard on, reads its narration as it comes and
opens the dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by playwright,
as tests/dashboards/test_web_dashboard.py does). The live shot is taken a few steps after the
first rollback has landed (the alert, the rollback marker and the new segment are on the
charts); a first one at the first critical alert stands when nothing rolls back. After the demo:
OUT/demo_report.html (gold checks, every held-out answer with its flags) and the guarded run's
report.html. Each PNG is reduced to a 128-colour palette so that it stays well under 200 KB.
The demo's own output goes to OUT.log and to stdout; the figures to OUT/demo_summary.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
URL_RE = re.compile(r"\[guarded\] live dashboard: (http://\S+?)/?\s")
STEP_RE = re.compile(r"^\[guarded\] step\s+(\d+)")
STEPS_AFTER_ROLLBACK = 3  # the new segment is visible on the charts


def shrink(path: Path, max_width: int = 1400) -> int:
    """Palette PNG (128 colours), at most max_width wide; returns the size in bytes."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def launch(pw):
    exe = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    return pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)


def shoot_live(browser, url: str, path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url + "/")
        page.wait_for_function("window.rlguardDashboard && window.rlguardDashboard.live === true", timeout=20_000)
        page.wait_for_timeout(1500)  # the 250 ms render tick draws the last points
        page.screenshot(path=str(path), full_page=False)
    finally:
        page.close()


def shoot_file(browser, html: Path, path: Path, height: int) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": height})
    try:
        page.goto(html.resolve().as_uri())
        page.wait_for_timeout(800)
        page.screenshot(path=str(path), full_page=False)
    finally:
        page.close()


def shoot_reports(browser, out: Path, img_dir: Path) -> list[Path]:
    shots = []
    if (out / "demo_report.html").is_file():
        shoot_file(browser, out / "demo_report.html", img_dir / "demo-report.png", 1500)
        shots.append(img_dir / "demo-report.png")
    if (out / "guarded" / "report.html").is_file():
        shoot_file(browser, out / "guarded" / "report.html", img_dir / "demo-run-report.png", 1100)
        shots.append(img_dir / "demo-run-report.png")
    return shots


def run_demo_and_shoot(out: Path, img_dir: Path, extra: list[str]) -> tuple[int, list[Path], float]:
    from playwright.sync_api import sync_playwright

    cmd = [sys.executable, "-u", "-m", "rlguard.orchestrator.cli", "demo", "--compare", "--out", str(out), *extra]
    log = open(f"{out}.log", "w")  # noqa: SIM115 (open for the whole run)
    shots: list[Path] = []
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = launch(pw)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        url, rolled_back_at, last_step, live_done, alert_shot = None, None, 0, False, False
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            log.flush()
            if url is None and (m := URL_RE.search(line)):
                url = m.group(1)
            if (m := STEP_RE.match(line)):
                last_step = int(m.group(1))
                if rolled_back_at is not None:
                    rolled_back_at -= 1
            if "[guarded] DONE     rollback" in line and rolled_back_at is None:
                rolled_back_at = STEPS_AFTER_ROLLBACK
            # A first shot at the first critical alert (the run may halt right after it and take the
            # page with it); the one a few steps after the rollback replaces it.
            first_alert = line.startswith("[guarded] ALERT") and " critical " in line and not alert_shot
            after_rollback = rolled_back_at is not None and rolled_back_at <= 0
            if url and not live_done and (first_alert or after_rollback):
                try:
                    shoot_live(browser, url, img_dir / "demo-live.png")
                    if img_dir / "demo-live.png" not in shots:
                        shots.append(img_dir / "demo-live.png")
                    print(f"[screenshots] live page at guarded step {last_step} -> {img_dir / 'demo-live.png'}",
                          flush=True)
                except Exception as e:  # the page went away with the run: say so, go on
                    print(f"[screenshots] live page not captured: {e}", flush=True)
                alert_shot = True
                live_done = after_rollback
        rc = proc.wait()
        wall = time.monotonic() - t0
        shots += shoot_reports(browser, out, img_dir)
        browser.close()
    log.close()
    return rc, shots, wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="demo output directory (must not hold a run)")
    p.add_argument("--from-run", help="an existing demo output directory: only the report screenshots")
    p.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    p.add_argument("extra", nargs="*", help="more `rlguard demo` arguments (after --)")
    args = p.parse_args(argv)
    img_dir = Path(args.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    if args.from_run:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = launch(pw)
            shots = shoot_reports(browser, Path(args.from_run), img_dir)
            browser.close()
        rc, wall = 0, None
    elif args.out:
        rc, shots, wall = run_demo_and_shoot(Path(args.out), img_dir, args.extra)
    else:
        p.error("--out or --from-run is required")
    for shot in shots:
        print(f"[screenshots] {shot}: {shrink(shot) / 1024:.0f} KB")
    if wall is not None:
        print(f"[screenshots] demo exit {rc}, wall {wall:.0f} s (load average {os.getloadavg()[0]:.1f})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
