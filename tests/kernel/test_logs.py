"""Log formats of kernel programs: compact, json (one object per line), pretty."""

import io
import json
import logging

import pytest

from nexus.kernel.logs import configure_logging


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_is_one_object_per_line_with_extras() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    logging.getLogger("nexus.kernel").info("agent %s stopped", "a1", extra={"agent_id": "a1"})
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "agent a1 stopped"
    assert (entry["level"], entry["logger"], entry["agent_id"]) == ("info", "nexus.kernel", "a1")


@pytest.mark.usefixtures("restore_root_logger")
def test_level_filters_and_warn_means_warning() -> None:
    stream = io.StringIO()
    configure_logging("warn", "compact", stream)
    log = logging.getLogger("nexus.kernel")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_pretty_puts_fields_on_their_own_lines() -> None:
    stream = io.StringIO()
    configure_logging("info", "pretty", stream)
    logging.getLogger("nexus.kernel").info("spawned", extra={"agents": 3})
    text = stream.getvalue()
    assert "spawned" in text and "agents: 3" in text and "\033[" not in text  # no colour off a tty
