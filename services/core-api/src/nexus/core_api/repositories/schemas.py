from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Name, Out, SecretName

GitUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"^(https?://|ssh://|git@|file://|/)\S+$")]
Branch = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/-]{1,200}$")]


class RepositorySpec(Body):
    name: Name
    url: GitUrl
    default_branch: Branch = "main"
    # The NAME of a secret holding credentials; the value never passes through the API.
    credentials_secret: SecretName | None = None


class RepositoryOut(Out):
    id: str
    name: str
    url: str
    default_branch: str
    has_credentials: bool
    created_at: str
    updated_at: str
