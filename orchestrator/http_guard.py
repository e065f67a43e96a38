"""Which hosts the supervisor's port and its token belong to: both ends of the loopback rule.

Server side, `HostGuard` (ASGI middleware around the supervisor's one app, API and live page):
- DNS rebinding: a web page on attacker.example whose name the attacker re-points at 127.0.0.1
  reaches our port from the user's browser, same-origin with itself, and reads the answers.
  The browser still sends `Host: attacker.example`, so only loopback Host values are served
  (127.0.0.1, localhost, [::1], with or without a port); with `allow_remote: true` the
  supervisor is meant to be reached by other names, and then the bearer token alone guards
  every POST (the GETs are public by design).
- Framing: every response says X-Frame-Options: DENY and CSP frame-ancestors 'none', so no
  other page can frame the live page and trick a click onto its buttons.

Client side, `token_destination_problem`: the CLI and the SDK send the run's bearer token only
to loopback or to the host the run was configured with, never to whatever URL a
supervisor.json names (a file others may be able to write, or copied from another machine).
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
FRAME_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]


def _host_header_name(value: str) -> str | None:
    """The host name of a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`), or None
    when it is not of that form."""
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
    else:
        name, sep, rest = value.partition(":")
        rest = sep + rest if sep else ""
        sep = "]"
    if not sep or (rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit())):
        return None
    return name.lower()


def is_loopback_host_header(value: str) -> bool:
    return _host_header_name(value) in LOOPBACK_NAMES


def is_loopback_host(host: str) -> bool:
    """A host name or address on this machine's loopback (any 127.x address, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_destination_problem(url: str, configured_host: str | None = None) -> str | None:
    """Why the run's token must not be sent to `url` (None: it may). `configured_host`: the
    supervisor.host the run was started with, or the host of RLGUARD_CONTROL for a worker."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return f"{url!r}, which is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r}, which is not an http:// URL"
    if is_loopback_host(host):
        return None
    if configured_host and host == configured_host.strip("[]").lower():
        return None
    allowed = "loopback" + (f" or the configured host {configured_host!r}" if configured_host else "")
    return (f"{url!r}, which is not on {allowed}; the run's bearer token is not sent there. If the "
            "supervisor really listens there, set supervisor.host to that address (with allow_remote: true)")


class HostGuard:
    """ASGI middleware: refuse foreign Host values (unless allow_remote), forbid framing."""

    def __init__(self, app, allow_remote: bool = False):
        self.app = app
        self.allow_remote = allow_remote

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.allow_remote:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not is_loopback_host_header(host):
                body = json.dumps({"error": f"Host header {host[:100]!r} is not this machine's loopback "
                                            "(127.0.0.1, localhost, [::1]): open the page at "
                                            "http://127.0.0.1:PORT, or set supervisor.allow_remote: true "
                                            "to serve other names"}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), *FRAME_HEADERS]})
                await send({"type": "http.response.body", "body": body})
                return

        async def send_framed(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *FRAME_HEADERS])
            await send(message)

        await self.app(scope, receive, send_framed)
