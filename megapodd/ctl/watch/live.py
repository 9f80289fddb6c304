"""`megapodctl watch`: a frame every interval. On a terminal it refreshes in
place (rich Live on the alternate screen) until `q` or Ctrl-C, and leaves
the terminal as it found it; otherwise it prints one plain frame per
interval (or, with --json, one JSON object a line)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live

from megapodd.api.client import ApiClientError, DaemonUnreachable
from megapodd.ctl.daemon import ask
from megapodd.ctl.errors import EXIT_OK
from megapodd.ctl.reads import print_json
from megapodd.ctl.watch.model import Frame, build_frame
from megapodd.ctl.watch.render import render

EVENTS_PER_FRAME = 30  # the newest; a terminal shows as many as fit
QUIT_KEYS = frozenset(b"qQ\x03")  # \x03: Ctrl-C where the terminal sends it as a key

T = TypeVar("T")


async def fetch(args: argparse.Namespace, layout: list[Any]) -> Frame:
    """One frame: five reads, one after the other (a watch must not take the
    connections another technician's megapodctl needs)."""
    status = await ask(args, "status")
    interlocks = await ask(args, "interlocks")
    loops = await ask(args, "loops")
    events = await ask(args, "events", {"count": EVENTS_PER_FRAME})
    try:
        power = await ask(args, "power")
    except DaemonUnreachable:
        raise
    except ApiClientError:
        power = None  # refused: this pod has no [power]
    return build_frame(status, layout, interlocks, loops, events, time.time(), power)


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (and `work` cancelled) once stop is set."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _keys(stop: asyncio.Event) -> Iterator[None]:
    """Keys one at a time, unechoed (`q` quits); the terminal's own settings
    come back on the way out, whatever ends the watch."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        data = os.read(fd, 64)
        if not data:  # the terminal went away
            loop.remove_reader(fd)
            stop.set()
        elif QUIT_KEYS.intersection(data):
            stop.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Frames:
    """Frames for as long as the watch runs. The first failure to reach
    megapodd ends the watch (exit 3); later ones keep the last frame on
    screen, saying megapodd is not answering, and try again next interval."""

    def __init__(self, args: argparse.Namespace, stop: asyncio.Event) -> None:
        self._args = args
        self._stop = stop
        self._layout: list[Any] | None = None
        self._last: Frame | None = None

    async def next(self) -> Frame | None:
        try:
            if self._layout is None:
                self._layout = await _unless_stopped(ask(self._args, "devices"), self._stop)
                if self._layout is None:
                    return None
            frame = await _unless_stopped(fetch(self._args, self._layout), self._stop)
        except DaemonUnreachable as exc:
            if self._last is None:
                raise
            frame = dataclasses.replace(self._last, problem=str(exc), at_ts=time.time())
        if frame is not None:
            self._last = frame
        return frame


async def watch(args: argparse.Namespace, console: Console) -> int:
    stop = asyncio.Event()
    frames = _Frames(args, stop)
    shown = 0
    with _stop_on_signals(stop), contextlib.ExitStack() as stack:
        live = None
        if console.is_terminal and not args.json:
            stack.enter_context(_keys(stop))
            live = stack.enter_context(
                Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False)
            )
        while not stop.is_set():
            frame = await frames.next()
            if frame is None:
                break
            if args.json:
                print_json(frame.as_json(), lines=True)
            elif live is not None:
                live.update(render(frame, console, console.size.height), refresh=True)
            else:
                console.print(render(frame, console))
                console.print()
                sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
    return EXIT_OK
