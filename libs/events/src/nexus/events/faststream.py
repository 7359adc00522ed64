"""FastStream subscribers that behave like `consume()`: a durable JetStream pull consumer with
explicit ack, the envelope decoded by the catalog into its msgspec payload, poison and exhausted
messages dead-lettered to `nexus.dlq.<subject>`. Import only from services that depend on faststream."""

from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nexus.events.consumer import Handler, handle_message


def durable_subscriber(broker: NatsBroker, *, subject: str, stream: str, durable: str, max_deliver: int = 5,
                       ack_wait_s: float = 30.0, deliver_new: bool = False):
    """Register `handler(Delivery)` on `subject`. `deliver_new`: a consumer created now starts at new
    messages instead of the stream's whole history (alerts about last week help nobody)."""
    config = ConsumerConfig(
        durable_name=durable, ack_policy=JsAckPolicy.EXPLICIT, max_deliver=max_deliver, ack_wait=ack_wait_s,
        deliver_policy=DeliverPolicy.NEW if deliver_new else DeliverPolicy.ALL, filter_subject=subject,
    )

    def register(handler: Handler):
        # One message per fetch: FastStream handles a fetched batch concurrently, and alerts keep their order.
        @broker.subscriber(subject, stream=JStream(stream, declare=False), durable=durable, config=config,
                           pull_sub=PullSub(batch_size=1, timeout=1.0), ack_policy=AckPolicy.MANUAL)
        async def on_message(msg: NatsMessage) -> None:
            await handle_message(broker.config.connection_state.stream, msg.raw_message, durable, handler, max_deliver)

        return on_message

    return register
