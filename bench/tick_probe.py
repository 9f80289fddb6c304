"""An idle 100 ms tick in a process of its own: how late the machine itself
wakes a sleeping asyncio loop, with nothing else on that loop.

Run beside the daemon during a measurement, it tells the lateness the daemon's
own work causes from what the operating system's scheduling (other processes
on the same cores) adds. Prints one JSON line: p50_ms, p99_ms, max_ms, samples.

Usage: python -m bench.tick_probe SECONDS [TICK_S]
"""

from __future__ import annotations

import asyncio
import json
import sys

from megapodd.control.tick import Window


async def probe(seconds: float, tick_s: float) -> dict[str, float | int]:
    loop = asyncio.get_running_loop()
    window = Window(size=int(seconds / tick_s) + 1)
    due_s = loop.time()
    end_s = due_s + seconds
    while due_s < end_s:  # the control tick's schedule, without its duties
        window.add(max(0.0, loop.time() - due_s))
        due_s = max(due_s + tick_s, loop.time())
        await asyncio.sleep(due_s - loop.time())
    return window.summary()


def main() -> None:
    seconds = float(sys.argv[1])
    tick_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    print(json.dumps(asyncio.run(probe(seconds, tick_s))), flush=True)


if __name__ == "__main__":
    main()
