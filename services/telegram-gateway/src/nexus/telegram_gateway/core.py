"""The gateway's only way to core-api: request/reply queries on `nexus.rpc.core.<query>` and commands
on `nexus.cmd.core.*`, each naming the chat principal that core-api checks against its bindings."""

from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from nexus.events.bus import Publisher
from nexus.events.payloads import ChatPrincipal


class CoreError(Exception):
    """core-api's answer was no: `refused` (the asker may not), or it gave no answer at all
    (`unreachable`: restarting, the bus electing a leader, its database away — an outage, not an answer)."""

    def __init__(self, message: str, *, refused: bool = False, unreachable: bool = False) -> None:
        super().__init__(message)
        self.refused, self.unreachable = refused, unreachable


class CoreClient:
    def __init__(self, nc: NATS, publisher: Publisher, timeout_s: float = 5.0) -> None:
        self.nc, self.publisher, self.timeout_s = nc, publisher, timeout_s

    async def query(self, name: str, principal: ChatPrincipal | None = None, **args: Any) -> Any:
        """A read; without a principal it is the gateway's own (to compose an alert)."""
        body: dict[str, Any] = {"args": args}
        if principal is not None:
            body["principal"] = principal
        try:
            msg = await self.nc.request(f"nexus.rpc.core.{name}", msgspec.json.encode(body), timeout=self.timeout_s)
        except (NatsTimeout, TimeoutError, NoRespondersError) as exc:
            raise CoreError("core-api did not answer; try again in a moment", unreachable=True) from exc
        reply = msgspec.json.decode(msg.data)
        if not reply.get("ok"):
            raise CoreError(
                reply.get("error", "refused"), refused=bool(reply.get("refused")), unreachable=bool(reply.get("retry"))
            )
        return reply.get("data")

    async def command(self, type_: str, payload: msgspec.Struct, *, correlation_id: str | None = None) -> None:
        await self.publisher.publish(type_, payload, correlation_id=correlation_id)
