"""A real `rlguard run` (the fake worker, the scheduler on, the default log level) seen from the
outside: what its log shows, which files hold secrets and who may read them, and a webhook URL
that comes from an environment variable instead of the config file."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from tests.orchestrator.harness import FAKE_WORKER, FAST_SUPERVISOR, QUIET_MONITORS

REPO = Path(__file__).resolve().parents[2]
OWN_LOGGERS = ("rlguard", "orchestrator", "dashboards", "monitors", "policies", "ppo")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


class _Receiver(BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    scenario = tmp / "scenario.json"
    # ~25 steps of 0.2 s: the liveness job (every second) runs several times
    scenario.write_text(json.dumps({"steps": 25, "checkpoint_every": 5, "step_s": 0.2}))
    sup = dict(FAST_SUPERVISOR, heartbeat_timeout_s=4.0)
    sup["command"] = [sys.executable, str(FAKE_WORKER), "--scenario", str(scenario), "--run-dir", "{run_dir}",
                      "{resume}"]
    raw = {"trainer": {"kl_coef": 0.05}, "monitors": QUIET_MONITORS, "supervisor": sup,
           "dashboards": {"notify": {"webhook_url_env": "RLGUARD_TEST_WEBHOOK"}}}
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp / "run"
    url = f"http://127.0.0.1:{receiver.server_port}/hooks/T000/B000/s3cr3t"
    env = dict(os.environ, RLGUARD_TEST_WEBHOOK=url, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg), "--out", str(run)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    receiver.shutdown()
    yield proc, run, url, list(_Receiver.posts)


def test_the_default_log_shows_only_rlguards_own_lines(supervised_run):
    proc, run, _, _ = supervised_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if LOG_LINE.match(x)]
    assert any("state starting -> running" in x for x in lines), proc.stderr[-2000:]
    chatter = [x for x in lines if re.search(r"Running job|executed successfully|Added job|Scheduler (started|has "
                                             r"been shut down)|Uvicorn|GET /|POST /", x)]
    assert not chatter, "\n".join(chatter[:10])
    foreign = [x for x in lines if not x.split(" ", 4)[3].rstrip(":").startswith(OWN_LOGGERS)]
    assert not foreign, "\n".join(foreign[:10])


def test_config_and_supervisor_json_are_readable_by_the_owner_only(supervised_run):
    _, run, _, _ = supervised_run
    for name in ("config.yaml", "supervisor.json", "control.token"):
        mode = stat.S_IMODE((run / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"


def test_the_webhook_url_can_come_from_an_environment_variable(supervised_run):
    proc, run, url, posts = supervised_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any("completed" in p.get("text", "") for p in posts), posts  # the run's end was announced there
    assert "s3cr3t" not in (run / "config.yaml").read_text()  # the file names the variable, not the URL
    assert yaml.safe_load((run / "config.yaml").read_text())["dashboards"]["notify"] == {
        "webhook_url_env": "RLGUARD_TEST_WEBHOOK"}


def test_webhook_url_env_errors_name_the_field_and_the_fix(monkeypatch):
    from rlguard.orchestrator.spec import ConfigError, parse_run_config

    monkeypatch.delenv("RLGUARD_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"webhook_url_env.*RLGUARD_TEST_UNSET.*not set.*export"):
        parse_run_config({"dashboards": {"notify": {"webhook_url_env": "RLGUARD_TEST_UNSET"}}})
    monkeypatch.setenv("RLGUARD_TEST_HOOK", "ftp://x/secret-value")
    with pytest.raises(ConfigError, match="http") as e:
        parse_run_config({"dashboards": {"notify": {"webhook_url_env": "RLGUARD_TEST_HOOK"}}})
    assert "secret-value" not in str(e.value)  # the variable's value is never echoed
    with pytest.raises(ConfigError, match="not both"):
        parse_run_config({"dashboards": {"notify": {"webhook_url_env": "RLGUARD_TEST_HOOK",
                                                    "webhook_url": "https://hooks.example/x"}}})
    monkeypatch.setenv("RLGUARD_TEST_HOOK", "https://hooks.example/T/B/secret-value")
    notify = parse_run_config({"dashboards": {"notify": {"webhook_url_env": "RLGUARD_TEST_HOOK"}}}).dashboards.notify
    assert notify.resolved_webhook_url == "https://hooks.example/T/B/secret-value"
    assert "secret-value" not in json.dumps(notify.model_dump())  # dumps of the config never carry it
