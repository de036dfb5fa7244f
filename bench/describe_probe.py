"""After a line on stdin, sends `describe` every 20 ms until the next line; prints each round trip
in seconds. (Started ahead of time, so it keeps the CPU priority the load generator gives up.)"""

from __future__ import annotations

import asyncio
import sys
import time

from common import run  # this folder is the script's own
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    stop = asyncio.ensure_future(reader.readline())
    times = []
    while not stop.done():
        began = time.perf_counter()
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            await client.read_event()
        times.append(time.perf_counter() - began)
        await asyncio.wait({stop}, timeout=0.02)
    print("\n".join(f"{t:.6f}" for t in times))


if __name__ == "__main__":
    run(main(int(sys.argv[1])))
