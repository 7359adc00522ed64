"""B6b NATS remote: N messages to an agent in "another process" (another kernel with its
own NATS connection), W in flight at a time, time until all N were handled there.

kernel: `here.send(m)` to an agent hosted by `there`: published on nexus.agent.<id>.inbox
        with a reply subject, delivered by `there` into the agent's mailbox, acknowledged
        (or answered with the error the sender raises).
raw:    the same semantics with nothing but nats-py: `nc.request(subject, bytes)` to a
        subscriber on the other connection that counts and responds with an empty body.
Also reported (information, not a target): raw one-way publish throughput, which gives
no delivery errors at all.
Uses NEXUS_BENCH_NATS_URL if set, else starts its own nats-server on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats

from bench.kernel.common import Countdown, CountingAgent, med, now, settle
from nexus.kernel import Kernel, KernelConfig, Message, MessageKind
from nexus.kernel.message import encode_message

WINDOW = 100


def _nats_binary() -> str:
    for candidate in (shutil.which("nats-server"), str(Path.home() / ".cache/nexus/bin/nats-server")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("nats-server not found (scripts/install-tools.sh installs it)")


@contextlib.asynccontextmanager
async def nats_server() -> AsyncIterator[str]:
    if url := os.environ.get("NEXUS_BENCH_NATS_URL"):
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [_nats_binary(), "-a", "127.0.0.1", "-p", str(port), "-sd", data],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                    break
                await asyncio.sleep(0.02)
            yield f"nats://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(5)


async def _windowed(n: int, one: Any) -> float:
    sem = asyncio.Semaphore(WINDOW)

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    t0 = now()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return t0


async def run_kernel(url: str, n: int) -> float:
    ncs = [await nats.connect(url) for _ in range(2)]
    here, there = Kernel(), Kernel(KernelConfig(mailbox_capacity=4096))
    await here.connect_nats(ncs[0])
    await there.connect_nats(ncs[1])
    done = Countdown(n)
    there.spawn(CountingAgent("far", done))
    await there.remote.ready()
    messages = [Message(from_="bench", to="far", kind=MessageKind.EVENT, payload=i) for i in range(n)]
    await settle()

    async def one(i: int) -> None:
        await here.send(messages[i])

    t0 = await _windowed(n, one)
    await done.fut
    rate = n / (now() - t0)
    await here.shutdown()
    await there.shutdown()
    for nc in ncs:
        await nc.close()
    return rate


async def run_raw(url: str, n: int, one_way: bool = False) -> float:
    ncs = [await nats.connect(url) for _ in range(2)]
    done = Countdown(n)

    async def on_msg(msg: Any) -> None:
        done.left -= 1
        if done.left == 0:
            done.fut.set_result(None)
        if msg.reply:
            await msg.respond(b"")

    await ncs[1].subscribe("raw.far.inbox", cb=on_msg)
    await ncs[1].flush()
    payloads = [encode_message(Message(from_="bench", to="far", kind=MessageKind.EVENT, payload=i)) for i in range(n)]
    await settle()
    nc = ncs[0]
    if one_way:
        t0 = now()
        for p in payloads:
            await nc.publish("raw.far.inbox", p)
        await nc.flush()
    else:

        async def one(i: int) -> None:
            await nc.request("raw.far.inbox", payloads[i], timeout=10)

        t0 = await _windowed(n, one)
    await done.fut
    rate = n / (now() - t0)
    for c in ncs:
        await c.close()
    return rate


async def run(quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 30_000
    trials = 2 if quick else 5
    async with nats_server() as url:
        raws, kernels, ratios, one_way = [], [], [], []
        for i in range(trials):
            res = {}
            for side in ("raw", "kernel") if i % 2 == 0 else ("kernel", "raw"):
                await settle()
                res[side] = await (run_raw(url, n) if side == "raw" else run_kernel(url, n))
            raws.append(res["raw"])
            kernels.append(res["kernel"])
            ratios.append(res["kernel"] / res["raw"])
            one_way.append(await run_raw(url, n, one_way=True))
    return {
        "messages": n,
        "window": WINDOW,
        "trials": trials,
        "unit": "msg/s",
        "raw_request_reply": round(med(raws)),
        "kernel": round(med(kernels)),
        "ratio": round(med(ratios), 3),
        "raw_one_way_publish_no_errors": round(med(one_way)),
    }
