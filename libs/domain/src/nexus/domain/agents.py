"""What an agent is allowed to do, which model it uses and how far it may go — all data.

Every number has a range (docs/architecture.md, "Ranges"): a value outside it is refused where
it comes in (the API's 422 names the field), and a stored document written before a range existed is read
with the value moved to the range's nearest end (`nexus.domain.limits.within_bounds`)."""

from typing import Annotated, Literal

import msgspec

DAY_S = 86_400
# The most a run may spend in USD and tokens: the same ceilings as a budget's (core-api's budgets).
MAX_USD = 1_000_000
MAX_TOKENS = 10**12


def _range(lo: float, hi: float, what: str) -> msgspec.Meta:
    def said(n: float) -> str:
        return f"{int(n):,}" if float(n).is_integer() else str(n)

    return msgspec.Meta(ge=lo, le=hi, description=f"{what}, {said(lo)} to {said(hi)}")


class CommandPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which commands the hypervisor runs. Patterns are shell-style globs on the command line of
    the program that finally runs, after wrappers (`timeout 60 pytest -q` is judged as `pytest -q`;
    `deny` is also matched on every wrapper). `deny` wins over `allow`; a command matching neither
    follows `default`, which is deny unless set. Shells, interpreters and programs in the workspace
    run only when an allow pattern names them as its first word (`python3 -m pytest*`), never
    through a wildcard. `network` lets commands reach the internet (off: their own empty network):
    TCP to ports 22, 53, 443 and 9418 and to the `ports` named here (no UDP: names resolve over TCP),
    never to the machine's services."""

    allow: Annotated[list[str], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)
    # No most items for `deny`, `ask` and `command` (the body's size bounds them): a stored document past
    # one would be read cut to it, which would let through what it refused or change the program run.
    deny: list[str] = msgspec.field(default_factory=list)
    default: Literal["allow", "deny", "ask"] = "deny"
    network: bool = False
    ports: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=65535)]], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    # A command's timeout: under a tenth of a second nothing starts; a day is longer than any run should take.
    timeout_s: Annotated[float, _range(0.1, DAY_S, "seconds before a command is killed")] = 60.0
    # What the model sees of a command's output: a message on the bus holds at most 1 MiB.
    max_output_bytes: Annotated[int, _range(256, 1_048_576, "bytes of a command's output shown")] = 65536


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
    temperature: Annotated[float, _range(0, 2, "sampling temperature")] | None = None
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
    """How far one run may go. Zero or less would end a run before its first step; the ceilings are far
    past any real run (a week of wall clock: the run's bus credential lives that long)."""

    max_steps: Annotated[int, _range(1, 1_000_000, "model calls a run may make")] = 50
    max_tokens: Annotated[int, _range(1, MAX_TOKENS, "tokens a run may use")] = 200_000
    wall_clock_s: Annotated[int, _range(1, 7 * DAY_S, "seconds a run may last")] = 1800
    # per run; None: no cap in USD
    max_cost_usd: Annotated[float, _range(0, MAX_USD, "USD a run may spend")] | None = None


class MemoryPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    scopes: Annotated[list[Literal["agent", "repo", "global"]], msgspec.Meta(max_length=3)] = msgspec.field(
        default_factory=lambda: ["agent", "repo", "global"]
    )
    # What a run is handed of memory: 0 hands it nothing; a system prompt holds at most 200,000 characters.
    max_items: Annotated[int, _range(0, 1000, "memory items a run is given")] = 20
    max_chars: Annotated[int, _range(0, 200_000, "characters of memory a run is given")] = 8000
    tags: Annotated[list[str], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)


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
