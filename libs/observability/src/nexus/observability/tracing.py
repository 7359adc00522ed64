"""Tracing: a tracer provider per service; spans export over OTLP when an endpoint is configured."""

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("nexus.observability.tracing")


def setup_tracing(service: str, otlp_endpoint: str | None = None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        except ImportError:
            log.warning("NEXUS_OTLP_ENDPOINT is set but the OTLP exporter is not installed; spans stay local")
    trace.set_tracer_provider(provider)
    return provider
