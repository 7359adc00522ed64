"""The agent contract: an id, a name and `async handle(message) -> Message | None`.

Optional hooks, called by the kernel when present:
  `async on_start(kernel)` before the first message (and after each restart),
  `async on_stop()` once the agent has left the kernel (stop, failure, shutdown).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeGuard, runtime_checkable

from nexus.kernel.message import Message

if TYPE_CHECKING:
    from nexus.kernel.kernel import Kernel


@runtime_checkable
class Agent(Protocol):
    id: str
    name: str

    async def handle(self, message: Message) -> Message | None: ...


def new_agent_id() -> str:
    return str(uuid.uuid4())


class BaseAgent:
    """Convenience base: `id` defaults to a uuid4, `name` to the class name."""

    def __init__(self, name: str | None = None, id: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.id = id or new_agent_id()

    async def handle(self, message: Message) -> Message | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} name={self.name!r}>"


Handler = Callable[[Message], Awaitable[Message | None]]


class FunctionAgent:
    """An agent made of one coroutine function: handy for tests, benches and glue."""

    __slots__ = ("handle", "id", "name")

    def __init__(self, id: str, handle: Handler, name: str | None = None) -> None:
        self.id = id
        self.name = name or id
        self.handle = handle


AgentFactory = Callable[[], Agent]


def is_agent(obj: object) -> TypeGuard[Agent]:
    return callable(getattr(obj, "handle", None)) and isinstance(getattr(obj, "id", None), str)


def start_hook(agent: Agent) -> Callable[[Kernel], Awaitable[None]] | None:
    return getattr(agent, "on_start", None)


def stop_hook(agent: Agent) -> Callable[[], Awaitable[None]] | None:
    return getattr(agent, "on_stop", None)
