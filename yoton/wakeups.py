"""Wake-ups that an IO thread defers until it is about to block.

When the receiving thread completes a future or queues a request, the thread
it wakes needs the GIL, which the receiving thread still holds while it
finishes routing. Waking the other thread just before the receiving thread
blocks (in its receive) lets the woken thread run at once instead of queueing
for the GIL: one context switch less per hand-off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Local(threading.local):
    pending: list[Callable[[], None]] | None = None  # a miss costs an exception


_local = _Local()


def defer_in_this_thread() -> list[Callable[[], None]]:
    """From now on, :func:`wake` in this thread only records; return the record."""
    pending: list[Callable[[], None]] = []
    _local.pending = pending
    return pending


def wake(release: Callable[[], None]) -> None:
    """Call ``release`` now, or when this thread runs its deferred wake-ups."""
    pending = _local.pending
    if pending is None:
        release()
    else:
        pending.append(release)


def run_deferred(pending: list[Callable[[], None]]) -> None:
    """Run and forget the recorded wake-ups (before the thread blocks)."""
    while pending:
        calls = pending[:]
        pending.clear()
        for release in calls:
            release()
