"""A refusal: the model asked for something the hypervisor will not do. Never raised to the
caller of `Hypervisor.call` — it becomes an error result and a recorded RefusedChange."""


class Refused(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
