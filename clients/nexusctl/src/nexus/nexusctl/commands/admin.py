"""`approvals approve|reject`, `keys create|login-link`, `config view|use-context`."""

from typing import Annotated

import typer

from nexus.nexusctl import config as cfg
from nexus.nexusctl import render
from nexus.nexusctl.state import err, handled, out, state
from nexus.nexusctl.client import seg

approvals = typer.Typer(help="Decide on runs waiting for a human.", no_args_is_help=True)
keys = typer.Typer(help="Create API keys (list them with `get keys`, revoke with `delete key`).", no_args_is_help=True)
config = typer.Typer(help="Show and switch contexts.", no_args_is_help=True)

ApprovalId = Annotated[str, typer.Argument(help="the approval id (apr_…)")]


def _decide(ctx: typer.Context, approval_id: str, verb: str, reason: str) -> None:
    with handled():
        a = state(ctx).client.post(f"/v1/approvals/{seg(approval_id)}/{seg(verb)}", {"reason": reason})
        out(f"approval/{a['id']} {a['status']} (run {a['run_id']}, {a['action']})")


@approvals.command()
def approve(
    ctx: typer.Context,
    approval_id: ApprovalId,
    reason: Annotated[str, typer.Option(help="why; kept on the approval")] = "",
) -> None:
    """Approve: the paused run goes on."""
    _decide(ctx, approval_id, "approve", reason)


@approvals.command()
def reject(
    ctx: typer.Context,
    approval_id: ApprovalId,
    reason: Annotated[str, typer.Option(help="why (required by the API)")] = "",
) -> None:
    """Reject: the action is refused and the run ends failed, naming who said no and why."""
    _decide(ctx, approval_id, "reject", reason)


@keys.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a slug naming who holds the key")],
    role: Annotated[str, typer.Option(help="admin, lead or viewer")],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    with handled():
        k = state(ctx).client.post("/v1/api-keys", {"name": name, "role": role})
    if output == "json":
        out(render.to_json(k))
        return
    err(f"key/{k['id']} created: {k['name']} ({k['role']}). Store it now; it is shown only once:")
    out(k["key"])


@config.command("view")
def view(ctx: typer.Context) -> None:
    """Where nexusctl would connect, and where its key comes from (never the key)."""
    st = state(ctx)
    with handled():
        t = st.target()
        doc = cfg.load_file(cfg.config_path(st.env))
    out(f"config file:     {cfg.config_path(st.env)}{'' if doc else ' (absent)'}")
    out(f"current context: {t.context or '-'}")
    out(f"url:             {t.url}")
    out(f"api key:         {'set' if t.api_key else 'not set'} (from {t.key_source})")
    contexts = cfg.contexts_of(doc) if doc else {}
    if contexts:
        out("contexts:")
        for name, c in contexts.items():
            mark = "*" if name == doc.get("current-context") else " "
            key = (
                "api_key"
                if c.get("api_key")
                else (f"api_key_file {c['api_key_file']}" if c.get("api_key_file") else "no key")
            )
            out(f"  {mark} {name:<16} {c.get('url', '-')}  ({key})")


@config.command("use-context")
def use_context(ctx: typer.Context, name: str) -> None:
    """Make NAME the current context."""
    with handled():
        path = cfg.use_context(state(ctx).env, name)
    out(f"switched to context {name!r} ({path})")


@keys.command("login-link")
def login_link(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a slug naming who the link is for")],
    role: Annotated[str, typer.Option(help="admin, lead or viewer")],
    ttl: Annotated[int, typer.Option(min=1, help="seconds the link stays valid")] = 900,
) -> None:
    """A one-time web UI sign-in link: whoever opens it first is signed in with ROLE; it is printed once."""
    st = state(ctx)
    with handled():
        link = st.client.post("/v1/ui/login-links", {"name": name, "role": role, "ttl_s": ttl})
        base = st.target().url.rstrip("/")
    err(f"one-time sign-in for {name} ({role}), valid {link['expires_in_s']} s:")
    out(base + link["path"])
