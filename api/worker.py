"""One engine, one thread: generations run one at a time, in arrival order, behind a bounded queue.

The engine is not thread-safe, so every job runs on a single worker thread. A job is a function
of the engine that yields events; the events cross into the event loop through an asyncio queue.
Admission is checked before anything is queued: past `depth` admitted requests the caller gets
Overloaded (429 + Retry-After). A request that is still waiting or running when its deadline
passes, or whose client went away, is stopped between two tokens.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runtime import Engine
from strata.errors import Overloaded, RequestTimeout

Job = Callable[[Engine], Iterator[Any]]
_END = object()


@dataclass(slots=True)
class Ticket:
    """One admitted request: its deadline and a flag the consumer sets when it stops listening."""

    deadline: float
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise RequestTimeout("the request ran past its time limit (request_timeout_s)")


def close_quietly(iterator: object) -> None:
    """Close a generator (releasing what its finally blocks hold); plain iterators have nothing to close."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class EngineWorker:
    """Runs jobs against one engine on one thread with at most `depth` requests admitted."""

    def __init__(self, engine: Engine, depth: int, timeout_s: float) -> None:
        self.engine, self.depth, self.timeout_s = engine, depth, timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-engine")
        self._lock = threading.Lock()
        self._admitted = 0
        self._job_s = 1.0  # moving average of a job's duration, for Retry-After
        self.stopped = 0  # jobs stopped early because their client went away

    @property
    def admitted(self) -> int:
        """Requests running or waiting (the queue depth the metrics report)."""
        return self._admitted

    def can_admit(self) -> bool:
        return self._admitted < self.depth

    def admit(self) -> Ticket:
        """Take a place in the queue, or raise Overloaded with a Retry-After estimate."""
        with self._lock:
            if not self.can_admit():
                wait = max(1, math.ceil(self._job_s * self._admitted))
                raise Overloaded(f"the server is busy: {self._admitted} requests queued (queue_depth "
                                 f"{self.depth}); retry later", retry_after=wait)
            self._admitted += 1
        return Ticket(time.monotonic() + self.timeout_s)

    async def events(self, job: Job) -> AsyncGenerator[Any, None]:
        """Admit, queue and run `job`; its events as they are produced (exceptions re-raised here)."""
        ticket = self.admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                ticket.cancelled.set()

        try:
            self._executor.submit(self._run, job, ticket, put)
        except BaseException:
            self._release(0.0)
            raise
        try:
            while True:
                remaining = ticket.deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=max(remaining, 0.001))
                except TimeoutError:
                    raise RequestTimeout(
                        "the request ran past its time limit (request_timeout_s)") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            ticket.cancelled.set()

    def _run(self, job: Job, ticket: Ticket, put: Callable[[Any], None]) -> None:
        start = time.monotonic()
        try:
            if ticket.cancelled.is_set():
                self.stopped += 1
                return
            ticket.check()
            events = job(self.engine)
            try:
                for event in events:
                    put(event)
                    if ticket.cancelled.is_set():
                        self.stopped += 1
                        return
                    ticket.check()
            finally:
                close_quietly(events)
        except BaseException as exc:  # delivered to the waiting request, never lost
            put(exc)
        finally:
            put(_END)
            self._release(time.monotonic() - start)

    def _release(self, took_s: float) -> None:
        with self._lock:
            self._admitted -= 1
            if took_s > 0:
                self._job_s = 0.8 * self._job_s + 0.2 * took_s

    def close(self) -> None:
        """Stop taking jobs and wait for the running one."""
        self._executor.shutdown(wait=True, cancel_futures=True)
