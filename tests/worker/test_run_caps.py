"""What an operator sets on the worker reaches every run, whichever way it is launched; and a run's command
reads nothing of the processes that hold its secrets (the worker, the zygote, its runner).

Before, the worker handed a runner only the bus's address, the secrets and how to log: a cap an operator
set on the worker (NEXUS_LEDGER_MAX_CHANGES, the disk budget, the sandbox mode) bound no run."""

import ctypes
import json
import uuid

import pytest

from nexus.agent_runner.hypervisor.privileges import dropper
from nexus.domain.settings import load_settings
from nexus.worker.main import RUN_CAPS, runner_env
from nexus.worker.runtimes.kubernetes_objects import JobSettings, build_job, build_secret
from nexus.worker.settings import WorkerSettings
from tests.agent_runner.test_runner_inspection import probe_steps
from tests.worker.conftest import make_run
from tests.worker.k8s.conftest import make_request

pytestmark = pytest.mark.infra

WRITES = "steps:\n" + "".join(
    f'  - tool_calls: [{{name: write_file, args: {{path: "f{n}.txt", content: "x"}}}}]\n' for n in range(6)
)
CAPS = {
    "NEXUS_SANDBOX": "none",
    "NEXUS_DISK_BUDGET_BYTES": "1048576",
    "NEXUS_LEDGER_MAX_CHANGES": "2",
    "NEXUS_APPROVALS_MAX": "4",
    "NEXUS_GIT_TIMEOUT_S": "30.0",
    "NEXUS_LOG_LIMIT": "65536",
}


@pytest.mark.parametrize("zygote", [True, False], ids=["forked", "cold"])
async def test_the_ledger_cap_set_on_the_worker_binds_its_runs(workers, bus, zygote: bool) -> None:
    workers.start(zygote=zygote, ledger_max_changes=2)
    run = await make_run(WRITES)
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    final = bus.of(run.id, "run.status")[-1]
    assert final["status"] == "failed" and final["reason"] == "ledger limit of 2 changes reached", final
    assert len(bus.of(run.id, "run.file_write")) == 2


def test_every_cap_the_operator_sets_is_in_each_runs_environment_and_kubernetes_job() -> None:
    """The launcher puts `runner_env` in the environment of every run (local process, zygote, Job): here its
    way into a Job, whose environment names the Secret's keys."""
    env = runner_env(load_settings(WorkerSettings, CAPS))
    assert {k: env[k] for k in CAPS} == CAPS
    assert set(CAPS) == {f"NEXUS_{name.upper()}" for name in RUN_CAPS}
    assert not set(CAPS) & set(runner_env(load_settings(WorkerSettings, {})))  # unset: the runner's defaults
    request = make_request(env=env)
    job = build_job(request, JobSettings(namespace="nexus-agents", image="nexus/agent-runner:dev"))
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(CAPS) <= names
    job["metadata"]["uid"] = "uid-1"  # what the API server gives the Job it made
    secret = build_secret(request, job)
    assert set(CAPS) <= set(secret.get("data", {}) | secret.get("stringData", {}))


def _capless() -> None:
    """Root without a capability, for good: the kernel judges it like any other user's process (the
    machine's Python lives in root's home, out of another user's reach)."""
    dropper(ctypes.CDLL(None, use_errno=True))()


@pytest.mark.parametrize("zygote", [True, False], ids=["forked", "cold"])
async def test_a_command_reads_nothing_of_the_worker_the_zygote_or_its_runner(workers, bus, zygote: bool) -> None:
    """In the `none` mode a command runs as the runner's user, which is the worker's when the worker is not
    root (or runs runs as itself). Every process of that user holding the run's secret or credential (the
    worker, which resolves secrets and mints credentials; the run's runner, forked or cold) used to let the
    command read its environment and memory."""
    value = f"sk-{uuid.uuid4().hex}"
    steps = probe_steps(value)
    proc = workers.start(zygote=zygote, sandbox="none", secret_model_key=value, preexec=_capless)
    run = await make_run(json.dumps({"steps": steps}), allow=("python3 probe.py",), secrets=("MODEL_KEY",))
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.statuses(run.id)[-1] == "succeeded", bus.of(run.id, "run.status")
    (found,) = (workers.tmp / "w1" / "runs").glob(f"{run.id}.*/workspace/found.json")
    seen = json.loads(found.read_text())
    assert seen["own"]  # the probe could read /proc: what it did not read was refused
    assert seen["found"] == [], seen
    assert not [kind for kind, pid in seen["readable"] if pid == proc.pid], seen
