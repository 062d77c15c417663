"""Admission and the worker: one generation at a time, in one thread, in arrival order.

Up to `queue_size` admitted requests wait behind the running one; more are refused at once (Busy, which
the server answers with HTTP 429). Each admitted request is a Job whose events cross from the worker
thread to the event loop through an asyncio queue. A job whose client goes away is cancelled: skipped if
it is still waiting, stopped before its next token if it is running, and its slot is freed at once. The
event loop never waits on a generation, so /health is answered while one runs (or while a slow cloud
trickles its answer into the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

_END = object()  # the worker has finished a job (answered, failed or cancelled)


class Busy(Exception):
    """The queue is full."""


class Worker:
    """Admits requests (one running + `queue_size` waiting) and runs them in one thread."""

    def __init__(self, queue_size: int, poll_s: float = 0.1):
        self.limit, self.poll_s, self.active = queue_size + 1, poll_s, 0
        self.counts = {"answered": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="edgecpm-gen")

    def submit(self, make: Callable[[], Iterator], is_gone: Callable[[], Awaitable[bool]] | None = None) -> Job:
        """Admit and queue `make` (called in the worker thread; returns an iterator of events), or raise
        Busy. `is_gone` (e.g. Request.is_disconnected) is polled until the job ends: true cancels it."""
        if self.active >= self.limit:
            self.counts["rejected"] += 1
            raise Busy
        self.active += 1
        return Job(self, make, is_gone)

    def stats(self) -> dict:
        return {"busy": self.active, "queue_limit": self.limit - 1, **self.counts}

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Job:
    """One admitted request. Read its events with next(); close() when done (it frees the slot; a job
    closed before its end is cancelled)."""

    def __init__(self, worker: Worker, make: Callable[[], Iterator], is_gone):
        self.worker, self.stop = worker, threading.Event()
        self.loop, self.events = asyncio.get_running_loop(), asyncio.Queue()
        self.ended = self.failed = self.closed = False
        self.future = worker.pool.submit(self._work, make)
        self.watcher = self.loop.create_task(self._watch(is_gone)) if is_gone else None

    def _put(self, item) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def _work(self, make) -> None:
        """In the worker thread: run the generation, hand over each event, stop when asked to."""
        it = None
        try:
            if self.stop.is_set():
                return
            it = make()
            for ev in it:
                if self.stop.is_set():  # the client went away: make no more tokens
                    break
                self._put(ev)
        except Exception as e:  # noqa: BLE001 -- handed to the request, which answers it; the worker lives on
            self._put(e)
        finally:
            if it is not None and hasattr(it, "close"):
                it.close()
            self._put(_END)

    async def next(self):
        """The next event; None at the end (also after a cancel); re-raises what the generation raised."""
        if self.ended:
            return None
        item = await self.events.get()
        if item is _END:
            self.ended = True
            return None
        if isinstance(item, Exception):
            self.ended = self.failed = True
            raise item
        return item

    def cancel(self) -> None:
        """Stop the generation: a job still waiting never starts; a running one stops before its next token."""
        self.stop.set()
        if self.future.cancel():  # it had not started: nothing will put _END for it
            self.events.put_nowait(_END)

    def close(self) -> None:
        """Free the slot (once). Called when the answer is sent, or when the client is gone."""
        if self.closed:
            return
        self.closed = True
        if self.watcher is not None and self.watcher is not asyncio.current_task():
            self.watcher.cancel()
        if not self.ended:
            self.cancel()
        kind = "cancelled" if not self.ended else "failed" if self.failed else "answered"
        self.worker.counts[kind] += 1
        self.worker.active -= 1

    async def _watch(self, is_gone) -> None:
        while not self.closed and not self.ended:
            await asyncio.sleep(self.worker.poll_s)
            if not self.ended and await is_gone():
                self.close()
                return
