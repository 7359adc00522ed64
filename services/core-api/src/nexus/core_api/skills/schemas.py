from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Name, Out, Text


class SkillSpec(Body):
    """A skill is a markdown document attached to agents by name (latest) or name@version (pinned)."""

    name: Name
    content: Annotated[Text, msgspec.Meta(min_length=1)]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class SkillOut(Out):
    id: str
    name: str
    version: int
    description: str
    content: str
    created_at: str
    updated_at: str
