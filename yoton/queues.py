"""Bounded, thread-safe queues that count every item they discard."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from . import wakeups

logger = logging.getLogger("yoton")

DEFAULT_QUEUE_SIZE = 10000


class Empty(Exception):
    """Raised by :meth:`PackageQueue.pop` when no item is available in time."""


def check_queue_params(queue_params: Any) -> tuple[int, str]:
    """Validate ``(size, 'old'|'new')`` and return it normalized."""
    if queue_params is None:
        return DEFAULT_QUEUE_SIZE, "old"
    if not (isinstance(queue_params, tuple | list) and len(queue_params) == 2):
        raise ValueError("queue_params must be a tuple (size, 'old' or 'new').")
    size, mode = queue_params
    if not isinstance(size, int) or size < 1:
        raise ValueError("queue_params size must be a positive integer.")
    if not isinstance(mode, str) or mode.lower() not in ("old", "new"):
        raise ValueError("queue_params discard mode must be 'old' or 'new'.")
    return size, mode.lower()


class PackageQueue:
    """A FIFO with a maximum length; when full it discards the oldest or newest item.

    ``dropped`` counts discarded items; the first drop and every 1000th after it
    is logged, so loss is never silent.
    """

    def __init__(
        self, maxlen: int = DEFAULT_QUEUE_SIZE, discard: str = "old", name: str = ""
    ):
        self._items: deque = deque()
        # Taken directly where nothing waits: Condition's own enter and exit
        # are Python code, a cost on every push.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._maxlen = int(maxlen)
        self._discard_old = discard == "old"
        self._closed = False
        self.name = name
        self.dropped = 0
        #: With flow control, a connection that delivered to this queue waits
        #: while it is more than half full, so a consumer that keeps up on
        #: average is never overrun (see :meth:`wait_for_consumer`).
        self.flow_control = False
        self._pause_len = max(1, self._maxlen // 2)
        self._resume_len = self._maxlen // 4
        self._producers_waiting = 0
        self._consumers_waiting = 0
        self._stalled = False  # the consumer took nothing for a whole wait
        #: Whether a consumer that took items must call _consumed(): a producer
        #: waits, or the queue stalled. One flag, looked at on every pop.
        self._watched = False

    def __len__(self) -> int:
        return len(self._items)

    def _count_drop(self, n: int) -> None:
        before = self.dropped
        self.dropped += n
        if before == 0 or before // 1000 != self.dropped // 1000:
            logger.warning(
                "yoton queue %s is full (%d items): %d message(s) discarded so far",
                self.name or hex(id(self)),
                self._maxlen,
                self.dropped,
            )

    def push(self, item: Any) -> None:
        """Append an item, discarding one if the queue is full."""
        with self._lock:
            items = self._items
            if len(items) >= self._maxlen:
                if not self._discard_old:
                    self._count_drop(1)
                    return
                items.popleft()
                self._count_drop(1)
            items.append(item)
        if self._consumers_waiting:
            wakeups.wake(self._wake_consumers)

    def push_many(self, new_items: Iterable[Any]) -> None:
        """Append several items at once (one wake-up)."""
        with self._lock:
            self._items.extend(new_items)
            if len(self._items) > self._maxlen:
                self._trim()
        if self._consumers_waiting:
            wakeups.wake(self._wake_consumers)

    def _trim(self) -> int:
        """Discard (and count) what is above the maximum length, lock held;
        return how many of the newest items went."""
        items = self._items
        excess = len(items) - self._maxlen
        self._count_drop(excess)
        if self._discard_old:
            for _ in range(excess):
                items.popleft()
            return 0
        for _ in range(excess):
            items.pop()
        return excess

    def _wake_consumers(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def insert(self, item: Any) -> None:
        """Put an item back at the front (never discards)."""
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify()

    def pop(self, block: bool | float = True) -> Any:
        """Pop the oldest item; block False, True or a number of seconds.

        Raises :class:`Empty` when nothing arrives in time or the queue is closed.
        """
        try:
            item = self._items.popleft()  # atomic in CPython: no lock needed
        except IndexError:
            item = self._pop_waiting(block)
        if self._watched:
            self._consumed()
        return item

    def _pop_waiting(self, block: bool | float) -> Any:
        """The slow path of :meth:`pop`: wait (as ``block`` says) for an item."""
        items = self._items
        with self._cond:
            if items:
                return items.popleft()
            if block is False or block is None or self._closed:
                raise Empty()
            self._consumers_waiting += 1
            try:
                if block is True:
                    while not items and not self._closed:
                        self._cond.wait()
                else:
                    deadline = time.monotonic() + float(block)
                    while not items and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
            finally:
                self._consumers_waiting -= 1
            if items:
                return items.popleft()
            raise Empty()

    def pop_all(self) -> list:
        """Pop every item currently queued."""
        with self._lock:
            result = list(self._items)
            self._items.clear()
        if self._watched:
            self._consumed()
        return result

    # -- flow control -----------------------------------------------------------

    def over_high_water(self) -> bool:
        """Whether a producer should wait for the consumer before adding more."""
        return (
            self.flow_control
            and not self._stalled
            and len(self._items) > self._pause_len
        )

    def wait_for_consumer(self, patience: float) -> None:
        """Wait until the queue is down to a quarter of its size.

        Gives up when the consumer takes nothing for ``patience`` seconds: the
        queue is then marked stalled (it drops as without flow control) until
        its consumer takes an item again, so a channel nobody reads cannot
        stall a connection.
        """
        items = self._items
        with self._cond:
            self._producers_waiting += 1
            self._watched = True
            try:
                while len(items) > self._resume_len and not self._closed:
                    before = len(items)
                    if not self._cond.wait(patience) and len(items) >= before:
                        self._stalled = True
                        logger.info(
                            "yoton queue %s: its consumer took nothing for %.1f s; "
                            "not waiting for it (excess messages are discarded)",
                            self.name or hex(id(self)),
                            patience,
                        )
                        return
            finally:
                self._producers_waiting -= 1

    def _consumed(self) -> None:
        # Called after the consumer took items while a producer may wait.
        self._stalled = False
        if len(self._items) <= self._resume_len:
            with self._cond:
                self._watched = self._producers_waiting > 0
                self._cond.notify_all()

    def peek(self, index: int = 0) -> Any:
        """Return an item without removing it (IndexError when absent)."""
        return self._items[index]

    def clear(self) -> None:
        """Remove all items."""
        with self._lock:
            self._items.clear()

    def close(self) -> None:
        """Wake every blocked pop; later pops on an empty queue fail at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ArrivalQueue(PackageQueue):
    """A PackageQueue whose items keep their arrival order (the context's
    recv_seq) without carrying it: items arrive in runs of consecutive
    arrivals, and each run is remembered as (index of its first item, its
    recv_seq). Indexes count appended items, so taking items costs nothing."""

    def __init__(
        self, maxlen: int = DEFAULT_QUEUE_SIZE, discard: str = "old", name: str = ""
    ):
        super().__init__(maxlen, discard, name)
        self._appended = 0  # items appended (and not discarded from the end)
        self._runs: deque = deque()

    def push_runs(self, new_items: list, runs: list) -> None:
        """Append items; ``runs`` are (position in new_items, recv_seq) of the
        first item of each run, the first at position 0."""
        with self._lock:
            items = self._items
            marks = self._runs
            base = self._appended
            for position, recv_seq in runs:
                marks.append((base + position, recv_seq))
            items.extend(new_items)
            appended = base + len(new_items)
            if len(items) > self._maxlen:
                appended -= self._trim()
                while marks and marks[-1][0] >= appended:
                    marks.pop()  # runs of discarded items
            self._appended = appended
            first = appended - len(items)  # index of the oldest item queued
            while len(marks) > 1 and marks[1][0] <= first:
                marks.popleft()
        if self._consumers_waiting:
            wakeups.wake(self._wake_consumers)

    def arrival(self, position: int) -> int:
        """Return the recv_seq of a queued item (0 the oldest, -1 the newest);
        IndexError when there is none."""
        with self._lock:
            count = len(self._items)
            if position < 0:
                position += count
            if not 0 <= position < count:
                raise IndexError(position)
            index = self._appended - count + position
            for first, recv_seq in reversed(self._runs):
                if first <= index:
                    return recv_seq + index - first
        raise IndexError(position)  # not reached: the first run covers the rest

    def count_arrived_by(self, limit: float) -> int:
        """Return how many queued items (from the oldest) arrived by recv_seq
        ``limit`` (a number, or infinity)."""
        with self._lock:
            oldest = self._appended - len(self._items)
            runs = list(self._runs)
            stops = [first for first, _ in runs[1:]] + [self._appended]
            taken = 0
            for (first, recv_seq), stop in zip(runs, stops):
                start = max(first, oldest)
                if start >= stop:
                    continue
                if recv_seq + start - first > limit:
                    break
                last = min(stop, first + (limit - recv_seq) + 1)
                taken += last - start
                if last < stop:
                    break
            return int(taken)


