"""nexus-kernel: agents as lazily scheduled mailboxes with backpressure, timeouts,
O(1) routing, supervision, graceful shutdown, NATS routing and process bridges."""

from nexus.kernel.agent import Agent, BaseAgent, FunctionAgent
from nexus.kernel.config import KernelConfig, LoggingConfig, NexusConfig, load_config
from nexus.kernel.errors import (
    AgentFailed,
    AgentNotFound,
    AskTimeout,
    BridgeError,
    BridgeProtocolError,
    DuplicateAgent,
    HandleTimeout,
    KernelError,
    MailboxClosed,
    RemoteError,
    ReplyDropped,
    SendTimeout,
    ShuttingDown,
)
from nexus.kernel.kernel import Kernel
from nexus.kernel.message import Message, MessageKind
from nexus.kernel.stats import AgentStats, KernelStats, ShutdownReport
from nexus.kernel.supervision import RestartPolicy

__all__ = [
    "Agent",
    "AgentFailed",
    "AgentNotFound",
    "AgentStats",
    "AskTimeout",
    "BaseAgent",
    "BridgeError",
    "BridgeProtocolError",
    "DuplicateAgent",
    "FunctionAgent",
    "HandleTimeout",
    "Kernel",
    "KernelConfig",
    "KernelError",
    "KernelStats",
    "LoggingConfig",
    "MailboxClosed",
    "Message",
    "MessageKind",
    "NexusConfig",
    "RemoteError",
    "ReplyDropped",
    "RestartPolicy",
    "SendTimeout",
    "ShutdownReport",
    "ShuttingDown",
    "load_config",
]
