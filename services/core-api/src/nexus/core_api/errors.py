"""Every error is application/problem+json naming the failing field; nothing leaks a 500 body."""

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Receive, Scope, Send
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from nexus.core_api.auth.requests import OpenRequest
from nexus.db.group import GroupWriteFailed
from nexus.domain.json_types import JsonObject
from nexus.events.bus import BUS_UNAVAILABLE, answering
from nexus.domain.tasks import InvalidTransition

log = logging.getLogger("nexus.core_api.errors")
PROBLEM = "application/problem+json"
_FIELD = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


class DomainError(Exception):
    """Raised by services, which know nothing of HTTP or NATS: what went wrong (`detail`), the
    field at fault if any, and the status that says what kind of mistake it is (404 nothing there,
    409 a conflict with the current state, 422 invalid input). The HTTP edge turns it into
    problem+json (`domain_handler`); a NATS command handler dead-letters the command with it."""

    def __init__(
        self, status_code: int, detail: str, *, field: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s  # a refusal for now (429, 503): when to ask again
        self.status_code = status_code
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}" + (f" ({self.field})" if self.field else "")


def not_found(kind: str, id_: str) -> DomainError:
    return DomainError(404, f"{kind} {id_!r} not found")


def changed_concurrently(kind: str, field: str) -> DomainError:
    return DomainError(409, f"the {kind} changed concurrently: read it again and retry", field=field)


@contextlib.contextmanager
def one_writer(kind: str, field: str) -> Iterator[None]:
    """Around the insert of a document whose id is the next revision: a writer that lost the race to the
    same revision is told of the conflict (409), not of a fault."""
    try:
        yield
    except DuplicateKeyError:
        raise changed_concurrently(kind, field) from None


def _problem(status: int, title: str, detail: str, errors: list[JsonObject] | None = None) -> Response[JsonObject]:
    body: JsonObject = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM)


def _field_from_message(message: str) -> str | None:
    if m := _UNKNOWN.search(message) or _MISSING.search(message):
        return m.group(1)
    if m := _FIELD.search(message):
        return m.group(1) or None
    return None


def _field(item: JsonObject, message: str) -> str | None:
    """The dotted path of the failing field: litestar names the object (`data` is the body itself),
    msgspec's message names the unknown or missing member inside it."""
    key = str(item.get("key") or "")
    if key == "data" and item.get("source", "body") == "body":
        key = ""
    if item.get("source") == "header":  # named as the client sends it, not as the handler's argument
        return "-".join(part.capitalize() for part in key.split("_"))
    name = m.group(1) if (m := _UNKNOWN.search(message) or _MISSING.search(message)) else None
    if name:
        return f"{key}.{name}" if key else name
    return key or _field_from_message(message)


# litestar's word for a body that is missing altogether (the name of the absent argument)
_NO_BODY = "'data'"


def validation_handler(_: OpenRequest, exc: ValidationException) -> Response[JsonObject]:
    errors = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            source = item.get("source", "body")
            field = _field(item, message) or ("body" if source == "body" else None)
            if message == _NO_BODY:
                message = "a JSON body is required"
            errors.append({"field": field, "message": message, "source": source})
    if not errors:
        errors.append({"field": _field_from_message(str(exc.detail)) or "body", "message": str(exc.detail)})
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return _problem(422 if exc.status_code == 400 else exc.status_code, "Invalid request", detail, errors)


_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    429: "Too many requests",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request",  # as the schema's own refusals are titled: one status, one title
    503: "Service unavailable",
}


class BodyRefused(HTTPException):
    """A request body refused as a whole, before any field of it is read: `field` names the part of the
    request at fault (`body`, or the `content-type` header that says what it is)."""

    field = "body"


def _refused_part(exc: HTTPException) -> str | None:
    """What part of the request an HTTP error refuses, when it is the body as a whole."""
    if isinstance(exc, BodyRefused):
        return exc.field
    if isinstance(exc, RequestEntityTooLarge) or isinstance(exc.__cause__, SerializationException):
        return "body"  # too large to read, or not JSON at all
    return None


