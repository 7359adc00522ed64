"""What one attempt's agent can record is capped: every change is a run event, a database record and a
line of the API's answers. A command making files in a loop records a change per file (200 per command),
and a model may make 64 calls a reply: with no cap a run recorded changes for as long as its steps lasted
(tens of thousands a minute). Past the cap a call is refused without a change of its own, nothing recorded
is lost, and the chain still verifies."""

from typing import Any

from nexus.domain.sessions import CommandRunChange, FileWriteChange

CAP = 300
MAKE = "import sys\nfor i in range(500):\n    open(f'f{sys.argv[1]}_{i}', 'w').close()\n"


async def test_a_command_loop_making_files_records_no_more_than_the_cap(sandbox: Any) -> None:
    hv = sandbox.make(max_changes=CAP)
    (sandbox.ws / "make.py").write_text(MAKE)
    results = [await hv.call("run_command", {"cmd": f"python3 make.py {n}"}) for n in range(5)]
    assert results[0].ok and results[1].ok, results  # 201 changes each: the second passes the cap
    for refused in results[2:]:
        assert refused.error == f"refused (ledger-limit): ledger limit of {CAP} changes reached", refused
    recorded = sandbox.session.changes
    assert len([c for c in recorded if isinstance(c, CommandRunChange)]) == 2
    assert CAP <= len(recorded) <= CAP + 201, len(recorded)  # at most one call's changes past it
    assert hv.ledger_full() == f"ledger limit of {CAP} changes reached"
    # The runner's own calls (its final commit, its notes) are still recorded: the run ends whole.
    assert (await hv.runner_call("note", {"message": "the runner's own"})).ok
    assert sum(isinstance(c, FileWriteChange) for c in sandbox.session.changes) == 400
    sandbox.assert_recorded()  # the state file holds every change, the chain verifies, the events match


async def test_approvals_past_the_cap_are_refused_unheard(sandbox: Any) -> None:
    """Every approval reaches each approver and the database: past the attempt's cap a request is refused
    without asking anyone, and the run is told to end (`limit_reached`)."""
    asked: list[str] = []

    async def approver(action: str, detail: str) -> bool:
        asked.append(action)
        return True

    hv = sandbox.make(approver=approver, max_approvals=2)
    results = [await hv.call("request_approval", {"action": f"deploy {n}", "detail": "again"}) for n in range(4)]
    assert [r.ok for r in results] == [True, True, False, False]
    assert results[2].error == "refused (approval-limit): approval limit of 2 requests reached", results[2]
    assert asked == ["deploy 0", "deploy 1"]
    assert hv.limit_reached() == "approval limit of 2 requests reached"
