"""Kernel test helpers: kernels that always shut down, and a collector for reported errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nexus.kernel import Kernel, KernelConfig, KernelError


class Reports:
    """Collects what a kernel reports through on_error; tests await a kind of report."""

    def __init__(self) -> None:
        self.items: list[KernelError] = []
        self._changed = asyncio.Event()

    def __call__(self, error: KernelError) -> None:
        self.items.append(error)
        self._changed.set()

    def of(self, kind: type[KernelError]) -> list[KernelError]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait_for(self, kind: type[KernelError], count: int = 1, timeout: float = 10.0) -> list[KernelError]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


@pytest.fixture
def reports() -> Reports:
    return Reports()


KernelFactory = Callable[..., Kernel]


@pytest.fixture
async def make_kernel(reports: Reports) -> AsyncIterator[KernelFactory]:
    made: list[Kernel] = []

    def make(**config: Any) -> Kernel:
        linger = config.pop("linger", None)
        extra = {"linger": linger} if linger is not None else {}
        kernel = Kernel(KernelConfig(**config), on_error=reports, **extra)
        made.append(kernel)
        return kernel

    yield make
    for kernel in made:
        await kernel.shutdown(mode="drop", deadline=1.0)
