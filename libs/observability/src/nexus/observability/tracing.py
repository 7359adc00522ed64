"""Tracing: a tracer provider per process; spans go over OTLP/HTTP when `NEXUS_OTLP_ENDPOINT` is set and
nowhere otherwise. W3C trace context crosses NATS in message headers (nexus.events) and reaches a runner
through its environment (`TRACEPARENT`, the variable name OpenTelemetry's environment carrier uses)."""

import functools
import logging
import os
import random
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

import opentelemetry.context as otel_context
import opentelemetry.propagate as propagate
import opentelemetry.trace as trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("nexus.observability.tracing")

TRACES_PATH = "/v1/traces"
# The environment variables a parent hands its child process to continue its trace.
ENV_CARRIER = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE"}


def traces_url(endpoint: str) -> str:
    """`http://collector:4318` → `http://collector:4318/v1/traces`; a URL that names its path is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def setup_tracing(
    service: str, otlp_endpoint: str | None = None, *, resource: Mapping[str, str] | None = None
) -> "TracerProvider":
    """Install this process's tracer provider. Without an endpoint nothing is recorded: a span still gets its
    ids (for the logs) and its context crosses to the next hop, but as a non-recording span, flagged not
    sampled — building, timing and keeping attributes for spans nobody exports cost ~0.2 ms per published
    message. With an endpoint every span is recorded unless the caller's context says it was not sampled."""
    from opentelemetry.sdk.trace import TracerProvider  # the SDK only where a process sets up (kept off import paths)

    if not otlp_endpoint:
        provider = quiet_provider(service, resource)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=service_resource(service, resource))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(otlp_endpoint)), schedule_delay_millis=500)
        )
        log.info("exporting traces over OTLP to %s", traces_url(otlp_endpoint))
    trace.set_tracer_provider(provider)
    return provider


# What Resource.create reads besides its arguments (its default "otel" detector reads the first two).
_RESOURCE_ENV = ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS")
_ResourceKey = tuple[str, tuple[tuple[str, str], ...], tuple[str | None, ...]]
_resources: dict[_ResourceKey, "Resource"] = {}
_quiet: dict[_ResourceKey, "TracerProvider"] = {}


def _resource_key(service: str, resource: Mapping[str, str] | None) -> _ResourceKey:
    return service, tuple(sorted((resource or {}).items())), tuple(os.environ.get(name) for name in _RESOURCE_ENV)


@functools.cache
def _quiet_provider_class() -> type["TracerProvider"]:
    from opentelemetry.sdk.trace import TracerProvider

    class QuietTracerProvider(TracerProvider):
        def _handle_fork(self) -> None:
            # The SDK's hook in every forked child of a process holding a provider: a fresh lock, and the
            # process-dependent part of the resource looked up again (resource detectors found through
            # entry points: ~130 page faults and ~0.4 ms in each child, even one that never traces).
            # Nothing of this provider is exported, so its resource is never read: the lock only.
            self._tracers_lock = threading.Lock()

    return QuietTracerProvider


def quiet_provider(service: str, resource: Mapping[str, str] | None = None) -> "TracerProvider":
    """The provider of a process that exports nothing (non-recording spans, no processor), made once
    per service resource. A process that forks children (the runner zygote) makes it, and the tracers
    its children use, before it forks (`warm`): each child installs it and finds every tracer made —
    the SDK keeps a provider's tracers by scope, and making one (its scope, configuration and metrics)
    cost a forked runner ~0.3 ms per tracer. Never installed in the process that made it for others."""
    key = _resource_key(service, resource)
    made = _quiet.get(key)
    if made is None:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        # Nothing to flush at exit: no processor.
        made = _quiet_provider_class()(
            resource=service_resource(service, resource), sampler=ALWAYS_OFF, shutdown_on_exit=False
        )
        _quiet[key] = made
    return made


def records_nothing() -> bool:
    """This process's spans are never recorded: its provider is a quiet one (no exporter)."""
    provider = trace.get_tracer_provider()
    return any(quiet is provider for quiet in _quiet.values())


