"""Fixtures of the reliability suite: a live supervisor (real HTTP API on 127.0.0.1, the
default dashboard routes, a chaos worker training slowly) shared by the API tests of a module,
and the same on 127.0.0.2 with `allow_remote: true` (a non-default loopback-range address, so
the Host check is off and only the bearer token guards the API)."""

from __future__ import annotations

import pytest

from rlguard.orchestrator.default_sinks import default_sinks_and_routes
from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.reliability.chaos_lib import run_config, run_in_thread, wait_for


def _live(tmp, **supervisor):
    scenario = {"steps": 100_000, "checkpoint_every": 2, "step_s": 0.05, "ckpt_bytes": 4 << 10}
    cfg = parse_run_config(run_config(tmp, scenario, supervisor={"step_timeout_s": 60.0, "heartbeat_timeout_s": 30.0,
                                                                 "command_timeout_s": 60.0, **supervisor}))
    run_dir = tmp / "run"
    sinks, routes = default_sinks_and_routes(run_dir, cfg)
    sup = Supervisor(run_dir, cfg, sinks=sinks, extra_routes=routes, scheduler=False)
    thread, box = run_in_thread(sup)
    sup.test_thread, sup.test_box = thread, box  # the tests check the loop is still alive
    wait_for(lambda: sup.live.state is RunState.RUNNING and len(sup.registry.entries()) >= 2, 60,
             "a running supervisor with checkpoints")
    yield sup
    sup.detach("end of the module's tests")
    thread.join(20)
    if sup.live.worker is not None:
        sup.live.worker.stop(1.0)


@pytest.fixture(scope="module")
def live_supervisor(tmp_path_factory):
    yield from _live(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def remote_supervisor(tmp_path_factory):
    yield from _live(tmp_path_factory.mktemp("remote"), host="127.0.0.2", allow_remote=True)
