"""The run's bearer token goes to loopback or to the host the run was configured with, never to
whatever URL RUN/supervisor.json names (a file another user, or a copy from another machine,
may have filled). A listener on this machine's non-loopback address stands for the stranger:
after the refused call, nothing has connected to it."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import yaml

from rlguard.orchestrator import control_cli
from rlguard.orchestrator.control_cli import ControlError, call
from rlguard.orchestrator.sdk import WorkerClient


def _own_address() -> str:
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("10.255.255.255", 1))  # no packet is sent: just picks the outgoing interface
        ip = probe.getsockname()[0]
        probe.close()
    except OSError:
        ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("this machine has no non-loopback address to stand for a stranger's host")
    return ip


@pytest.fixture()
def stranger():
    """A listening socket on a non-loopback address that answers every request with 200 {} and
    records what it received."""
    sock = socket.socket()
    sock.bind((_own_address(), 0))
    sock.listen(8)
    got: list[bytes] = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                got.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    host, port = sock.getsockname()
    yield host, port, got
    sock.close()


def _run_dir(tmp_path, url: str, supervisor: dict | None = None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "control.token").write_text("the-token-0123\n")
    (run / "supervisor.json").write_text(json.dumps({"pid": 1, "host": "127.0.0.1", "port": 1, "url": url}))
    (run / "config.yaml").write_text(yaml.safe_dump({"supervisor": supervisor or {}}))
    (run / "journal.jsonl").write_text("")
    return run


def test_the_cli_refuses_to_send_the_token_to_a_foreign_url(tmp_path, stranger, capsys):
    host, port, got = stranger
    run = _run_dir(tmp_path, f"http://{host}:{port}")
    with pytest.raises(ControlError, match="not on loopback.*token is not sent"):
        call(run, "POST", "/api/halt", {"reason": "x"})
    assert control_cli.halt_main([str(run)]) == 2
    assert "supervisor.json" in capsys.readouterr().err
    for url in ("http://attacker.example:80", "http://127.0.0.1@attacker.example/", "http://[fd00::1]:9"):
        (run / "supervisor.json").write_text(json.dumps({"url": url}))
        with pytest.raises(ControlError, match="token is not sent"):
            call(run, "POST", "/api/pause")
    assert got == [], got


def test_the_cli_sends_it_to_the_configured_host(tmp_path, stranger):
    host, port, got = stranger
    run = _run_dir(tmp_path, f"http://{host}:{port}", {"host": host, "allow_remote": True})
    assert call(run, "POST", "/api/relax", {}) == (200, {})
    assert len(got) == 1 and b"Bearer the-token-0123" in got[0]


def test_the_sdk_does_not_follow_supervisor_json_to_a_foreign_host(tmp_path, stranger):
    """The worker's configured supervisor (RLGUARD_CONTROL) is gone; supervisor.json now names a
    stranger: the SDK keeps buffering instead of posting its token there."""
    host, port, got = stranger
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: every send to the configured supervisor fails fast
    run = _run_dir(tmp_path, f"http://{host}:{port}")
    client = WorkerClient(run, url=f"http://127.0.0.1:{dead_port}", token="the-token-0123", heartbeat_s=0,
                          sync_wait_s=0)
    try:
        client.report(1, {"kl": 0.01})
        client._retry_at = 0.0  # skip the back-off: try (and rediscover) again at once
        client.report(2, {"kl": 0.01})
    finally:
        client.close()
    assert client.url == f"http://127.0.0.1:{dead_port}"
    assert got == [], got
    # a restarted supervisor on loopback (a new port) is still followed
    (run / "supervisor.json").write_text(json.dumps({"url": "http://127.0.0.1:9"}))
    client._rediscover()
    assert client.url == "http://127.0.0.1:9"
