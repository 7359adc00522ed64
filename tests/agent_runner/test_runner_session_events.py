"""A run's session is said in the run's own events, not beside them: its opening report names what
confines its commands (no log line for it), and its end rides on the run's verdict (no report of its
own). A trivial run is four events: running, the session opened, the model call, the verdict. The
runner runs as its own process against the real NATS, as the worker starts it."""

import pytest

from nexus.agent_runner.hypervisor import sandbox
from tests.agent_runner.test_runner_support import config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra


async def test_a_trivial_runs_session_opens_and_ends_in_the_runs_events(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config("steps:\n  - say: done\n"))
    assert await r.exit_code() == 0, r.log()
    events = [e for _, e in await read_events(js, r.cfg.run_id)]
    assert [e["type"] for e in events] == ["run.status", "run.session", "run.llm", "run.status"], events
    (opened,) = [e["data"] for e in events if e["type"] == "run.session"]
    mode = sandbox.detect("auto")
    assert (opened["session_id"], opened["status"], opened["sandbox"]) == (r.cfg.session_id, "active", mode)
    end = final_status([(None, e) for e in events])
    assert end["status"] == "succeeded"
    assert end["session"] == {**opened, "status": "completed"}, end
    assert "commands are confined by" in r.log()  # said in words where the runner logs
