"""Which provider a task's card lives on: the settings for its repository, else the default ones,
else the internal board. Credentials are resolved from secret references only here."""

from typing import Any

from nexus.board_sync.providers.base import BoardProvider
from nexus.board_sync.providers.http import limiter_for
from nexus.board_sync.providers.internal import InternalProvider
from nexus.board_sync.providers.jira import JiraProvider
from nexus.board_sync.providers.plane import PlaneProvider
from nexus.domain.json_types import JsonObject
from nexus.observability.secrets import SecretStore

INTERNAL = InternalProvider()


class MissingSecret(Exception):
    pass


class ProviderResolver:
    def __init__(self, settings_collection: Any, secrets: SecretStore) -> None:
        self.coll = settings_collection
        self.secrets = secrets
        self._built: dict[str, tuple[Any, BoardProvider]] = {}  # scope -> (updated_at, provider)

    def _secret(self, ref: str) -> str:
        value = self.secrets.get(ref)
        if value is None:
            raise MissingSecret(f"secret {ref!r} is not available to board-sync")
        return value

    def _build(self, doc: JsonObject) -> BoardProvider:
        if doc["provider"] == "plane":
            c = doc["plane"]
            return PlaneProvider(
                c["base_url"],
                c["workspace_slug"],
                c["project_id"],
                self._secret(c["api_key_secret"]),
                limiter_for(f"plane:{c['base_url']}:{c['api_key_secret']}", c.get("rate_limit_per_minute", 60)),
            )
        if doc["provider"] == "jira":
            c = doc["jira"]
            return JiraProvider(
                c["base_url"],
                c["project_key"],
                c["email"],
                self._secret(c["api_token_secret"]),
                limiter_for(f"jira:{c['base_url']}:{c['api_token_secret']}", c.get("rate_limit_per_minute", 100)),
                status_names=c.get("status_names") or None,
            )
        return INTERNAL

    async def for_scope(self, scope: str) -> BoardProvider:
        doc = await self.coll.find_one({"_id": scope})
        if doc is None:
            return INTERNAL
        cached = self._built.get(scope)
        if cached and cached[0] == doc.get("updated_at"):
            return cached[1]
        provider = self._build(doc)
        if cached:
            await cached[1].aclose()
        self._built[scope] = (doc.get("updated_at"), provider)
        return provider

    async def scope_of(self, repository_id: str | None) -> str:
        if repository_id and await self.coll.find_one({"_id": repository_id}, {"_id": 1}):
            return repository_id
        return "default"

    async def aclose(self) -> None:
        for _, provider in self._built.values():
            await provider.aclose()
