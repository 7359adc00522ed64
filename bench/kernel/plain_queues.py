#!/usr/bin/env python3
import asyncio
import time

NUM_AGENTS = 1000
NUM_MESSAGES = 20000
MAILBOX = 1024


class Agent:
    def __init__(self):
        self.q = asyncio.Queue(maxsize=MAILBOX)

    async def run(self):
        while True:
            try:
                await self.q.get()
                # minimal work
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                break


async def main():
    agents = [Agent() for _ in range(NUM_AGENTS)]
    tasks = [asyncio.create_task(a.run()) for a in agents]
    # warmup
    for i in range(200):
        await agents[i % NUM_AGENTS].q.put(i)
    t0 = time.perf_counter()
    for i in range(NUM_MESSAGES):
        await agents[i % NUM_AGENTS].q.put(i)
    t1 = time.perf_counter()
    dt = t1 - t0
    print(f"python_asyncio: {NUM_MESSAGES / dt:.0f} msg/s, {dt * 1000:.1f} ms total")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
