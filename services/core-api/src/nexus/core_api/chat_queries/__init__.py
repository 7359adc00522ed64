"""Read queries for chat gateways over NATS request/reply (`nexus.rpc.core.<query>`)."""
