"""What an agent is allowed to do, which model it uses and how far it may go — all data."""

from typing import Annotated, Literal

import msgspec


class CommandPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which commands the hypervisor runs. Patterns are shell-style globs on the command line of
    the program that finally runs, after wrappers (`timeout 60 pytest -q` is judged as `pytest -q`;
    `deny` is also matched on every wrapper). `deny` wins over `allow`; a command matching neither
    follows `default`, which is deny unless set. Shells, interpreters and programs in the workspace
    run only when an allow pattern names them as its first word (`python3 -m pytest*`), never
    through a wildcard. `network` lets commands reach the internet (off: their own empty network):
    TCP to ports 22, 53, 443 and 9418 and to the `ports` named here (no UDP: names resolve over TCP),
    never to the machine's services."""

    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    default: Literal["allow", "deny", "ask"] = "deny"
    network: bool = False
    ports: list[Annotated[int, msgspec.Meta(ge=1, le=65535)]] = msgspec.field(default_factory=list)
    timeout_s: float = 60.0
    max_output_bytes: int = 65536


class Permissions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    can_commit: bool = True
    can_merge: bool = False
    commands: CommandPolicy = msgspec.field(default_factory=CommandPolicy)
    # Actions that pause the run for a human: "push_default_branch", "merge", "command", "write:<glob>".
    ask: list[str] = msgspec.field(default_factory=list)


class LLMSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # "external": the brain is a coding CLI (`command`) attached to the run's kernel through a bridge.
    provider: Literal["scripted", "openai", "anthropic", "external"] = "scripted"
    model: str = "scripted"
    base_url: str | None = None
    # A secret reference (`NAME`), resolved by the runner from its secret store; never the key.
    api_key_secret: str | None = None
    temperature: float | None = None
    # The scripted provider's script (YAML text), when provider == "scripted".
    script: str | None = None
    # The external CLI's argv, when provider == "external": started in the run's workspace with the
    # scrubbed environment and no secrets, in the commands' sandbox (with their `network`); it speaks the
    # bridge protocol (proto/bridge/README.md).
    command: list[str] | None = None

    def __post_init__(self) -> None:
        if self.provider == "external" and not (self.command and all(self.command)):
            raise ValueError("`command` (a non-empty argv) is required when provider is 'external'")
        if self.provider != "external" and self.command is not None:
            raise ValueError("`command` is only for provider 'external'")


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_steps: int = 50
    max_tokens: int = 200_000
    wall_clock_s: int = 1800
    max_cost_usd: float | None = None  # per run; None: no cap in USD


class MemoryPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    scopes: list[Literal["agent", "repo", "global"]] = msgspec.field(
        default_factory=lambda: ["agent", "repo", "global"]
    )
    max_items: int = 20
    max_chars: int = 8000
    tags: list[str] = msgspec.field(default_factory=list)


# The hypervisor's tools (the agent-runner registers each under one of these names and refuses any
# other): an agent document naming another one is a typo that would silently leave the agent without it.
TOOL_NAMES = frozenset(
    {
        "apply_patch",
        "edit_file",
        "finish",
        "git_commit",
        "git_diff",
        "git_log",
        "git_status",
        "list_dir",
        "note",
        "read_file",
        "request_approval",
        "run_command",
        "search_text",
        "spawn_child",
        "write_file",
    }
)


def caps_below_least(limits: Limits, permissions: Permissions, memory: MemoryPolicy) -> list[tuple[str, str]]:
    """An agent document's caps that cannot work, each as (field, why): a cap of 0 or less ends every run at
    its start ("wall-clock limit of -5s exceeded"), a negative output cap cuts every output. Checked where a
    document is written, not where one is read, so a document stored before still reads."""
    commands = permissions.commands
    least = [
        ("limits.max_steps", limits.max_steps, 1),
        ("limits.max_tokens", limits.max_tokens, 1),
        ("limits.wall_clock_s", limits.wall_clock_s, 1),
        ("limits.max_cost_usd", 0 if limits.max_cost_usd is None else limits.max_cost_usd, 0),
        ("permissions.commands.max_output_bytes", commands.max_output_bytes, 0),
        ("memory_policy.max_items", memory.max_items, 0),
        ("memory_policy.max_chars", memory.max_chars, 0),
    ]
    refused = [(field, f"must be at least {floor}") for field, value, floor in least if value < floor]
    if commands.timeout_s <= 0:
        refused.append(("permissions.commands.timeout_s", "must be more than 0"))
    return refused
