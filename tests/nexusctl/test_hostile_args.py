"""Every nexusctl command, walked from its own command tree so a new one is covered the day it is added,
given values no one should type against a real core-api: numbers below one, past 64 bits or not
numbers, ids of the wrong shape, a name that is no UTF-8 (a lone surrogate is what Python makes of
such bytes in argv), dot segments, a huge value, and unknown options. Each ends with a clear message
and a non-zero exit, never a traceback."""

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from nexus.nexusctl.main import app

pytestmark = [pytest.mark.infra]

NUMBERS = ["-1", "0", "abc", str(2**64), "1e309"]
WORDS = ["\udcff\udcfe", "../../v1/api-keys", "a/b?c=d#e", "x" * 5000, "%00", "-"]


def commands() -> list[tuple[list[str], Any]]:
    """(the words that name it, the command) for every leaf command of nexusctl."""
    out: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, words: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group (typer's own click classes)
            for name, sub in cmd.commands.items():
                walk(sub, [*words, name])
        else:
            out.append((words, cmd))

    walk(typer.main.get_command(app), [])
    assert len(out) >= 15, [" ".join(w) for w, _ in out]
    return out


def invocations() -> list[list[str]]:
    """For each command: its arguments all hostile words, then each numeric option with each bad number,
    then an option that does not exist."""
    out: list[list[str]] = []
    for words, cmd in commands():
        arguments = [p for p in cmd.params if type(p).__name__.endswith("Argument")]
        options = [
            p for p in cmd.params if type(p).__name__.endswith("Option") and not p.is_flag and p.opts[0] != "--help"
        ]
        required = [o for o in options if o.required]
        for word in WORDS:
            given = [word] * sum(max(1, a.nargs) for a in arguments if a.required)
            for o in required:
                given += [o.opts[0], word]
            if given:  # a command that takes nothing (a watch follows its stream) has no word to refuse
                out.append([*words, *given])
        numeric = [o for o in options if o.type_descriptor.annotation in (int, float)]
        base = [*words, *(["x"] * sum(1 for a in arguments if a.required))]
        for o in numeric:
            out += [[*base, o.opts[0], n] for n in NUMBERS]
        out.append([*base, "--zz-no-such-option"])
    return out


def test_hostile_arguments_end_in_a_clear_message_and_a_non_zero_exit(nexus) -> None:
    runner = CliRunner()
    failures: list[str] = []
    cases = invocations()
    for args in cases:
        r = runner.invoke(app, args, env=nexus.env(), catch_exceptions=True)
        said = (r.stdout + r.stderr).strip()
        what = f"nexusctl {' '.join(a[:40] for a in args)!r}"
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            failures.append(f"{what} -> raised {r.exception!r}")
        elif "Traceback" in said:
            failures.append(f"{what} -> a traceback: {said[:300]}")
        elif r.exit_code == 0 and any(n in args for n in NUMBERS[:2]):
            failures.append(f"{what} -> accepted: {said[:200]}")
        elif r.exit_code != 0 and not said:
            failures.append(f"{what} -> exit {r.exit_code} saying nothing")
    assert len(cases) >= 100, len(cases)
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:40])


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_list_of_no_items_is_refused_not_shown_empty(nexus, limit: str) -> None:
    r = CliRunner().invoke(app, ["get", "agents", "--limit", limit], env=nexus.env())
    assert r.exit_code == 2 and "--limit" in r.stderr and "No agents" not in r.stdout, (r.exit_code, r.output)


@pytest.mark.parametrize("value", ["..", ".", "../../v1/api-keys", "a/b?c#d"])
def test_an_id_is_one_path_segment_whatever_it_holds(nexus, value: str) -> None:
    """A name or id never reaches another route of the API: `runs logs ..` asks for the run named `..`."""
    r = CliRunner().invoke(app, ["runs", "logs", value], env=nexus.env())
    assert r.exit_code == 1 and "Not found (404)" in r.stderr, (r.exit_code, r.output)
