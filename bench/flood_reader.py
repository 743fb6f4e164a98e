"""Background load: attach one client to each of N `yes` sessions and read everything.

Runs in its own process so the load does not share an event loop with the latency probe.
Usage: flood_reader.py KIND PORT COUNT PREFIX. Prints "ready" once every session has sent
output, then reads until its stdin closes and prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
from clients import TermClient, open_client


async def drain(client: TermClient) -> None:
    while await client.read() is not None:
        pass


async def main() -> None:
    kind, port, count, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stdin_closed.set_result(None)

    watcher = loop.create_task(watch_stdin())
    async with aiohttp.ClientSession() as http:
        clients = [await open_client(http, kind, port, f"{prefix}{i}") for i in range(count)]
        first = [await c.read() for c in clients]
        if any(chunk is None for chunk in first):
            print(json.dumps({"error": "a flood session closed before sending output"}), flush=True)
            return
        t0 = time.perf_counter()
        start_bytes = sum(c.received for c in clients)
        print("ready", flush=True)
        drains = [loop.create_task(drain(c)) for c in clients]
        await stdin_closed
        seconds = time.perf_counter() - t0
        total = sum(c.received for c in clients) - start_bytes
        closed_early = sum(1 for d in drains if d.done())
        for c in clients:
            await c.ws.close()
        await asyncio.gather(*drains, return_exceptions=True)
    watcher.cancel()
    print(
        json.dumps({"bytes": total, "seconds": seconds, "closed_early": closed_early}), flush=True
    )


if __name__ == "__main__":
    asyncio.run(main())
