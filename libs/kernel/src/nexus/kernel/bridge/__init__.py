"""Agents in other languages, hosted as child processes speaking NDJSON over stdin/stdout."""

from nexus.kernel.bridge.agent import (
    AGENT_ID_ENV,
    BridgeAgent,
    BridgeExited,
    spawn_bridge,
)

__all__ = ["AGENT_ID_ENV", "BridgeAgent", "BridgeExited", "spawn_bridge"]
