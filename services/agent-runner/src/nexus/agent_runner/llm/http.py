"""HTTP plumbing the OpenAI-compatible and Anthropic providers share: one pooled httpx
client with timeouts, HTTP failures turned into LLMError (retryable or not), the API key
scrubbed from every error, server-sent events decoded, retries applied."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import httpx

from nexus.agent_runner.llm.base import LLMError
from nexus.agent_runner.llm.retry import RetryPolicy, call_with_retry, retry_after_seconds
from nexus.domain.json_types import JsonObject

T = TypeVar("T")
_MAX_ERROR_CHARS = 500
# A reply nested past the JSON decoder's recursion (a model's tool input can be): the run fails saying so.
_TOO_DEEP = "reply is nested too deeply to decode (a tool input nested past any tool's schema)"


class SSEEvent(NamedTuple):
    event: str  # "message" when the server named none
    data: str


class HttpTransport:
    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        retry: RetryPolicy | None,
        secrets: tuple[str | None, ...] = (),
    ) -> None:
        self.provider = provider
        self._retry = retry or RetryPolicy()
        self._secrets = tuple(s for s in secrets if s)
        # The read timeout bounds the wait for each chunk, so a long but live stream is fine.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=dict(headers), timeout=timeout)

    async def post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        on_events: Callable[[AsyncIterator[SSEEvent]], Awaitable[T]],
        on_json: Callable[[Any], T],
    ) -> T:
        """POST `body`, retrying as the policy says. An event-stream reply goes to `on_events`,
        anything else is decoded as JSON for `on_json` (servers that ignore `stream: true`)."""

        async def attempt() -> T:
            try:
                async with self._client.stream("POST", path, json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise self._status_error(response)
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        return await on_events(_sse_events(response))
                    raw = await response.aread()
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        raise self.error(f"reply is neither an event stream nor JSON: {raw[:200]!r}") from None
                    except RecursionError:
                        raise self.error(_TOO_DEEP) from None
                    return on_json(data)
            except httpx.TimeoutException as e:
                raise self.error(
                    f"request to {self._url(path)} timed out ({type(e).__name__})", retryable=True
                ) from None
            except httpx.TransportError as e:
                if _out_of_memory(e):  # the process's memory limit, not the network: a retry would reach it again
                    raise self.error(f"the reply from {self._url(path)} did not fit in memory") from e
                raise self.error(
                    f"connection to {self._url(path)} failed: {type(e).__name__}: {e}", retryable=True
                ) from None
            except httpx.HTTPError as e:
                raise self.error(f"request to {self._url(path)} failed: {type(e).__name__}: {e}") from None

        return await call_with_retry(attempt, self._retry, what=f"{self.provider} request")

    def error(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> LLMError:
        return LLMError(
            self.redact(f"{self.provider}: {message}"),
            retryable=retryable,
            status=status,
            retry_after=retry_after,
            detail=self.redact(detail),
        )

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, path: str) -> str:
        return f"{str(self._client.base_url).rstrip('/')}/{path.lstrip('/')}"  # httpx's base URL ends with a slash

    def _status_error(self, response: httpx.Response) -> LLMError:
        status = response.status_code
        retryable = status in (408, 409, 429) or status >= 500
        # Both OpenAI and Anthropic say explicitly when a retry is (not) worth it.
        should = response.headers.get("x-should-retry")
        if should in ("true", "false"):
            retryable = should == "true"
        detail = _error_detail(response)
        return self.error(
            f"HTTP {status} from {response.request.url}: {detail}",
            retryable=retryable,
            status=status,
            retry_after=retry_after_seconds(response.headers) if retryable else None,
            detail=detail,
        )


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` comes of a MemoryError: one raised while the event loop reads the socket ends the
    connection, and reaches the caller as a read error of that connection."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, MemoryError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _error_detail(response: httpx.Response) -> str:
    text = response.text
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        kind = error.get("type") or error.get("code")
        detail = f"{kind}: {error['message']}" if kind else str(error["message"])
    elif isinstance(error, str):
        detail = error
    else:
        detail = text.strip() or response.reason_phrase
    return detail[:_MAX_ERROR_CHARS]


async def _sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """The text/event-stream format: `event:` and `data:` lines, a blank line ends an event,
    `:` lines are comments (keep-alives)."""
    event, data = "", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            data.append(value)
        elif key == "event":
            event = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data))


def decode_event_json(transport: HttpTransport, data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise transport.error(f"malformed event data in the stream: {data[:200]!r}") from None
    except RecursionError:
        raise transport.error(_TOO_DEEP) from None


MAX_ARGUMENT_DEPTH = 64  # far deeper than any tool's schema; a model's arguments past it are refused
_MAX_RAW_CHARS = 2000  # of arguments that could not be used, what is kept for the model to see


def parse_arguments(raw: str | JsonObject | None) -> JsonObject:
    """Tool arguments as a dict. Models sometimes emit broken JSON: rather than fail the run,
    hand the raw text on under `_raw_arguments` so the hypervisor refuses the call and the
    model sees why. Arguments nested deeper than MAX_ARGUMENT_DEPTH are handed on the same way:
    a hostile model's 100,000 brackets would otherwise end the run in a RecursionError (the JSON
    decoder, and every walk over the arguments after it, recurse)."""
    if isinstance(raw, dict):
        value: Any = raw
    elif raw is None or not isinstance(raw, str) or not raw.strip():
        return {} if not raw else _unusable(raw, "arguments are not a JSON object")
    else:
        try:
            value = json.loads(raw)
        except ValueError as e:
            return _unusable(raw, f"arguments are not valid JSON: {e}")
        except RecursionError:
            return _unusable(raw, f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels")
    if not isinstance(value, dict):
        return _unusable(raw, "arguments are not a JSON object")
    if too_deep(value, MAX_ARGUMENT_DEPTH):
        return _unusable(raw, f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels")
    if not all_text(value):
        return _unusable(raw, "arguments hold a lone surrogate (\\ud800-\\udfff alone is no Unicode text)")
    return value


def _unusable(raw: Any, why: str) -> JsonObject:
    text = raw if isinstance(raw, str) else _shape(raw)
    cut = f"... [{len(text)} characters]" if len(text) > _MAX_RAW_CHARS else ""
    return {"_raw_arguments": text[:_MAX_RAW_CHARS] + cut, "_error": why}


def _shape(value: Any) -> str:
    """What a value that is no JSON text looks like, without walking it (it may be nested past any limit)."""
    return f"<{type(value).__name__}>"


def too_deep(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests deeper than `limit` (iterative: no recursion on the value)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def all_text(value: Any) -> bool:
    """Whether every string in a decoded JSON value (keys too) is Unicode text: JSON lets a lone
    surrogate be written ("\\ud800"), which no UTF-8 file, command line, ledger or event can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def is_text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
