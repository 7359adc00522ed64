"""What a forked runner's own path does once per process, not once per run: the model's tool list and the
imports of the run's life (`lifecycle`), both left warm in the zygote for every child."""

import dis
from pathlib import Path

from nexus.agent_runner import lifecycle
from nexus.agent_runner.hypervisor import Hypervisor
from nexus.agent_runner.session import model_tools
from nexus.domain.agents import Permissions
from nexus.domain.sessions import SessionState


def _hv(ws: Path, **kwargs: object) -> Hypervisor:
    return Hypervisor(
        ws, Permissions(), SessionState(session_id="s", project_path=str(ws)), sandbox_mode="none", **kwargs
    )


def test_the_models_tool_list_is_made_once_per_set_of_offered_tools(tmp_path: Path) -> None:
    first, again = model_tools(_hv(tmp_path)), model_tools(_hv(tmp_path))
    assert [t.name for t in first] == list(_hv(tmp_path).offered())
    assert all(a is b for a, b in zip(first, again, strict=True))  # made once: no schema decoded again
    assert first is not again  # each run's list is its own
    only = model_tools(_hv(tmp_path, allowed_tools=["read_file", "finish"]))
    assert sorted(t.name for t in only) == ["finish", "read_file"]  # another set: its own list
    assert [t.name for t in model_tools(_hv(tmp_path))] == [t.name for t in first]


def test_a_runs_life_imports_nothing_per_run() -> None:
    # An import of a module long loaded still costs a forked child its pages (the module's and its spec's
    # reference counts): ~90 page faults a run when the run's life imported in its functions.
    for function in (lifecycle.start, lifecycle.run, lifecycle._run, lifecycle._mask_logs, lifecycle._on_signal):
        code = function.__code__
        imports = [i.argval for i in dis.get_instructions(code) if i.opname == "IMPORT_NAME"]
        nested = [c for c in code.co_consts if hasattr(c, "co_code")]
        imports += [i.argval for c in nested for i in dis.get_instructions(c) if i.opname == "IMPORT_NAME"]
        assert imports == [], function.__name__
