"""An asyncio event loop in a background thread, for servers that tests drive synchronously."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class BackgroundLoop:
    """One named daemon thread running an event loop between :meth:`start` and :meth:`stop`.

    ``start(setup, teardown)`` runs ``setup()`` in the loop and returns once it has
    finished (raising what it raised); the loop then runs until :meth:`stop`, which runs
    ``teardown()`` there, cancels what is left and joins the thread. Thread-safe.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def start(
        self,
        setup: Callable[[], Awaitable[None]],
        teardown: Callable[[], Awaitable[None]],
        *,
        name: str,
    ) -> None:
        """Start the thread and run ``setup`` there; RuntimeError if already running."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("already running")
            self._ready.clear()
            self._stopped.clear()
            self._error = None
            thread = threading.Thread(
                target=self._run, args=(setup, teardown), name=name, daemon=True
            )
            self._thread = thread
            thread.start()
        if not self._ready.wait(self._timeout):
            self.stop()
            raise TimeoutError("the server did not start in time")
        if self._error is not None:
            error = self._error
            thread.join(self._timeout)
            with self._lock:
                self._thread = None
            raise error

    def rename(self, name: str) -> None:
        """Rename the thread (once its port is known, say)."""
        if self._thread is not None:
            self._thread.name = name

    def stop(self) -> None:
        """Run ``teardown`` in the loop and join the thread; idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:
                logger.debug("loop already closed")
        thread.join(self._timeout * 2)
        if thread.is_alive():
            logger.warning("thread %s did not stop in time", thread.name)

    def wait_stopped(self) -> None:
        """Block until the loop has stopped (Ctrl-C interrupts the wait)."""
        self._stopped.wait()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coro`` in the loop; RuntimeError when it is not running."""
        loop = self._loop
        if self._thread is None or loop is None:
            coro.close()
            raise RuntimeError("the server is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
        """Run ``coro`` in the loop and wait for its result (cancelled after ``timeout``)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _run(
        self, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]]
    ) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(setup, teardown))
        except Exception as exc:
            if self._ready.is_set():
                logger.exception("the server failed")
            else:
                self._error = exc
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()
                self._stopped.set()

    async def _main(
        self, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]]
    ) -> None:
        self._stop_requested = asyncio.Event()
        await setup()
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await teardown()
