"""A runtime's start that fails transiently is tried again with backoff, up to `launch_retries` tries in all;
one that fails for good is tried once. (The first try is made outside tenacity: the tries must not change.)"""

from typing import Any, cast

import pytest

from nexus.worker.launcher import Launcher
from nexus.worker.runtimes.base import RunRequest, RuntimeError_
from nexus.worker.slots import Slots
from tests.worker.conftest import FlakyRuntime, trivial_config


def launcher(runtime: FlakyRuntime, retries: int) -> Launcher:
    unused = cast(Any, None)  # the start path reaches neither the bus nor the claims
    return Launcher(
        cast(Any, runtime), unused, unused, unused, Slots(4, 4), nats_url="", worker_id="w", launch_retries=retries
    )


def request() -> RunRequest:
    return RunRequest(run_id="r-flaky", attempt=1, config=trivial_config("r-flaky"))


async def test_a_start_that_fails_transiently_is_tried_again_until_it_starts() -> None:
    runtime = FlakyRuntime([RuntimeError_("busy", transient=True), RuntimeError_("busy", transient=True)])
    handle = await launcher(runtime, retries=4)._start_retrying(request())
    assert handle.ref == "42" and runtime.tries == 3


async def test_transient_failures_are_tried_launch_retries_times_in_all() -> None:
    runtime = FlakyRuntime([RuntimeError_(f"busy {i}", transient=True) for i in range(5)])
    with pytest.raises(RuntimeError_, match="busy 2"):
        await launcher(runtime, retries=3)._start_retrying(request())
    assert runtime.tries == 3


async def test_a_failure_for_good_is_tried_once() -> None:
    runtime = FlakyRuntime([RuntimeError_("no such image", transient=False)])
    with pytest.raises(RuntimeError_, match="no such image"):
        await launcher(runtime, retries=4)._start_retrying(request())
    assert runtime.tries == 1
