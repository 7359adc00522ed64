"""Services raise domain errors, not HTTP exceptions: the HTTP edge maps them to problem+json naming
the field, and a NATS command they refuse is dead-lettered at once with their reason."""

import uuid
import msgspec
import pytest
from litestar.exceptions import HTTPException

from nexus.core_api.board.handlers import on_cancel_task
from nexus.core_api.commands import refused_is_poison
from nexus.core_api.context import Context
from nexus.core_api.errors import PROBLEM, DomainError, domain_handler
from nexus.events.consumer import Delivery, Poison
from nexus.events.envelope import make_envelope
from nexus.events.payloads import CancelTask
from tests.core_api.test_chat_commands import ctx  # noqa: F401 — the fixture: a Context on the test servers


def test_a_domain_error_is_not_an_http_exception_and_becomes_problem_json() -> None:
    error = DomainError(422, "agent 'ghost' does not exist", field="assignee")
    assert not isinstance(error, HTTPException)
    response = domain_handler(None, error)  # type: ignore[arg-type]  # the request is not read
    assert response.status_code == 422 and response.media_type == PROBLEM
    body = msgspec.json.decode(response.render(response.content, response.media_type))
    assert body["status"] == 422 and body["title"] == "Invalid request"  # as a schema refusal: it said "Request failed"
    assert body["errors"] == [{"field": "assignee", "message": "agent 'ghost' does not exist"}]


@pytest.mark.infra
async def test_a_command_the_services_refuse_is_poison_with_their_reason(ctx: Context) -> None:
    task_id = f"task_{uuid.uuid4().hex}"
    cmd = CancelTask(task_id=task_id, provider="plane", actor="someone")
    delivery = Delivery(make_envelope("core.cancel_task", cmd, source="test"), cmd, "nexus.cmd.core.cancel_task", 1, 1)
    with pytest.raises(Poison) as refused:
        await refused_is_poison(on_cancel_task, ctx, delivery)
    assert "404" in str(refused.value) and task_id in str(refused.value)
