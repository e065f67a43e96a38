"""report.html is meant to be shared (attached to a ticket): the secrets a run config may hold
(a Slack webhook URL, tokens, API keys, passwords, credentials in URLs) are not in it."""

from __future__ import annotations

import json

import pytest

from rlguard.dashboards.redact import redact_config_text
from rlguard.dashboards.report import write_report

SECRETS = ["T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX", "chat.example/hook/abc123secret", "am-user:am-pass",
           "dash-token-0123456789", "hf_abcdefghijklmnopqrstuvwx", "wandb-key-999", "pg-password-1",
           "ghp_abcdefghijklmnopqrstuvwxyz0123", "sk-proj-abcdefghijklmnopqrstuvwx", "lit-token-42", "cli-secret-7"]

CONFIG = f"""\
trainer:
  kl_coef: 0.05
  max_new_tokens: 64
supervisor:
  command: python train.py --run-dir {{run_dir}} --hf-token {SECRETS[4]} --max-new-tokens 64 --api-key={SECRETS[9]}
  heartbeat_interval_s: 0.5
dashboards:
  notify:
    webhook_url: https://hooks.slack.com/services/{SECRETS[0]}
    alertmanager_url: http://{SECRETS[2]}@alertmanager.internal:9093
    dashboard_url: http://127.0.0.1:8765/#token={SECRETS[3]}
  wandb: {{enabled: false, project: rlhf}}
extra_tools:
  - {{name: chat, webhook: https://{SECRETS[1]}}}
  - {{name: db, password: {SECRETS[6]}, api_key: {SECRETS[5]}}}
  - {{name: gh, GITHUB_TOKEN: {SECRETS[7]}, note: "OPENAI_API_KEY={SECRETS[8]} WANDB_API_KEY={SECRETS[10]}"}}
"""


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "metrics": {"kl": 0.01 * s, "reward": 1.0}}) + "\n" for s in range(1, 6)))
    (run / "config.yaml").write_text(CONFIG)
    return run


def test_the_report_carries_no_secret_from_the_config(run_dir):
    html = write_report(run_dir).read_text()
    leaked = [s for s in SECRETS if s in html]
    assert not leaked, leaked
    assert "&lt;redacted&gt;" in html
    # what is not secret is still shown
    for kept in ("kl_coef: 0.05", "max_new_tokens: 64", "--max-new-tokens 64", "alertmanager.internal:9093",
                 "http://127.0.0.1:8765/", "project: rlhf"):
        assert kept in html, kept


def test_damaged_config_text_is_redacted_too():
    """A config.yaml cut short (the report reads 20,000 characters) is not YAML: line by line then."""
    cut = CONFIG + "broken: [unclosed\n  token: tok-in-broken-text\n"
    out = redact_config_text(cut)
    leaked = [s for s in SECRETS + ["tok-in-broken-text"] if s in out]
    assert not leaked, (leaked, out)
    assert "max_new_tokens: 64" in out and "kl_coef: 0.05" in out
