"""A run's events ride out a NATS restart: a failed publish is retried with the same message id
(JetStream keeps one copy), instead of the run ending on a bus hiccup."""

import nats.errors

from nexus.agent_runner.reporter import RunReporter


class FlakyPublisher:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.ids: list[str] = []

    async def publish(self, type_, data, *, msg_id: str, **_) -> None:
        self.ids.append(msg_id)
        if len(self.ids) <= self.failures:
            raise nats.errors.TimeoutError


async def test_a_status_is_retried_with_the_same_message_id() -> None:
    reporter = RunReporter(None, "run_x", 1)  # type: ignore[arg-type]
    reporter.publisher = FlakyPublisher(failures=2)  # type: ignore[assignment]
    await reporter.status("succeeded")
    ids = reporter.publisher.ids  # type: ignore[attr-defined]
    assert len(ids) == 3 and len(set(ids)) == 1