def service_resource(service: str, resource: Mapping[str, str] | None = None) -> "Resource":
    """The process's resource, made once per (service, attributes, OTEL_* environment): Resource.create
    runs its detectors on a thread pool (two threads, ~5 ms), which a runner forked from the warm zygote
    would otherwise pay on every run. The zygote makes it before it forks; a child whose environment
    names other resource attributes makes its own."""
    from opentelemetry.sdk.resources import Resource

    key = _resource_key(service, resource)
    made = _resources.get(key)
    if made is None:
        made = Resource.create({"service.name": service, "service.namespace": "nexus", **(resource or {})})
        _resources[key] = made
    return made


def warm(service: str, tracers: tuple[str, ...] = ()) -> None:
    """Do once, in a process that forks children (the runner zygote), what each child's tracing set-up
    would pay: the service's resource, the warnings filter the SDK's get_tracer compiles on first use
    (~0.7 ms per tracer in every child unless re's cache already holds its patterns), and the quiet
    provider a child without an exporter installs, with the `tracers` it will ask for (kept where
    `tracer` finds them: the SDK's own get_tracer, even for a tracer it holds, cost a forked run ~0.2 ms)."""
    provider = quiet_provider(service)
    for name in tracers or ("warm",):
        made = provider.get_tracer(name)
        if tracers:  # found by `tracer(name)` in a child that installs this provider: not even the SDK's lookup
            _tracers[name] = (provider, made)


def flush_tracing(timeout_ms: int = 5000) -> None:
    """Export what is buffered: call before a process exits (a runner's last spans are its most useful)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(timeout_ms)


_tracers: dict[str, tuple[object, trace.Tracer]] = {}


def tracer(name: str) -> trace.Tracer:
    """The tracer `name` of the current provider, made once per provider (the SDK makes a new one, with
    its scope, on every get_tracer: ~0.25 ms each, several per published event)."""
    provider = trace.get_tracer_provider()
    kept = _tracers.get(name)
    if kept is None or kept[0] is not provider:
        kept = (provider, provider.get_tracer(name))
        _tracers[name] = kept
    return kept[1]


def traceparent_env() -> dict[str, str]:
    """`TRACEPARENT` (and `TRACESTATE`) for a child process, continuing the current span; empty without one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {ENV_CARRIER[k]: v for k, v in carrier.items() if k in ENV_CARRIER}


def context_from_headers(carrier: Mapping[str, str]) -> otel_context.Context:
    """The trace context (and baggage) a caller's headers carry, by the process's propagators."""
    return propagate.extract(carrier)


def context_from_env(environ: Mapping[str, str]) -> otel_context.Context:
    """The trace context a parent process handed over in `TRACEPARENT`; an empty context without it."""
    carrier = {header: environ[var] for header, var in ENV_CARRIER.items() if environ.get(var)}
    return propagate.extract(carrier)


@contextmanager
def span(
    tracer_: trace.Tracer,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, object] | None = None,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A current span that records an exception as its error status (and lets it propagate)."""
    if records_nothing():
        with unrecorded(context) as s:
            yield s
        return
    # OpenTelemetry checks each value itself: one it cannot carry is dropped with a warning
    with tracer_.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=cast(Attributes, dict(attributes or {})),
        record_exception=False,
        set_status_on_exception=False,
    ) as s:
        try:
            yield s
        except BaseException as exc:
            s.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))
            s.set_attribute("error.type", type(exc).__name__)
            raise


@contextmanager
def unrecorded(context: otel_context.Context | None = None) -> Iterator[Span]:
    """The current span a process that records nothing gets, made as the SDK makes it under its ALWAYS_OFF
    sampler — a non-recording span, not sampled, continuing the parent's trace (its trace id and state)
    or starting one, with a span id of its own for the logs — without the SDK's path there (sampler,
    attribute checks, span limits, its use_span): the first span of a forked run cost ~160 page faults
    through it, and every consumed message a span in core-api and the worker."""
    parent = trace.get_current_span(context).get_span_context()
    span_id = random.getrandbits(64)
    while not span_id:
        span_id = random.getrandbits(64)
    if parent.is_valid:
        trace_id, state = parent.trace_id, parent.trace_state
    else:
        trace_id, state = random.getrandbits(128) or 1, None
    s = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(0), trace_state=state))
    token = otel_context.attach(trace.set_span_in_context(s, context))
    try:
        yield s
    finally:
        otel_context.detach(token)


def ids() -> tuple[str | None, str | None]:
    """The current trace and span ids in their hex form, or (None, None) outside a span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
