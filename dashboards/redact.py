"""Secrets out of what people share: the run config that report.html shows.

A run config may hold a chat webhook URL (whoever has it can post to the channel), tokens,
API keys, passwords, or URLs with credentials in them; report.html is meant to be attached to
a ticket. `redact_config_text` removes, from config.yaml's text:
- the value of every key that names a secret (a `token`, `secret`, `password`, `api_key`,
  `webhook`, `credential`, `auth` ... part; `max_new_tokens` is not one, and `*_env` keys name
  an environment variable, not a secret);
- anywhere in any value (a `command:` line too): credentials in URLs (`user:pw@`), secret
  query or fragment parameters (`?token=`, `#token=`, `&sig=`), chat webhook URLs, `--*-token`
  / `--api-key` arguments, `*_TOKEN=` / `*_API_KEY=` assignments, and token shapes that are
  unmistakable (Slack `xox?-`, GitHub `ghp_`, Hugging Face `hf_`, OpenAI `sk-`, AWS `AKIA`,
  `Bearer ...`).
It is a best effort on known shapes: the way to keep a secret out of a report is to keep it out
of the config (`webhook_url_env`).
"""

from __future__ import annotations

import re

import yaml

REDACTED = "<redacted>"
_SECRET_PARTS = {"token", "secret", "secrets", "password", "passwd", "pwd", "passphrase", "apikey", "webhook",
                 "credential", "credentials", "auth", "authorization", "cookie", "signature"}
_SECRET_PAIRS = ("api_key", "private_key", "access_key", "secret_key", "client_secret")
_TEXT_PATTERNS = [
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@'\"]+:[^/\s@'\"]*@"), rf"\1{REDACTED}@"),
    # secret query or fragment parameters
    (re.compile(r"(?i)([?#&;][\w.-]*(?:token|key|secret|password|passwd|sig|signature|auth)[\w.-]*=)[^&#\s'\"]+"),
     rf"\1{REDACTED}"),
    # chat webhooks: the path is the secret
    (re.compile(r"(?i)(https?://hooks\.slack\.com/)[^\s'\"]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(https?://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/)[^\s'\"]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(https?://[\w.-]*webhook[\w.-]*\.office\.com/)[^\s'\"]+"), rf"\1{REDACTED}"),
    # command-line flags and environment assignments
    (re.compile(r"(?i)(--?[\w-]*(?:token(?!s)|secret|password|passwd|api[_-]?key)[\w-]*(?:=|\s+))(?!<redacted>)[^\s'\"]+"),
     rf"\1{REDACTED}"),
    (re.compile(r"\b([A-Z0-9_]*(?:TOKEN(?!S)|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY)[A-Z0-9_]*=)[^\s'\"]+"),
     rf"\1{REDACTED}"),
    # token shapes
    (re.compile(r"\bxox[abposr]-[\w-]{8,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/=-]{8,}"), rf"\1{REDACTED}"),
]
# `key: value` (block or flow style, quoted or not) for the fallback on text that is not YAML
_KEY_VALUE = re.compile(r"""(?P<key>["']?(?P<name>[\w.-]+)["']?\s*:[ \t]*)(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,}\]#][^,}\]#\n]*)""")


def is_secret_key(key) -> bool:
    name = str(key).lower()
    if name.endswith("_env"):  # names the environment variable that holds the secret
        return False
    parts = set(re.split(r"[_\-.\s]+", name))
    return bool(parts & _SECRET_PARTS) or any(p in name.replace("-", "_") for p in _SECRET_PAIRS)


def redact_text(text: str) -> str:
    """Known secret shapes removed from any text (a value, a command line)."""
    for pattern, repl in _TEXT_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact(obj):
    if isinstance(obj, dict):
        return {k: REDACTED if is_secret_key(k) and v not in (None, "") else _redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def redact_config_text(text: str) -> str:
    """config.yaml's text with secrets replaced by <redacted> (see the module docstring)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        return yaml.safe_dump(_redact(data), sort_keys=False, allow_unicode=True, width=1_000_000)
    # Not a YAML mapping (truncated, damaged): redact line by line.
    def key_value(m: re.Match) -> str:
        return m.group("key") + REDACTED if is_secret_key(m.group("name")) else m.group(0)

    return redact_text(_KEY_VALUE.sub(key_value, text))
