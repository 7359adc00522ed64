from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Name, Out, SecretName, Text
from nexus.domain.agents import Limits, LLMSpec, MemoryPolicy, Permissions

SkillRef = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}(@[0-9]+)?$", description="name or name@version")
]
ToolName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.-]{1,64}$")]
# Each skill is looked up when the agent is saved and at every dispatch.
AtMost100 = msgspec.Meta(max_length=100)


class AgentSpec(Body):
    """An agent is data: everything a run of it needs, and nothing that is code."""

    name: Name
    system_prompt: Text
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    skills: Annotated[list[SkillRef], AtMost100] = msgspec.field(default_factory=list)
    tools: Annotated[list[ToolName], AtMost100] = msgspec.field(default_factory=list)
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    memory_policy: MemoryPolicy = msgspec.field(default_factory=MemoryPolicy)
    llm: LLMSpec = msgspec.field(default_factory=LLMSpec)
    limits: Limits = msgspec.field(default_factory=Limits)
    secrets: Annotated[list[SecretName], AtMost100] = msgspec.field(default_factory=list)
    # Agents (by name) its meta sessions may hand a child to though they may do more than it may;
    # without a name here a child goes only to an agent that may do no more (docs/goals.md).
    delegates_to: Annotated[list[Name], AtMost100] = msgspec.field(default_factory=list)


class AgentOut(Out):
    id: str
    name: str
    revision: int
    spec: AgentSpec
    created_at: str
    updated_at: str


class AgentRevisionOut(Out):
    agent_id: str
    revision: int
    spec: AgentSpec
    created_at: str
    created_by: str
