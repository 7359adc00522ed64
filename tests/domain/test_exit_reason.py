"""A runner that ended without reporting an end gets a reason an operator can act on."""

import pytest

from nexus.domain.runs import exit_reason


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (-24, "CPU time limit"),
        (-25, "file size limit"),
        (-9, "SIGKILL"),
        (137, "SIGKILL"),  # a shell's 128 + 9
        (-11, "crashed"),
        (-40, "signal 40"),
        (1, "exited with code 1"),
        (None, "no exit code"),
    ],
)
def test_the_reason_names_what_ended_the_runner(code: int | None, says: str) -> None:
    assert says in exit_reason(code)
