"""nexusctl: the Nexus HTTP API from a terminal, in the style of kubectl."""

import os
from typing import Annotated

import typer

from nexus.nexusctl.commands import admin, board, resources, runs
from nexus.nexusctl.commands.chat import chat
from nexus.nexusctl.commands.apply_cmd import apply
from nexus.nexusctl.state import State

app = typer.Typer(
    name="nexusctl",
    help="Manage Nexus (agents, skills, repositories, tasks, runs, approvals…) over its HTTP API.\n\n"
    "Connects to $NEXUS_URL with $NEXUS_API_KEY, or to a context in ~/.config/nexus/nexusctl.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="the API's base URL (default: $NEXUS_URL, the context, http://127.0.0.1:8080)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="an API key (default: $NEXUS_API_KEY or the context's)", show_default=False)
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="a context from the config file")] = None,
) -> None:
    st = State(env=dict(os.environ), url=url, api_key=api_key, context=context)
    ctx.obj = st
    ctx.call_on_close(st.close)


app.command()(resources.get)
app.command()(resources.describe)
app.command()(resources.delete)
app.command()(apply)
app.add_typer(runs.app, name="runs")
app.add_typer(admin.approvals, name="approvals")
app.add_typer(admin.keys, name="keys")
app.add_typer(admin.config, name="config")
app.add_typer(chat, name="chat")
app.add_typer(board.app, name="board")


def main() -> None:
    app()
