"""Helpers for the ops-stack tests: a recording HTTP receiver, real Prometheus and Alertmanager
child processes, polling. Imported explicitly by the test modules that need them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "dashboards" / "prometheus"


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian: apt-get install prometheus prometheus-alertmanager)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, fn: Callable[[], object], timeout_s: float = 30.0, interval_s: float = 0.25):
    """Poll `fn` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # not up yet
            last_error = e
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error})")


class Receiver:
    """An HTTP server on 127.0.0.1 that records JSON POST bodies; answers `fail_status` to the
    first `fail_first` requests (with `retry_after` when set), 200 afterwards."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None):
        self.fail_first = fail_first
        self.requests: list[tuple[str, object]] = []  # (path, body) of the successful ones
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        receiver.requests.append((self.path, json.loads(body)))
                self.send_response(fail_status if failing else 200)
                if failing and retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def bodies(self, path: str | None = None) -> list:
        with self._lock:
            return [b for p, b in self.requests if path is None or p == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Child:
    """A child process started without a shell, killed by pid, its output kept for failures."""

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def http_json(url: str, data: dict | None = None, timeout_s: float = 5.0):
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=body, method="POST")
    else:
        req = urllib.request.Request(url)
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def start_alertmanager(tmp: Path, webhook_url: str) -> tuple[Child, str]:
    """A real Alertmanager on 127.0.0.1, configured from the shipped example with its webhook
    receivers pointed at `webhook_url` and the waits shortened for a test."""
    binary = require("prometheus-alertmanager")
    cfg = yaml.safe_load((PROM_DIR / "alertmanager.example.yml").read_text())
    cfg["route"].update(group_wait="1s", group_interval="1s")
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url + "/" + receiver["name"]
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    child = Child(
        [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "Alertmanager ready",
            lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200,
            timeout_s=20,
        )
    except BaseException:
        print(child.output())
        child.stop()
        raise
    return child, url


def start_prometheus(
    tmp: Path, target: str, rule_files: list[Path], alertmanager: str | None
) -> tuple[Child, str]:
    """A real Prometheus on 127.0.0.1 scraping `target` (host:port) every second as job "rlguard"."""
    binary = require("prometheus")
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "rlguard", "static_configs": [{"targets": [target]}]}],
    }
    if alertmanager:
        am = alertmanager.removeprefix("http://")
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    child = Child(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "Prometheus ready",
            lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200,
            timeout_s=20,
        )
    except BaseException:
        print(child.output())
        child.stop()
        raise
    return child, url


def shorten_for(rules_path: Path, out: Path, for_s: str = "1s") -> Path:
    """The shipped rules with every `for:` set to `for_s`, so an e2e test need not wait minutes."""
    rules = yaml.safe_load(rules_path.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_s
    out.write_text(yaml.safe_dump(rules, sort_keys=False))
    return out
