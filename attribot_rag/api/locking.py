"""A first-come, first-served lock: callers sharing one model are served in arrival order.

``threading.Lock`` makes no such promise: a thread that releases it and asks again at once
usually gets it back before the waiters wake, so one busy caller can starve the others."""

from __future__ import annotations

import threading


class FifoLock:
    """A ticket lock: each ``acquire`` takes the next ticket and waits until it is served. A
    waiter interrupted (``KeyboardInterrupt``) gives its ticket up, so no one waits on it."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    def acquire(self) -> None:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                self._condition.wait_for(lambda: self._serving == ticket)
            except BaseException:
                if self._serving == ticket:
                    self._advance()
                else:
                    self._abandoned.add(ticket)
                raise

    def release(self) -> None:
        with self._condition:
            self._advance()

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.remove(self._serving)
            self._serving += 1
        self._condition.notify_all()

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
