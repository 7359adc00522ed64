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
        self.service = service

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


def setup_logging(service: str, level: str = "info", fmt: str = "json", *, quiet: tuple[str, ...] = ()) -> None:
    """One handler on the root logger writing `fmt` lines of `service` to stderr, at `level`; the
    loggers named in `quiet` (and some chatty libraries) say only warnings and worse. A handler already
    there that writes the same lines to this stderr, with no filter, is kept: a runner forked from the
    warm zygote inherits the one it would make (making one costs each run a lock, a weak reference in
    logging's module state, a formatter)."""
    kind = JsonFormatter if fmt == "json" else TextFormatter
    root = logging.getLogger()
    if not _kept(root.handlers, kind, service):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(kind(service))
        root.handlers[:] = [handler]
    _set_level(root, logging.getLevelName(level.upper()))
    for noisy in ("pymongo", "nats", "httpx", "httpcore", "kr8s", *quiet):
        _set_level(logging.getLogger(noisy), max(logging.WARNING, root.level))


def _kept(handlers: list[logging.Handler], kind: type, service: str) -> bool:
    if len(handlers) != 1:
        return False
    (h,) = handlers
    return (
        type(h) is logging.StreamHandler
        and h.stream is sys.stderr
        and not h.filters
        and h.level == logging.NOTSET
        and type(h.formatter) is kind
        and getattr(h.formatter, "service", None) == service
    )
