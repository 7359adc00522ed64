"""nexus-observability: JSON logs with run and trace ids, Prometheus metrics, health endpoints, tracing."""
