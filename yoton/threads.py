"""Background threads that never take process signals.

A signal such as SIGINT may be delivered to any thread that does not block it.
Python runs its handlers in the main thread anyway, but only a signal delivered
to the main thread interrupts what that thread waits for (``time.sleep``, a
read): if yoton's IO thread took a Ctrl-C, the main thread would sleep on. So
every thread yoton starts is born with these signals blocked.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

_SIGNAL_NAMES = (
    "SIGINT",
    "SIGTERM",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGCHLD",
    "SIGWINCH",
)
BLOCKED_SIGNALS = {
    getattr(signal, name) for name in _SIGNAL_NAMES if hasattr(signal, name)
}
_CAN_MASK = hasattr(signal, "pthread_sigmask")

try:
    # The C function: signal.pthread_sigmask wraps it and turns the previous
    # mask into Signals enums, which costs 6 us per call pair here.
    from _signal import pthread_sigmask
except ImportError:  # pragma: no cover - other interpreters and platforms
    pthread_sigmask = getattr(signal, "pthread_sigmask", None)


def start_thread(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """Start a daemon thread running ``target(*args)`` with signals blocked."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    if not _CAN_MASK:
        thread.start()
        return thread
    # The new thread inherits the mask of this one at creation.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
