"""`chat bind|list|unbind`: which Telegram user acts as which Nexus identity, as lead or viewer."""

from typing import Annotated

import typer

from nexus.nexusctl import render
from nexus.nexusctl.state import handled, out, state
from nexus.nexusctl.client import seg

chat = typer.Typer(
    help="Bind Telegram users to Nexus identities (lead: decide and create; viewer: read).", no_args_is_help=True
)


@chat.command()
def bind(
    ctx: typer.Context,
    user_id: Annotated[
        str, typer.Argument(help="the Telegram user id (a number; the bot tells an unknown user theirs)")
    ],
    identity: Annotated[str, typer.Option(help="the Nexus identity the user acts as, e.g. an email")],
    role: Annotated[str, typer.Option(help="lead or viewer")] = "viewer",
) -> None:
    """Bind (or re-bind) a Telegram user."""
    with handled():
        b = state(ctx).client.post("/v1/chat-bindings", {"user_id": user_id, "identity": identity, "role": role})
    out(f"chat-binding/{b['id']} {b['identity']} ({b['role']})")


@chat.command("list")
def list_(
    ctx: typer.Context, output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text"
) -> None:
    """The bound Telegram users."""
    with handled():
        page = state(ctx).client.get("/v1/chat-bindings", limit=200)
    if output == "json":
        out(render.to_json(page))
        return
    for b in page["items"]:
        out(f"{b['id']:<24} {b['role']:<7} {b['identity']}")


@chat.command()
def unbind(ctx: typer.Context, user_id: Annotated[str, typer.Argument(help="the Telegram user id")]) -> None:
    """Remove a Telegram user's binding: the bot refuses them from then on."""
    with handled():
        state(ctx).client.delete(f"/v1/chat-bindings/telegram:{seg(user_id)}")
    out(f"chat-binding/telegram:{user_id} removed")