class _TrackedFrame(tuple):
    """A received frame that tells its window when it is gone."""

    def __del__(self) -> None:
        self.release(self.tracked_at)


#: A large message taken this soon after it arrived shows a consumer that
#: waits for them: the next one need not wait for its predecessor.
PROMPT_TAKE = 0.002


class LargeMessageWindow:
    """Lets a connection's large received messages wait for their consumer.

    Before receiving a large payload the IO thread waits (at most ``timeout``
    seconds, so a channel nobody reads cannot stall the connection) until every
    large message it received earlier has been taken by its consumer, i.e. its
    frame, which its queue (or Package) holds, is gone. A consumer that
    keeps up then never has two large messages queued at once.

    One exception: if the previous message was taken promptly (within
    ``prompt`` s), its consumer is waiting for them, and the one pending now
    is being taken; receiving goes on at once instead of waiting for that
    thread (which may hold the GIL while it frees the previous payload).
    """

    def __init__(self, timeout: float = 1.0, prompt: float = PROMPT_TAKE) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending = 0
        self._timeout = timeout
        self._prompt_take = prompt
        self._prompt = False  # whether the last message was taken promptly

    def track(self, frame: tuple) -> tuple:
        """Return a copy of a received frame that is counted until it is gone."""
        tracked = _TrackedFrame(frame)
        tracked.release = self._release
        tracked.tracked_at = time.monotonic()
        with self._cond:
            self._pending += 1
        return tracked

    def _release(self, tracked_at: float) -> None:
        prompt = time.monotonic() - tracked_at <= self._prompt_take
        with self._cond:
            self._pending -= 1
            self._prompt = prompt
            self._cond.notify_all()

    def wait(self) -> None:
        """Wait until no tracked package is left (or the timeout passes)."""
        with self._cond:
            if self._pending == 1 and self._prompt:
                return
            if self._pending:
                self._cond.wait_for(lambda: not self._pending, self._timeout)
