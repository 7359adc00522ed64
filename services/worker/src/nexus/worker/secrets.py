"""Secret values by name: the store now lives in nexus.observability.secrets (core-api and
board-sync resolve secret references the same way)."""

from nexus.observability.secrets import SecretStore, env_name

__all__ = ["SecretStore", "env_name"]
