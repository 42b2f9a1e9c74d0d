"""The pipeline's own thread, and waiting for it without missing a stop request.

    worker = Worker()
    pipeline = wait_for(worker.submit(make_pipeline), stop, clock=clock)
    outcome = wait_for(worker.submit(pipeline.run_file, path), stop, clock=clock, on_tick=beat)

A stop request is honoured within SHUTDOWN_GRACE_S even in the middle of a request: `wait_for`
then raises Abandoned, which is safe because the work is in the ledger before it is sent.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from connector.clock import SYSTEM_CLOCK, Clock

SHUTDOWN_GRACE_S = 6.0  # the current request may finish within this; the ledger covers the rest
WAKE_SLICE_S = 0.25  # how often a wait looks at the stop event


class Abandoned(Exception):
    """Stop was asked while the pipeline was busy and the grace period ran out."""


class Worker:
    """One daemon thread that makes the pipeline and runs every call on it.

    The ledger's SQLite connection belongs to the thread that opened it, so the pipeline is
    built and used on this one thread. Being a daemon thread, a request still in flight when
    the grace period ends does not hold the process open; its work is already in the ledger.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[..., Any], tuple, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="pipeline", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((fn, args, future))
        return future

    def shutdown(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, future = job
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                future.set_exception(exc)


def wait_for(future: Future, stop: threading.Event, on_stop: Callable[[], None] | None = None,
             on_tick: Callable[[], None] | None = None, *, clock: Clock = SYSTEM_CLOCK) -> Any:
    """The future's result; raises Abandoned when `stop` is set and it does not finish within
    SHUTDOWN_GRACE_S of being noticed (at most WAKE_SLICE_S after it was set). `on_tick` runs
    every WAKE_SLICE_S while waiting (the health heartbeat of a long file)."""
    while True:
        try:
            return clock.result(future, WAKE_SLICE_S)
        except FuturesTimeout:
            if on_tick is not None and not stop.is_set():
                on_tick()
            if stop.is_set():
                if on_stop is not None:
                    on_stop()
                try:
                    return clock.result(future, SHUTDOWN_GRACE_S)
                except FuturesTimeout:
                    raise Abandoned() from None
