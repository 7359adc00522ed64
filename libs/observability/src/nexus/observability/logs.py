"""Logging: one line of JSON per record, carrying the service, run_id and the current trace id."""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if run_id:
            out["run_id"] = run_id
        if trace_id := _trace_id():
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")


def setup_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymongo", "nats", "httpx", "httpcore", "kr8s"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
