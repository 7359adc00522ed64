"""Logging, the same in every process (the runner included): one line of JSON per record in production, readable
text locally; both carry the run_id and the current trace and span ids on every line that has them."""

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)


@contextmanager
def about_run(run_id: str | None) -> Iterator[None]:
    """Log lines inside carry this run's id (nothing changes without one)."""
    token = run_id_var.set(run_id) if run_id else None
    try:
        yield
    finally:
        if token is not None:
            run_id_var.reset(token)


def correlation(record: logging.LogRecord) -> dict[str, str]:
    """run_id, trace_id and span_id of a record: from the record itself, else from the current context."""
    from nexus.observability.tracing import ids

    out = {}
    if run_id := getattr(record, "run_id", None) or run_id_var.get():
        out["run_id"] = run_id
    trace_id, span_id = ids()
    if trace_id:
        out["trace_id"], out["span_id"] = trace_id, span_id
    return out


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
        out.update(correlation(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (the runner masks a traceback before any handler sees it)
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = correlation(record)
        if not ids:
            return line
        head, sep, rest = line.partition("\n")  # the ids go on the message's line, before any traceback
        return head + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]" + sep + rest


def _set_level(logger: logging.Logger, level: int) -> None:
    # setLevel clears the level cache of every logger in the process: skipped when nothing changes
    # (a runner forked from the warm zygote inherits the levels it would set).
    if logger.level != level:
        logger.setLevel(level)


def setup_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _set_level(root, logging.getLevelName(level.upper()))
    for noisy in ("pymongo", "nats", "httpx", "httpcore", "kr8s"):
        _set_level(logging.getLogger(noisy), max(logging.WARNING, root.level))
