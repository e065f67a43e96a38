"""The worker SDK: standalone mode, buffering while the supervisor is away, reattaching to a
new address, pausing, and acknowledgements, over the real HTTP stack."""

from __future__ import annotations

import json
import socket
import threading

from rlguard.monitors.events import parse_event_line
from rlguard.orchestrator import sdk
from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.control_api import ControlServer, build_app


class RecordingTarget:
    """The supervisor side of the channel, reduced to recording what arrives."""

    def __init__(self, replies=None):
        self.bodies: list[dict] = []
        self.heartbeats: list[dict] = []
        self.replies = list(replies or [])  # lists of commands, one per sync
        self.lock = threading.Lock()

    def status(self):
        return {"state": "running"}

    def worker_sync(self, body):
        with self.lock:
            self.bodies.append(body)
            cmds = self.replies.pop(0) if self.replies else []
        return {"commands": [c.to_dict() for c in cmds]}

    def worker_heartbeat(self, body):
        self.heartbeats.append(body)

    def operator(self, action, body):
        return 404, {}


def _serve(target, token="tok"):
    server = ControlServer(build_app(target, token))
    server.start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_client_writes_the_metrics_file_and_has_no_commands(tmp_path, monkeypatch):
    for k in ("RLGUARD_CONTROL", "RLGUARD_RUN_DIR", "RLGUARD_ATTEMPT", "RLGUARD_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    client = sdk.connect(tmp_path)
    assert not client.supervised
    client.report(1, {"reward": 1.5, "kl": float("nan"), "perplexity": None})
    client.report(2, {"reward": 1.6, "kl": 0.01})
    assert client.commands(2) == []
    client.checkpoint_written(2, tmp_path / "checkpoints" / "step-000002")
    client.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    events = [parse_event_line(x, i + 1) for i, x in enumerate(lines)]
    assert [e.step for e in events] == [1, 2] and events[0].attempt == 0
    assert events[0].metrics["kl"] != events[0].metrics["kl"] and events[0].metrics["perplexity"] is None
    status = json.loads((tmp_path / "worker-status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 2


def test_events_are_buffered_while_the_supervisor_is_away_and_delivered_to_its_new_address(tmp_path, monkeypatch):
    monkeypatch.setattr(sdk, "BUFFER_MAX_EVENTS", 5)
    now = [0.0]
    client = sdk.WorkerClient(tmp_path, url=f"http://127.0.0.1:{_free_port()}", token="tok", heartbeat_s=0,
                              clock=lambda: now[0])
    for step in range(1, 9):  # nobody listens: never raises, buffers the newest 5
        client.report(step, {"kl": 0.01 * step})
        now[0] += 1.0
    assert client.send_failures >= 1 and client.dropped_events == 3
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 8  # the record is complete anyway
    target = RecordingTarget()
    server = _serve(target)
    try:
        (tmp_path / "supervisor.json").write_text(json.dumps({"url": server.url}))
        now[0] += sdk.RETRY_AFTER_FAILURE_S
        client.report(9, {"kl": 0.09})
        delivered = [e["step"] for b in target.bodies for e in b["events"]]
        assert delivered == [5, 6, 7, 8, 9]
        assert target.bodies[-1]["wait_s"] > 0  # a report waits for the supervisor's decision
    finally:
        client.close()
        server.stop()
    assert target.bodies[-1]["status"] == "completed"


def test_a_new_supervisor_address_is_tried_at_once_not_after_the_back_off(tmp_path):
    now = [0.0]
    client = sdk.WorkerClient(tmp_path, url=f"http://127.0.0.1:{_free_port()}", token="tok", heartbeat_s=0,
                              clock=lambda: now[0])
    client.report(1, {"kl": 0.01})  # nobody listens: fails, backs off
    failures = client.send_failures
    assert failures >= 1
    client.report(2, {"kl": 0.02})  # within the back-off, same address: not even tried
    assert client.send_failures == failures
    target = RecordingTarget()
    server = _serve(target)
    try:
        (tmp_path / "supervisor.json").write_text(json.dumps({"url": server.url}))
        client.report(3, {"kl": 0.03})  # still within the back-off, but a new address: sent now
        assert [e["step"] for b in target.bodies for e in b["events"]] == [1, 2, 3]
    finally:
        client.close()
        server.stop()


def test_wrong_token_is_rejected_and_the_worker_keeps_going(tmp_path):
    target = RecordingTarget()
    server = _serve(target, token="right")
    try:
        client = sdk.WorkerClient(tmp_path, url=server.url, token="wrong", heartbeat_s=0)
        client.report(1, {"kl": 0.1})
        assert target.bodies == [] and client.send_failures == 1
        client.close()
    finally:
        server.stop()


def test_pause_blocks_until_resume_and_commands_are_acknowledged(tmp_path, monkeypatch):
    monkeypatch.setattr(sdk, "PAUSE_POLL_S", 0.01)
    save = Command(CommandKind.SAVE)
    tighten = Command(CommandKind.SET_CONSTRAINTS, {"kl_coef": 0.075}, decision_id="d-000003")
    pause, resume = Command(CommandKind.PAUSE), Command(CommandKind.RESUME)
    target = RecordingTarget(replies=[[pause], [], [tighten], [resume]])
    server = _serve(target)
    try:
        client = sdk.WorkerClient(tmp_path, url=server.url, token="tok", heartbeat_s=0)
        client.report(1, {"kl": 0.1})
        got = client.commands(1)  # pause ... tighten arrives while paused ... resume
        assert got == [tighten]
        target.replies.append([save])
        client.report(2, {"kl": 0.1})
        got2 = client.commands(2)
        assert got2 == [save]
        client.done(save, ok=False, detail="disk full")
        client.report(3, {"kl": 0.1})
        client.close()
    finally:
        server.stop()
    acks = [a for b in target.bodies for a in b["acks"]]
    by_id = {a["command_id"]: a for a in acks}
    assert by_id[pause.id]["ok"] and by_id[pause.id]["detail"] == "paused"
    assert by_id[tighten.id]["ok"] and by_id[resume.id]["ok"]
    assert by_id[save.id] == {"command_id": save.id, "ok": False, "detail": "disk full", "step": 2}
    assert any(b["paused"] for b in target.bodies)
