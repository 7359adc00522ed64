"""Whom a meta run may hand a child to, decided here where its plan is accepted (never by the
runner): an agent whose document names no more than the meta run's pinned revision of its own
agent, or one that revision names in `delegates_to`."""

from nexus.core_api.agents import service as agents
from nexus.core_api.errors import DomainError
from nexus.db.documents import AgentRevision, Run
from nexus.domain.delegation import authority_of, excess


async def check_child_agent(parent: Run, agent: str | None) -> str:
    """The id of the agent that runs the child (the parent's own when it names none); a 403 naming
    the `agent` field and every field by which that agent may do more, when it may not."""
    pinned = await AgentRevision.get(agents.rev_id(parent.agent_id, parent.agent_revision))
    if pinned is None:
        raise DomainError(403, f"the revision of agent {parent.agent_id} that run {parent.id} pins is gone")
    child = await agents.get(agent or parent.agent_id)
    own = authority_of(pinned.spec)
    if own.names_agent(child.name):
        return child.id
    found = excess(own, authority_of(child.spec))
    if found:
        owner = pinned.spec.get("name", parent.agent_id)
        raise DomainError(
            403,
            f"delegation refused: agent {child.name!r} may do more than {owner!r} ({'; '.join(found)});"
            f" {owner!r} must name it in delegates_to",
            field="agent",
        )
    return child.id
