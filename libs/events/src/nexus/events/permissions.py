"""Who may publish and subscribe to what on the bus: the one table NATS authorization is built from.

Every service connects as its own NATS user, and every run attempt as a user of its own, with the
permissions below (nexus.events.credentials turns them into signed user credentials). A new subject
needs a line here for the service that publishes it and the one that consumes it, nothing else.

Each connection keeps its reply subjects under an inbox prefix of its own (`_INBOX.<user>`), so no
user can read another's JetStream acks, API answers or request replies."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from nexus.events.catalog import CMDS_STREAM, EVENTS_STREAM, RUNS_STREAM, STREAMS, spec

# Run subjects only core-api may publish, even on a run's own `nexus.run.<run_id>.>`.
CORE_ONLY_RUN_KINDS = ("approval_decided", "child_finished")
KERNEL_INBOX = "nexus.agent.{agent_id}.inbox"


@dataclass(frozen=True)
class Permissions:
    pub_allow: tuple[str, ...]
    sub_allow: tuple[str, ...]
    pub_deny: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    # Replies to requests this user received (the kernel's delivery acks): at most one per request.
    allow_responses: bool = False


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer a service creates and reads (nexus.events.consumer.consume)."""

    stream: str
    name: str
    filter: str


def inbox_prefix(user: str) -> str:
    return f"_INBOX.{user}"


def subject(type_: str, **params: str) -> str:
    """The catalog subject of a message type; a `{param}` left unfilled becomes a `*` wildcard."""
    pattern = spec(type_).subject
    return pattern.format(**{"run_id": params.get("run_id", "*"), "original_subject": ">"})


def durable_api(d: Durable) -> list[str]:
    """JetStream API subjects to look up, create, pull from and acknowledge one durable consumer."""
    api = f"$JS.API.CONSUMER.%s.{d.stream}.{d.name}"
    return [
        api % "INFO",
        api % "DURABLE.CREATE",
        f"{api % 'CREATE'}.{d.filter}",
        api % "MSG.NEXT",
        f"$JS.ACK.{d.stream}.{d.name}.>",
        f"$JS.ACK.*.*.{d.stream}.{d.name}.>",
    ]


def stream_admin() -> list[str]:
    """Creating or updating the catalog's streams (nexus.events.bus.ensure_streams), by name."""
    return [f"$JS.API.STREAM.{op}.{s.name}" for s in STREAMS for op in ("INFO", "CREATE", "UPDATE")]


