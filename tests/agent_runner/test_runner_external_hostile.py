"""A hostile external CLI (steered by its model to do anything its process can) against the real runner:
it runs in the sandbox the hypervisor gives commands. It used to run as the runner itself: it read the
runner's environment (the run's NATS credential, every secret the worker handed the run) in /proc, the
session's state file, and wrote anywhere the runner could."""

import uuid

import pytest

from nexus.agent_runner.hypervisor import sandbox as sandbox_mod
from tests.agent_runner.test_runner_external import external
from tests.agent_runner.test_runner_support import (  # noqa: F401 — pytest fixtures, used as parameters
    bare_repo,
    final_status,
    js,
    read_events,
    start_runner,
)

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("mode", ["bwrap", "landlock"])
async def test_a_cli_reads_no_credential_or_secret_and_writes_nowhere_but_the_workspace(
    js, nats_url, tmp_path, mode
) -> None:
    if sandbox_mod.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    bare = bare_repo(tmp_path)
    secret = "s3cr3t-" + uuid.uuid4().hex
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = (
        # every process's environment it can read (the runner's holds the credential and the secrets)
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done > leak-env.txt 2>/dev/null;"
        # the runner's state directory (the session's state file) and its HOME, beside the workspace
        "cat ../state/* ../state/.* ../home/* > leak-state.txt 2>/dev/null;"
        f"echo pwned > {outside}/pwned; echo pwned > ../pwned; echo pwned > /tmp/pwned-{uuid.uuid4().hex};"
        "ls -la /tmp > leak-tmp.txt 2>&1; true"
    )
    steps = [{"shell": hostile}, {"tool": "finish", "arguments": {"summary": "done"}}]
    r = await start_runner(
        tmp_path,
        nats_url,
        external(steps, bare=bare, secrets=["API_TOKEN"]),
        secrets={"API_TOKEN": secret},
        env={"NEXUS_SANDBOX": mode},
    )
    assert await r.exit_code() == 0, r.log()
    seen = (r.workspace / "leak-env.txt").read_text() + (r.workspace / "leak-state.txt").read_text()
    assert secret not in seen, seen
    assert "NEXUS_NATS_CREDS" not in seen and "NEXUS_SECRET" not in seen and "USER KEY" not in seen, seen
    assert r.cfg.session_id not in (r.workspace / "leak-state.txt").read_text()  # no state file read
    assert not (outside / "pwned").exists() and not (r.dir / "pwned").exists()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "succeeded", end  # before: its push was refused, a secret found in what it wrote


@pytest.mark.parametrize("then", ["; true", "; sleep 60"], ids=["calls-next", "stays-busy"])
async def test_a_cli_forking_past_its_process_cap_is_ended_at_once(js, nats_url, tmp_path, then) -> None:
    """The CLI runs in its cgroups like a command, but nobody watched their counters while it ran: a fork
    past `pids.max` failed and the CLI went on (here: to finish, at once or after a minute, and the run
    succeeded). Now the counters are watched as a command's are, and asked before each call the CLI makes:
    the run ends with its reason."""
    bomb = "for i in $(seq 700); do sleep 120 & done 2>/dev/null" + then
    steps = [{"shell": bomb}, {"tool": "finish", "arguments": {"summary": "done"}}]
    r = await start_runner(tmp_path, nats_url, external(steps))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed", end
    assert end["reason"] == "the external CLI ran more than 512 processes at once; it was ended", end


async def test_a_cli_writing_past_the_disk_budget_is_ended(js, nats_url, tmp_path) -> None:
    """Each file under the file-size limit (what is left of the budget), together past the budget: the
    CLI's own writes were counted only at the commit, and a run without one never."""
    fill = "for i in 1 2 3 4; do head -c 600000 /dev/zero > fill$i; done"
    steps = [{"shell": fill}, {"tool": "finish", "arguments": {"summary": "done"}}]
    r = await start_runner(tmp_path, nats_url, external(steps), env={"NEXUS_DISK_BUDGET_BYTES": "1000000"})
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed", end
    assert end["reason"] == "the external CLI wrote past the run's disk budget; it was ended", end


async def test_a_cli_reporting_spend_in_a_loop_publishes_one_event_a_step(js, nats_url, tmp_path) -> None:
    """Each usage report was a `run.llm` event: no ledger change binds a report, and one of a token reaches
    no limit soon (here 3,000 reports, 3,000 events). Now the spend a CLI reports between two of its calls
    is one event per model, its sum kept whole; a report no event or budget can hold (past 2^53, NaN) is held
    to what one can, so the token limit still ends the run, never an encoding error."""
    import json
    import sys

    from tests.agent_runner.test_runner_external import CLI

    steps = [{"usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.001}}] * 3000
    steps += [{"usage": {"input_tokens": 1, "cost_usd": "nan"}}, {"tool": "note", "arguments": {"message": "spent"}}]
    steps += [{"usage": {"input_tokens": 10**30}}, {"tool": "finish", "arguments": {"summary": "done"}}]
    script = tmp_path / "spend.json"
    script.write_text(json.dumps(steps))
    r = await start_runner(tmp_path, nats_url, external(steps, command=[sys.executable, str(CLI), str(script)]))
    assert await r.exit_code() == 0, r.log()[-2000:]
    events = await read_events(js, r.cfg.run_id)
    llm = [e["data"] for _, e in events if e["type"] == "run.llm"]
    assert len(llm) <= 3, len(llm)
    assert llm[0]["input_tokens"] == 3001 and llm[0]["output_tokens"] == 3000, llm[0]
    assert abs(llm[0]["cost_usd"] - 3.0) < 1e-6, llm[0]
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"].startswith("token limit of 200000 reached"), end
