"""The run workflow decides follow-ups without doing them: what a run's move asks for is a value
(tested here with no server), carried out by the engine (the e2e suites prove the carrying)."""

import msgspec

from nexus.core_api.workflow import runs
from nexus.core_api.workflow.followups import Launch, NotifyParent, Publish, RunEnded, TaskFollowsRun
from nexus.core_api.workflow.launch import retried_config
from nexus.db.documents import Run
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import LaunchRun, RepoSpec, RunConfig


def _run(**fields) -> Run:
    base = dict(
        id="run_1",
        task_id="task_1",
        agent_id="agt_1",
        agent_revision=1,
        goal_id="goal_1",
        session_id="ses_1",
        parent_run_id=None,
        status="running",
        attempt=1,
        attempts=[],
        reason="",
        summary="",
        created_at=None,
        ended_at=None,
    )
    return Run.model_construct(**{**base, **fields})


def test_a_child_run_that_ends_moves_its_task_announces_notifies_its_parent_and_its_goal_follows() -> None:
    run = _run(status="succeeded", parent_run_id="run_0")
    then = runs._followups(run, "running", 1)
    assert [type(f) for f in then] == [TaskFollowsRun, Publish, NotifyParent, RunEnded]
    ended = {"id": "run_1", "status": "succeeded", "attempt": 1, "cost_usd": 0.0}  # what the task keeps of it
    assert then[0] == TaskFollowsRun("task_1", TaskStatus.DONE, "run_1", ended)
    assert isinstance(then[1], Publish) and then[1].type == "run.succeeded"


def test_a_top_run_that_fails_notifies_no_parent() -> None:
    then = runs._followups(_run(status="failed"), "running", 1)
    assert [type(f) for f in then] == [TaskFollowsRun, Publish, RunEnded]
    ended = {"id": "run_1", "status": "failed", "attempt": 1, "cost_usd": 0.0}
    assert then[0] == TaskFollowsRun("task_1", TaskStatus.FAILED, "run_1", ended)


def test_a_late_verdict_of_an_earlier_attempt_cancels_the_later_one_in_the_worker() -> None:
    run = _run(status="succeeded", attempts=[{"n": 1, "verdict": "succeeded"}, {"n": 2}])
    then = runs._followups(run, "running", 2)
    assert any(isinstance(f, Publish) and f.type == "worker.cancel_run" for f in then)


def test_a_failed_attempt_with_attempts_left_launches_the_next() -> None:
    run = _run(status="queued", attempt=2)
    assert runs._followups(run, "running", 1) == [Launch(run)]


def test_the_first_running_is_announced_once_and_nothing_changes_nothing() -> None:
    started = runs._followups(_run(status="running"), "queued", 1)
    assert [f.type for f in started if isinstance(f, Publish)] == ["run.started"]
    assert runs._followups(_run(status="running"), "running", 1) == []
    assert runs._followups(_run(status="waiting_approval"), "running", 1) == []


def test_a_launch_carries_the_run_id_once() -> None:
    cfg = RunConfig(run_id="run_once", agent_id="agt_1", task_id="task_1", system_prompt="p")
    cmd = LaunchRun(attempt=1, config=cfg)
    assert cmd.run_id == "run_once"
    assert msgspec.json.encode(cmd).count(b"run_once") == 1


def test_a_retry_is_the_same_config_with_its_own_run_session_and_branch() -> None:
    cfg = RunConfig(
        run_id="run_old",
        agent_id="agt_1",
        task_id="task_1",
        system_prompt="p",
        session_id="ses_old",
        repo=RepoSpec(url="file:///r", branch="nexus/task_1/run_old"),
        tools=["read_file"],
    )
    old = _run(id="run_old", status="failed")
    new = retried_config(old, cfg, "run_new", "ses_new")
    assert (new.run_id, new.session_id, new.repo and new.repo.branch) == ("run_new", "ses_new", "nexus/task_1/run_new")
    assert msgspec.structs.replace(new, run_id="run_old", session_id="ses_old", repo=cfg.repo) == cfg
