"""core-api's commands on FastStream: one subscriber and one durable consumer per command subject, declared
by each feature next to its handler (`<feature>/handlers.py`, `subscribe(broker, ctx)`). The subject picks
the handler; a message whose envelope names another type is dead-lettered by the decoder with that reason.

Upgrade from the single durable on all of `nexus.cmd.core.>` (`core-api-cmds`): NEXUS_CMDS is a work
queue, whose server refuses consumers with overlapping filters, so that durable is deleted first. A work
queue keeps a message until it is acknowledged, not when its consumer goes, so what the old durable held
(delivered or not) is read by the per-subject durables made next, which start at the stream's beginning."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.events.consumer import Delivery, Poison, supervised
from nexus.events.faststream import broker_options, durable_subscriber, durables_of, ensure_durables, keep_durables
from nexus.events.permissions import LEGACY_COMMANDS, LEGACY_GOALS, command_durable

log = logging.getLogger("nexus.core_api.commands")

CommandHandler = Callable[[Context, Delivery], Awaitable[None]]
Subscribe = Callable[[NatsBroker, Context], None]


def command(broker: NatsBroker, ctx: Context, type_: str) -> Callable[[CommandHandler], CommandHandler]:
    """Decorator: `handler(ctx, delivery)` handles the command `type_`, on the subject and durable of its own."""
    durable = command_durable(type_)

    def register(handler: CommandHandler) -> CommandHandler:
        async def handle(d: Delivery) -> None:
            await refused_is_poison(handler, ctx, d)

        durable_subscriber(broker, durable.filter, handle, stream=durable.stream, durable=durable.name)
        return handler

    return register


async def refused_is_poison(handler: CommandHandler, ctx: Context, d: Delivery) -> None:
    """A command the services refuse (a DomainError: what it names does not exist, it conflicts with the
    current state) can never succeed: it is dead-lettered with their reason at once."""
    try:
        await handler(ctx, d)
    except DomainError as exc:
        raise Poison(f"refused: {exc}") from exc


# Durables an earlier core-api read and this one does not, deleted at start, with why.
RETIRED = {
    LEGACY_COMMANDS: "its commands are read by one durable per subject",
    LEGACY_GOALS: "a goal's task sends core.follow_goal; the other task events were read for nothing",
}


async def retire_legacy(js: JetStreamContext) -> bool:
    """Delete the retired durables that exist; True if one did."""
    gone = False
    for durable, why in RETIRED.items():
        try:
            await js.delete_consumer(durable.stream, durable.name)
        except NotFoundError:
            continue
        log.warning("deleted the durable %s: %s", durable.name, why)
        gone = True
    return gone


async def serve_commands(ctx: Context, stop: asyncio.Event, subscribers: Iterable[Subscribe]) -> None:
    """Until `stop`: the features' command subscribers on a broker connected as core-api, supervised (if
    starting or serving fails, it starts again with backoff, and the process is not ready meanwhile)."""
    await supervised("core-api commands", lambda: _serve(ctx, stop, subscribers), stop)


async def _serve(ctx: Context, stop: asyncio.Event, subscribers: Iterable[Subscribe]) -> None:
    """Retire the old durable, make the per-subject ones, then serve; a durable someone deletes meanwhile
    is made anew."""
    s = ctx.settings
    broker = NatsBroker(
        name="core-api-commands", log_level=logging.DEBUG, **broker_options(s.nats_url, "core-api", s.nats_creds)
    )
    for subscribe in subscribers:
        subscribe(broker, ctx)
    await retire_legacy(ctx.js)
    await ensure_durables(ctx.js, durables_of(broker))
    try:
        await broker.start()
        await keep_durables(ctx.js, broker, stop)
    finally:
        await broker.stop()
