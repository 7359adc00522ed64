"""What the edges show of a case's runs once they ended: the card in the Plane double (board-sync's
projection) and the alerts in the Telegram fake (telegram-gateway's), each there once — never lost,
never doubled. Each check returns what is wrong, empty when nothing is."""

import asyncio
from collections import Counter
from collections.abc import Callable

from nexus.board_sync.providers.base import group_of
from nexus.dev.doubles.plane import PlaneDouble
from nexus.telegram_gateway.outbox import REPEAT
from tests.telegram_gateway.fake_bot_api import FakeBotApi

LEAD = 1001  # bound as a lead, subscribed to everything
RUN_ALERT = {"failed": "Run failed", "timed_out": "Run timed out"}
POLLS = 600  # a bounded count of polls, 0.05 s apart, for a projection to catch up


async def settled(problems: Callable[[], list[str]]) -> list[str]:
    """What is still wrong once it stops changing for the better (or the polls run out)."""
    found = problems()
    for _ in range(POLLS):
        if not found:
            return []
        await asyncio.sleep(0.05)
        found = problems()
    return found


async def board(plane: PlaneDouble, task_id: str, task_status: str, run_ids: list[str]) -> list[str]:
    """One item for the task, in the task's column, with one comment for each of its finished runs."""

    def problems() -> list[str]:
        items = plane.by_external_id(task_id)
        if len(items) != 1:
            return [f"board: {len(items)} items for task {task_id}"]
        out = []
        if (group := plane.group_of(items[0])) != group_of(task_status):
            out.append(f"board: the item of {task_id} is {group}, the task {task_status}")
        comments = plane.comments.get(items[0]["id"], [])
        for run_id in run_ids:
            n = sum(run_id in c["comment_html"] for c in comments)
            if n != 1:
                out.append(f"board: {n} comments for run {run_id}")
        return out

    return await settled(problems)


def marked_repeats(fake: FakeBotApi) -> int:
    """How many messages the lead got headed as a possible repeat (so far: the fake lives through every case)."""
    return sum(REPEAT in m.get("text", "") for m in fake.sent(LEAD))


async def telegram(
    fake: FakeBotApi,
    runs: dict[str, str],
    approvals: list[str],
    goal_id: str | None = None,
    *,
    gateway_killed: bool = False,
) -> list[str]:
    """The lead heard each alert once: a failed or timed-out run (`runs`: run id → status), each approval
    (with its buttons, then edited once to say who decided) and the goal's end; nothing said twice.
    With `gateway_killed`, an alert may come once more headed as a possible repeat: a gateway killed in
    the instant between Telegram taking a message and recording its answer cannot know whether it was
    sent, and repeats it rather than lose it (docs/telegram.md). Everywhere else that is a problem too."""

    def problems() -> list[str]:
        every = fake.sent(LEAD)
        sent = [m for m in every if REPEAT not in m.get("text", "")]

        def heard(n: int, want: int, which) -> bool:
            """Heard `n` times as `want`ed, or (after a gateway kill) once more, or only, as a marked repeat."""
            marked = sum(REPEAT in m.get("text", "") and which(m) for m in every)
            return (n, marked) == (want, 0) or (gateway_killed and want == 1 and n <= 1 and marked == 1)

        out = []
        for run_id, status in runs.items():
            want = 1 if status in RUN_ALERT else 0

            def run_end(m: dict, run_id: str = run_id) -> bool:
                return run_id in m.get("text", "") and "🔥" in m.get("text", "")

            n = sum(run_end(m) for m in sent)
            if not heard(n, want, run_end):
                out.append(f"telegram: {n} end alerts for run {run_id} ({status}), {want} expected")
        for approval_id in approvals:

            def alert(m: dict, approval_id: str = approval_id) -> bool:
                return approval_id in m.get("text", "") and "reply_markup" in m

            n = sum(alert(m) for m in sent)
            # Edited to say who decided: the decision's handler and the sender (for an alert posted after
            # the decision) may both edit it, to the same text, which changes nothing the lead sees.
            edits = {
                m["text"]
                for m in fake.sent(LEAD, "editMessageText")
                if approval_id in m.get("text", "") and "Approved by" in m.get("text", "")
            }
            if not heard(n, 1, alert) or len(edits) != 1:
                out.append(f"telegram: approval {approval_id} alerted {n} times, edited to {len(edits)} texts")
        if goal_id is not None:

            def goal_end(m: dict) -> bool:
                return goal_id in m.get("text", "") and "Goal done" in m.get("text", "")

            n = sum(goal_end(m) for m in sent)
            if not heard(n, 1, goal_end):
                out.append(f"telegram: {n} 'Goal done' alerts for {goal_id}")
        ids = [*runs, *approvals, *([goal_id] if goal_id else [])]  # never a stand-in: "-" is in every alert
        mine = [m["text"] for m in sent if any(i in m.get("text", "") for i in ids)]
        out += [f"telegram: said {n} times: {text[:80]!r}" for text, n in Counter(mine).items() if n > 1]
        return out

    return await settled(problems)
