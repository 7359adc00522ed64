"""Every way a kernel operation can fail. Each names the agent it concerns."""

from __future__ import annotations


class KernelError(Exception):
    """Base of all kernel errors."""

    def __init__(self, agent_id: str | None = None, detail: str = "") -> None:
        self.agent_id = agent_id
        self.detail = detail
        super().__init__(f"{type(self).__name__}: {agent_id}" + (f" ({detail})" if detail else ""))


class AgentNotFound(KernelError, LookupError):
    """No agent with this id, here or (with NATS attached) in any other process."""


class DuplicateAgent(KernelError):
    """spawn() was given an id that is already registered."""


class MailboxClosed(KernelError):
    """The agent is stopping or stopped and takes no more messages."""


class ShuttingDown(KernelError):
    """The kernel is shutting down and takes no more messages or agents."""


class SendTimeout(KernelError, TimeoutError):
    """The mailbox stayed full for longer than the send timeout."""


class HandleTimeout(KernelError, TimeoutError):
    """A handler ran past its handle timeout and was cancelled."""

    def __init__(self, agent_id: str | None = None, detail: str = "", message_id: str | None = None) -> None:
        super().__init__(agent_id, detail)
        self.message_id = message_id


class AskTimeout(KernelError, TimeoutError):
    """No reply arrived within the ask timeout."""


class AgentFailed(KernelError):
    """A handler (or a bridged child process) failed; the cause is chained."""

    def __init__(self, agent_id: str | None = None, detail: str = "", message_id: str | None = None) -> None:
        super().__init__(agent_id, detail)
        self.message_id = message_id


class ReplyDropped(KernelError):
    """A message returned by a handler could not be delivered; the reason is chained."""


class RemoteError(KernelError):
    """The NATS transport failed (not connected, bad answer)."""


class BridgeError(KernelError):
    """A bridged child process could not be started or did not register."""


class BridgeProtocolError(KernelError):
    """A line from a bridged child was not valid protocol; it was skipped."""


# The remote side answers a delivery with one of these names; the sender raises the same class.
REMOTE_ERRORS: dict[str, type[KernelError]] = {
    cls.__name__: cls for cls in (AgentNotFound, MailboxClosed, ShuttingDown, SendTimeout)
}