def http_handler(_: OpenRequest, exc: HTTPException) -> Response[JsonObject]:
    detail = str(exc.detail)
    part = _refused_part(exc)
    errors: list[JsonObject] | None = [{"field": part, "message": detail}] if part else None
    response = _problem(exc.status_code, _TITLES.get(exc.status_code, "Request failed"), detail, errors)
    if isinstance(exc, RequestEntityTooLarge):
        # The rest of the body was never read: the connection cannot carry another request, and the client
        # must be told so rather than find it closed under its next one.
        response.headers["Connection"] = "close"
    return response


def domain_handler(_: OpenRequest, exc: DomainError) -> Response[JsonObject]:
    errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
    response = _problem(exc.status_code, _TITLES.get(exc.status_code, "Request failed"), exc.detail, errors)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def transition_handler(_: OpenRequest, exc: InvalidTransition) -> Response[JsonObject]:
    return _problem(409, "Conflict", str(exc), [{"field": "status", "message": str(exc)}])


def unstored_handler(request: OpenRequest, exc: GroupWriteFailed) -> Response[JsonObject]:
    """The database refused or lost the write this request's document went out in (with those of
    other requests, each told only of its own): the request stopped there, what it wrote before stays."""
    log.warning("%s %s: %s", request.method, request.url.path, exc, exc_info=exc.__cause__)
    return _problem(503, "Service unavailable", f"{exc}: the request did not complete")


def bus_handler(request: OpenRequest, exc: Exception) -> Response[JsonObject]:
    """NATS did not answer in time (a lost node, an election, a restart): the request stopped there,
    what it stored before stays, and the caller is told to try again shortly rather than of a fault."""
    log.warning("%s %s: the message bus did not answer: %r", request.method, request.url.path, exc)
    response = _problem(503, "Service unavailable", "the message bus did not answer; try again shortly")
    response.headers["Retry-After"] = "2"
    return response


def database_handler(request: OpenRequest, exc: ConnectionFailure) -> Response[JsonObject]:
    """The database is out of reach (restarting, a lost connection, no primary): like the bus's outage, a
    503 to retry, not a fault of the server's own; what the request stored before stays."""
    log.warning("%s %s: the database did not answer: %r", request.method, request.url.path, exc)
    response = _problem(503, "Service unavailable", "the database did not answer; try again shortly")
    response.headers["Retry-After"] = "2"
    return response


class AnswerPromptly(ASGIMiddleware):
    """A request's publishes wait for the bus a few seconds at most, and not at all while it is out of
    reach (`nexus.events.bus.answering`): the caller gets its answer (a 503 to retry, or what the route
    makes of it) at once instead of after the publish's 30 s wait for the bus."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        with answering():
            await next_app(scope, receive, send)


def internal_handler(request: OpenRequest, exc: Exception) -> Response[JsonObject]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(HTTP_500_INTERNAL_SERVER_ERROR, "Internal error", "the server failed; see its logs")


EXCEPTION_HANDLERS = {
    ValidationException: validation_handler,
    HTTPException: http_handler,
    DomainError: domain_handler,
    InvalidTransition: transition_handler,
    GroupWriteFailed: unstored_handler,
    ConnectionFailure: database_handler,
    **dict.fromkeys(BUS_UNAVAILABLE, bus_handler),
    Exception: internal_handler,
}
_ = MediaType


class ProblemField(msgspec.Struct):
    field: str | None
    message: str
    source: str | None = None


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error here is shaped."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


PROBLEM_RESPONSES = {
    code: ResponseSpec(Problem, media_type=PROBLEM, description=text, generate_examples=False)
    for code, text in {
        400: "Malformed request",
        401: "No or unknown API key",
        403: "The key's role may not do this",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Body too large",
        415: "The body is not JSON (Content-Type)",
        422: "Invalid input; `errors` names each failing field",
        503: "The database or the message bus is out of reach; ask again after `Retry-After` seconds",
    }.items()
}


def document_problems(route_handlers: list[Any]) -> list[Any]:
    """Every handler's error responses are documented as problem+json (litestar's default says a
    400 with its own JSON shape, which is not what the exception handlers above send)."""
    for item in route_handlers:
        handlers = (
            [item]
            if isinstance(item, HTTPRouteHandler)
            else [v for v in vars(item).values() if isinstance(v, HTTPRouteHandler)]
        )
        for h in handlers:
            h.responses = {**PROBLEM_RESPONSES, **(h.responses or {})}
    return route_handlers