def kv_bucket(bucket: str) -> list[str]:
    """Full use of one KV bucket the service owns."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        f"$JS.API.STREAM.*.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def ephemeral_readers(stream: str) -> list[str]:
    """Ordered push consumers on a whole stream (core-api's SSE replays)."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    attempt: int | str
    session_id: str
    parent_session_id: str | None = None
    reads: tuple[str, ...] = field(default=CORE_ONLY_RUN_KINDS)

    @property
    def user(self) -> str:
        return self.run_id

    def consumer(self, kind: str) -> str:
        """The name of this attempt's durable consumer on one of its own run subjects."""
        return f"{self.run_id}-a{self.attempt}-{kind}"


def run_streamed(run: RunIdentity) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a run attempt may publish into streams, as (allowed, denied) subject patterns: its own run
    subjects less what only core-api says there, and its own plan of children. Its credential is built
    from these, and the worker's relay of a forked run's events checks each subject against them."""
    rid = run.run_id
    allowed = (f"nexus.run.{rid}.>", subject("core.plan_children", run_id=rid))
    return allowed, tuple(f"nexus.run.{rid}.{k}" for k in CORE_ONLY_RUN_KINDS)


def matches(pattern: str, subject_: str) -> bool:
    """NATS subject matching: `*` is one token, a last `>` one or more."""
    want, got = pattern.split("."), subject_.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def _service(
    user: str,
    publishes: list[str],
    durables: list[Durable],
    *,
    extra_pub: Sequence[str] = (),
    subscribes: Sequence[str] = (),
    responds: bool = False,
    deny: Sequence[str] = (),
) -> Permissions:
    dlq = [subject("dlq")] if durables else []  # a consumer dead-letters what it cannot handle
    pub = [*publishes, *dlq, *stream_admin(), *(a for d in durables for a in durable_api(d)), *extra_pub]
    return Permissions(
        pub_allow=tuple(dict.fromkeys(pub)),
        pub_deny=tuple(deny),
        sub_allow=(f"{inbox_prefix(user)}.>", *subscribes),
        allow_responses=responds,
    )


# Request/reply queries core-api answers (the gateway's reads): core NATS, no stream.
CORE_QUERIES = "nexus.rpc.core.*"
# FastStream's pull subscriptions fetch into inboxes of their own, `_INBOX.<nuid>` (two tokens; it does
# not use the connection's prefix). Every other user's replies live under `_INBOX.<user>.…` (three or
# more tokens), which this does not match.
FASTSTREAM_INBOXES = "_INBOX.*"


# core-api's commands, one durable consumer per subject: the subject picks the handler. NEXUS_CMDS is a
# work queue, so their filters may not overlap (the server refuses such a consumer).
CORE_COMMANDS = (
    "core.create_goal",
    "core.decide_approval",
    "core.cancel_run",
    "core.cancel_task",
    "core.fire_schedule",
    "core.plan_children",
    "core.follow_goal",
)


def command_durable(type_: str) -> Durable:
    """core-api's durable for one of its commands: core.create_goal → core-api-create-goal."""
    return Durable(CMDS_STREAM, "core-api-" + type_.removeprefix("core.").replace("_", "-"), subject(type_))


COMMAND_DURABLES = [command_durable(t) for t in CORE_COMMANDS]
# The one durable on all of `nexus.cmd.core.>` core-api read before: it overlaps every durable above, so a
# core-api deletes it at start (what it held stays in the work queue for the new durables).
LEGACY_COMMANDS = Durable(CMDS_STREAM, "core-api-cmds", "nexus.cmd.core.>")
CORE_API_DURABLES = [
    Durable(RUNS_STREAM, "core-api-runs", "nexus.run.>"),
    *COMMAND_DURABLES,
]
# The durable on every task event a goal once followed its tasks by (most tasks are in no goal: three
# deliveries of nothing per run); a goal's task now sends `core.follow_goal`. A core-api deletes it at start.
LEGACY_GOALS = Durable(EVENTS_STREAM, "core-api-goals", "nexus.evt.task.>")
BOARD_SYNC_DURABLES = [
    Durable(EVENTS_STREAM, "board-sync-tasks", "nexus.evt.task.>"),
    Durable(EVENTS_STREAM, "board-sync-runs", "nexus.evt.run.>"),
    Durable(EVENTS_STREAM, "board-sync-external", subject("board.external_changed")),
]
GATEWAY_DURABLES = [
    Durable(EVENTS_STREAM, "telegram-gw-approvals", "nexus.evt.approval.>"),
    Durable(EVENTS_STREAM, "telegram-gw-runs", "nexus.evt.run.>"),
    Durable(EVENTS_STREAM, "telegram-gw-goals", "nexus.evt.goal.>"),
    Durable(EVENTS_STREAM, "telegram-gw-tasks", subject("task.created")),
]
WORKER_DURABLES = [
    Durable(CMDS_STREAM, "worker-launch", subject("worker.launch_run")),
    Durable(CMDS_STREAM, "worker-cancel", subject("worker.cancel_run")),
]

# What any run may publish into streams (allowed, denied): what the worker relays, each relay checked per run.
ANY_RUN_STREAMED = run_streamed(RunIdentity("*", 0, ""))

SERVICES: dict[str, Permissions] = {
    "core-api": _service(
        "core-api",
        [
            "nexus.evt.>",
            subject("worker.launch_run"),
            subject("worker.cancel_run"),
            subject("core.follow_goal"),
            *(subject(f"run.{k}") for k in CORE_ONLY_RUN_KINDS),
        ],
        CORE_API_DURABLES,
        # SSE replays; the last status of a run read straight from its stream (an exit without its verdict)
        extra_pub=[
            *ephemeral_readers(RUNS_STREAM),
            *ephemeral_readers(EVENTS_STREAM),
            f"$JS.API.STREAM.MSG.GET.{RUNS_STREAM}",
            f"$JS.API.DIRECT.GET.{RUNS_STREAM}",
            f"$JS.API.DIRECT.GET.{RUNS_STREAM}.>",
            # the command durable of before, retired at start
            f"$JS.API.CONSUMER.INFO.{CMDS_STREAM}.{LEGACY_COMMANDS.name}",
            f"$JS.API.CONSUMER.DELETE.{CMDS_STREAM}.{LEGACY_COMMANDS.name}",
            f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.{LEGACY_GOALS.name}",
        ],
        # answers the gateway's queries (replies are responses); its command subscribers are FastStream's;
        # hears every core-api's announcements of runs' ends (what waits for one is woken by them)
        subscribes=[
            CORE_QUERIES,
            FASTSTREAM_INBOXES,
            *(subject(f"run.{end}") for end in ("succeeded", "failed", "cancelled", "timed_out")),
        ],
        responds=True,
    ),
    "worker": _service(
        "worker",
        # its own run.runtime and run.status, and what it relays for the runs it forked (each relay checked
        # against that run's own `run_streamed`): every run's subjects and plans, less core-api's kinds
        [*ANY_RUN_STREAMED[0], subject("core.fire_schedule")],
        WORKER_DURABLES,
        deny=ANY_RUN_STREAMED[1],
        extra_pub=[*kv_bucket("nexus_launches"), *kv_bucket("nexus_workers")],
        # every worker hears every cancel (core NATS) and watches runs' liveness
        subscribes=[
            subject("worker.cancel_run"),
            subject("run.heartbeat"),
            subject("run.status"),
            subject("run.runtime"),
        ],
    ),
    "board-sync": _service(
        "board-sync", [subject("core.cancel_task")], BOARD_SYNC_DURABLES, subscribes=[FASTSTREAM_INBOXES]
    ),
    "telegram-gateway": _service(
        "telegram-gateway",
        [subject("core.decide_approval"), subject("core.create_goal"), subject("core.cancel_run"), CORE_QUERIES],
        GATEWAY_DURABLES,
        extra_pub=[*kv_bucket("nexus_chat"), *kv_bucket("nexus_chat_marks"), *kv_bucket("nexus_chat_outbox")],
        subscribes=[FASTSTREAM_INBOXES],
    ),
    # Developers' and the test suite's own tools (never provisioned in a cluster): everything.
    "tools": Permissions(pub_allow=(">",), sub_allow=(">",)),
}

# Who may publish approval decisions into core-api (checked in tests against the table above).
DECIDERS = tuple(u for u, p in SERVICES.items() if subject("core.decide_approval") in p.pub_allow)


def for_run(run: RunIdentity) -> Permissions:
    """A run attempt's runner: its own run subjects (less what only core-api says there), its own
    plan of children, its kernel inbox and its parent's, and its own consumers on what core-api says
    to it. Nothing on `nexus.cmd.>` beyond its own plan, nothing of another run, no service subject."""
    rid = run.run_id
    own, denied = run_streamed(run)
    # A session without a parent may tell its own inbox (harmless), so the template has one shape for all.
    kernel = [KERNEL_INBOX.format(agent_id=run.parent_session_id or run.session_id)]
    consumers = []
    for kind in run.reads:
        name = run.consumer(kind)
        api = f"$JS.API.CONSUMER.%s.{RUNS_STREAM}.{name}"
        consumers += [api % "INFO", f"{api % 'CREATE'}.nexus.run.{rid}.{kind}", api % "MSG.NEXT", api % "DELETE"]
    return Permissions(
        pub_allow=(*own, *kernel, *consumers),
        pub_deny=denied,
        # Its session's inbox, and its kernel's own (where replies to the kernel's asks arrive).
        sub_allow=(
            f"{inbox_prefix(run.user)}.>",
            KERNEL_INBOX.format(agent_id=run.session_id),
            KERNEL_INBOX.format(agent_id=f"runner-{run.session_id}"),
        ),
        allow_responses=True,
    )


# The same permissions with the run's identity left to the server: the run-signing key is a scoped
# signing key of the account carrying this template, so every user it signs gets exactly a run's
# permissions, filled from the user JWT's name (the run id) and tags — never a service's.
RUN_TEMPLATE = RunIdentity("{{name()}}", "{{tag(attempt)}}", "{{tag(session)}}", "{{tag(parent)}}")


def run_tags(run: RunIdentity) -> list[str]:
    """The user JWT tags that fill RUN_TEMPLATE for `run` (its name is the run id)."""
    return [f"attempt:{run.attempt}", f"session:{run.session_id}", f"parent:{run.parent_session_id or run.session_id}"]
