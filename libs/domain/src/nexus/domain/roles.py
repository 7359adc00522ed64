"""Who may do what. Every route names one Capability; a role grants a set of them."""

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    LEAD = "lead"
    VIEWER = "viewer"
    RUNNER = "runner"


class Capability(StrEnum):
    READ = "read"  # read any resource
    MANAGE_AGENTS = "manage_agents"  # agents, skills, memory, repositories, schedules
    MANAGE_WORK = "manage_work"  # goals, tasks, runs (cancel/retry)
    DECIDE_APPROVALS = "decide_approvals"
    MANAGE_KEYS = "manage_keys"  # api keys, audit
    RUN_SELF = "run_self"  # a runner acting on its own run only


GRANTS: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability) - {Capability.RUN_SELF},
    Role.LEAD: frozenset({Capability.READ, Capability.MANAGE_WORK, Capability.DECIDE_APPROVALS}),
    Role.VIEWER: frozenset({Capability.READ}),
    Role.RUNNER: frozenset({Capability.RUN_SELF}),
}


def allows(role: Role, capability: Capability) -> bool:
    return capability in GRANTS[role]
