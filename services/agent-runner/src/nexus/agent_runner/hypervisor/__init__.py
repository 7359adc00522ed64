"""The hypervisor: the only way a model touches the world (see core.Hypervisor)."""

from nexus.agent_runner.hypervisor.core import Hypervisor, RecordError
from nexus.agent_runner.hypervisor.tools import ToolResult, ToolSpecJSON

__all__ = ["Hypervisor", "RecordError", "ToolResult", "ToolSpecJSON"]
