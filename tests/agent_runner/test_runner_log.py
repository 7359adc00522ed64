"""The runner's own log (runner.log: its stdout and stderr) holds at most its budget of characters, then one
line saying the rest was dropped (nexus.agent_runner.runner_log). In-process: the runner binds its own
streams so; a runner process filling it through an external CLI is in test_runner_external.py."""

import io
import logging
import sys

import pytest

from nexus.agent_runner import runner_log


def test_stdout_stderr_and_the_log_share_one_budget_then_say_the_rest_was_dropped(monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    handler = logging.StreamHandler(err)  # a log handler writing to stderr, as the runner's
    logging.getLogger().addHandler(handler)
    try:
        runner_log.bound(20)
        print("0123456789")  # 11 of the 20
        sys.stderr.write("abcdefgh")  # 19
        logging.getLogger("nexus.test").warning("overflow")  # 1 left: its first character, then the notice
        sys.stdout.write("more")
        sys.stderr.write("and more")
        assert sys.stdout.write("x") == 1  # what is dropped is still taken: a writer never retries
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue() == "0123456789\n"
    assert err.getvalue() == "abcdefgh" + "o" + runner_log.DROPPED


@pytest.mark.parametrize("text", ["x" * 20, "x" * 19])
def test_what_fits_the_budget_is_written_whole(text) -> None:
    stream = io.StringIO()
    bounded = runner_log.Bounded(stream, [20])
    bounded.write(text)
    assert stream.getvalue() == text  # nothing dropped, no notice
    bounded.write("yy")
    assert stream.getvalue() == text + ("y" if len(text) == 19 else "") + runner_log.DROPPED
