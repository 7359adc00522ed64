"""The run's session tree on the agent kernel (libs/kernel).

A runner hosts its session as a kernel agent, reachable from other runner processes over NATS
(`nexus.agent.<session_id>.inbox`), once the session needs it (`RunSession._open_tree`): before it
plans children (the only ones whose credential lets them write there) or when it tells its parent.
A child session tells its meta session that it ended with a kernel message, so the meta hears at
once; core-api's durable `run.child_finished` (which also covers a child that crashed before it
could say anything) is fed into the same agent. Its children may ask a session for its status."""

import asyncio
import logging
from typing import Any

from nexus.domain.json_types import JsonObject
from nexus.kernel import AgentNotFound, Kernel, KernelError, Message, MessageKind

log = logging.getLogger("nexus.agent_runner.tree")


class SessionAgent:
    """The kernel agent of one session: answers status queries, collects its children's ends."""

    def __init__(self, session_id: str, status: Any) -> None:
        self.id = session_id
        self.name = f"session {session_id}"
        self.status = status  # a zero-argument callable giving the session's current status dict
        self.children: dict[str, JsonObject] = {}
        self.heard_over_kernel: set[str] = set()
        self.changed = asyncio.Event()

    async def handle(self, message: Message) -> Message | None:
        if message.kind == MessageKind.QUERY:
            return message.reply(self.id, self.status())
        if (
            message.kind == MessageKind.EVENT
            and isinstance(message.payload, dict)
            and message.payload.get("event") == "child_finished"
        ):
            child = message.payload.get("session_id", "")
            if message.from_ == child:
                self.heard_over_kernel.add(child)
            self.children.setdefault(child, message.payload)
            self.changed.set()
        return None

    async def wait_for(self, session_ids: set[str], timeout_s: float) -> dict[str, JsonObject]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not session_ids <= self.children.keys():
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                break
        return {s: self.children[s] for s in session_ids if s in self.children}


class SessionTree:
    def __init__(self, kernel: Kernel, agent: SessionAgent) -> None:
        self.kernel = kernel
        self.agent = agent

    @classmethod
    async def open(cls, nc: Any, session_id: str, status: Any, *, confirm: bool = False) -> "SessionTree":
        kernel = Kernel(id=f"runner-{session_id}")
        agent = SessionAgent(session_id, status)
        kernel.spawn(agent)
        # Attached after the agent is in: the kernel's own inbox and the session's are subscribed
        # together. Not confirmed by a round trip: the server takes a connection's protocol in order,
        # so both are in place before anything this run publishes next — its session event, and the
        # plan that makes its children (the only ones told to write to it) exist at all. A run whose publishes
        # the worker relays sends them on another connection: `confirm` waits for the server's word instead.
        await kernel.connect_nats(nc, confirm=confirm)
        return cls(kernel, agent)

    async def child_finished(self, payload: JsonObject, *, from_: str = "core-api") -> None:
        """Feed an end reported by core-api into the meta session's agent."""
        await self.kernel.send(
            Message(
                from_=from_, to=self.agent.id, kind=MessageKind.EVENT, payload={"event": "child_finished", **payload}
            )
        )

    async def tell_parent(self, parent_session_id: str, payload: JsonObject) -> bool:
        """A child tells its meta session, in another runner process, that it ended."""
        try:
            await self.kernel.send(
                Message(
                    from_=self.agent.id,
                    to=parent_session_id,
                    kind=MessageKind.EVENT,
                    payload={"event": "child_finished", "session_id": self.agent.id, **payload},
                ),
                timeout=5.0,
            )
            return True
        except (AgentNotFound, KernelError) as exc:  # the parent is gone: core-api's event still reaches it
            log.info("could not tell parent session %s over the kernel: %s", parent_session_id, exc)
            return False

    async def close(self) -> None:
        await self.kernel.shutdown("drain", 2.0)
