"""The yoton event system: signals, timers and one event queue.

Signals post one event per bound handler to a process-wide queue; handlers run
when some thread processes events (:func:`process_events`, :func:`start_event_loop`,
or another GUI loop via :func:`embed_event_loop`). Nothing polls: waiting for events
blocks on a condition, and all timers share one thread that sleeps until the
earliest deadline. An idle process therefore uses no CPU.

Compatibility notes (yoton 2.2): a Timer emits itself *without* arguments, so its
handlers are called with no arguments; bound methods are held weakly, plain
callables strongly; binding a handler twice binds it once. The embed callback is
called for the first event posted after each :func:`process_events` call (2.2 does
the same), not once per event, so a busy channel cannot flood the host loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .threads import start_thread

__all__ = [
    "Signal",
    "Timer",
    "call_later",
    "process_events",
    "start_event_loop",
    "stop_event_loop",
    "embed_event_loop",
    "post_event",
]

logger = logging.getLogger(__name__)

_Event = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _run_event(func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Call one event's callable; log (never raise) an Exception from it."""
    try:
        func(*args, **kwargs)
    except Exception:
        logger.exception("Exception in yoton event handler %r", func)


# --- handlers --------------------------------------------------------------------


class _Handler:
    """A callable bound to a signal: bound methods weakly, anything else strongly."""

    __slots__ = ("_func", "_ref")

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise TypeError(f"a signal handler must be callable, not {func!r}")
        self._func: Callable[..., Any] | None = None
        self._ref: weakref.WeakMethod | None = None
        if isinstance(func, types.MethodType):
            try:
                self._ref = weakref.WeakMethod(func)
            except TypeError:  # the instance does not support weak references
                self._func = func
        else:
            self._func = func

    def get(self) -> Callable[..., Any] | None:
        """The handler, or None if its object was garbage collected."""
        return self._func if self._ref is None else self._ref()

    @property
    def dead(self) -> bool:
        return self._ref is not None and self._ref() is None

    def matches(self, func: Callable[..., Any]) -> bool:
        current = self.get()
        return current is not None and current == func

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        func = self.get()
        if func is not None:
            func(*args, **kwargs)

    def __repr__(self) -> str:
        func = self.get()
        return repr(func) if func is not None else "<dead handler>"


# --- the event queue -------------------------------------------------------------


class _EventQueue:
    """The process-wide event queue with blocking waits and the embed hook."""

    def __init__(self) -> None:
        self._reinit()

    def _reinit(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Event] = deque()
        self._in_loop = False
        self._stop = False
        self._embed: Callable[[], Any] | None = None
        self._embed_armed = False

    def _after_fork(self) -> None:
        # Another thread may have held the lock when we forked: make new ones.
        queue, embed = self._queue, self._embed
        self._reinit()
        self._queue, self._embed = queue, embed
        self._embed_armed = embed is not None

    def _take_embed(self) -> Callable[[], Any] | None:
        """Under the lock: the embed callback if it should be called now."""
        if self._embed_armed:
            self._embed_armed = False
            return self._embed
        return None

    @staticmethod
    def _call_embed(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            logger.exception("Exception in yoton embed_event_loop callback")

    def post(self, event: _Event, front: bool = False) -> None:
        with self._cond:
            if front:
                self._queue.appendleft(event)
            else:
                self._queue.append(event)
            self._cond.notify()
            callback = self._take_embed()
        if callback is not None:
            self._call_embed(callback)

    def post_many(self, events: Iterable[_Event]) -> None:
        with self._cond:
            self._queue.extend(events)
            self._cond.notify()
            callback = self._take_embed()
        if callback is not None:
            self._call_embed(callback)

    def embed(self, callback: Callable[[], Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"embed callback must be callable or None: {callback!r}")
        with self._cond:
            self._embed = callback
            self._embed_armed = callback is not None
            if callback is not None and self._queue:
                callback = self._take_embed()  # events are waiting already
            else:
                callback = None
        if callback is not None:
            self._call_embed(callback)

    def process(self, block: bool | float | None) -> None:
        if block is True:
            timeout: float | None = None
            wait = True
        else:
            timeout = float(block or 0)
            wait = timeout > 0
        with self._cond:
            self._embed_armed = self._embed is not None
            if wait and not self._queue:
                self._cond.wait_for(lambda: self._queue or self._stop, timeout)
            batch = self._queue
            if not batch:
                return
            self._queue = deque()
        # Events posted from here on go to the new queue: the next call runs them.
        try:
            while batch:
                func, args, kwargs = batch.popleft()
                _run_event(func, args, kwargs)
        finally:
            if batch:  # interrupted (KeyboardInterrupt, SystemExit): keep the rest
                with self._cond:
                    batch.extend(self._queue)
                    self._queue = batch

    def run_loop(self) -> None:
        with self._cond:
            if self._in_loop:
                logger.debug("start_event_loop: already in an event loop")
                return
            self._in_loop = True
            self._stop = False
        try:
            while True:
                with self._cond:
                    if self._stop:
                        break
                self.process(True)
        finally:
            with self._cond:
                self._in_loop = False
                self._stop = False

    def stop_loop(self) -> None:
        with self._cond:
            if self._in_loop:
                self._stop = True
                self._cond.notify_all()


_queue = _EventQueue()


# --- the timer thread ------------------------------------------------------------


class _Entry:
    """One scheduled item: a timer firing or a delayed call."""

    __slots__ = ("cancelled", "timer", "event")

    def __init__(self, timer: Timer | None, event: _Event | None) -> None:
        self.cancelled = False
        self.timer = timer
        self.event = event


class _Scheduler:
    """One daemon thread for all timers, sleeping until the earliest deadline."""

    _REBUILD_MIN = 64  # rebuild the heap when this many (and half) are cancelled

    def __init__(self) -> None:
        self._reinit()

    def _reinit(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def _after_fork(self) -> None:
        # The thread did not survive the fork; it restarts on the next schedule.
        heap, cancelled = self._heap, self._cancelled
        self._reinit()
        self._heap, self._cancelled = heap, cancelled

    def _push(self, deadline: float, entry: _Entry) -> None:
        """Under the lock: schedule entry, waking the thread if it is now first."""
        heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        if self._thread is None:
            self._thread = start_thread(self._run, name="yoton-timers")
        elif self._heap[0][2] is entry:
            self._cond.notify()

    def _cancel(self, entry: _Entry) -> None:
        """Under the lock: cancel an entry that is still in the heap."""
        entry.cancelled = True
        self._cancelled += 1
        if self._cancelled > self._REBUILD_MIN and 2 * self._cancelled > len(
            self._heap
        ):
            self._heap = [item for item in self._heap if not item[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def call_at(self, deadline: float, event: _Event) -> None:
        with self._cond:
            self._push(deadline, _Entry(None, event))

    def start_timer(self, timer: Timer) -> None:
        with self._cond:
            if timer._entry is not None:
                self._cancel(timer._entry)
            entry = _Entry(timer, None)
            timer._entry = entry
            self._push(time.monotonic() + timer._interval, entry)

    def stop_timer(self, timer: Timer) -> None:
        with self._cond:
            if timer._entry is not None:
                self._cancel(timer._entry)
                timer._entry = None

    def _run(self) -> None:
        cond = self._cond
        while True:
            due: list[_Entry] = []
            with cond:
                heap = self._heap  # may have been rebuilt
                while heap and heap[0][2].cancelled:
                    heapq.heappop(heap)
                    self._cancelled -= 1
                if not heap:
                    cond.wait()
                    continue
                now = time.monotonic()
                delay = heap[0][0] - now
                if delay > 0:
                    cond.wait(delay)
                    continue
                while heap and heap[0][0] <= now:
                    deadline, _, entry = heapq.heappop(heap)
                    if entry.cancelled:
                        self._cancelled -= 1
                        continue
                    timer = entry.timer
                    if timer is not None:
                        if timer._oneshot:
                            timer._entry = None
                        else:
                            # Keep the rhythm; skip beats missed while busy.
                            nxt = deadline + timer._interval
                            if nxt <= now:
                                nxt = now + timer._interval
                            new = _Entry(timer, None)
                            timer._entry = new
                            self._push(nxt, new)
                    due.append(entry)
            for entry in due:
                if entry.timer is not None:
                    entry.timer.emit()
                elif entry.event is not None:
                    _queue.post(entry.event)


_scheduler = _Scheduler()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_queue._after_fork)
    os.register_at_fork(after_in_child=_scheduler._after_fork)


# --- public API ------------------------------------------------------------------


class Signal:
    """An event source: bind handlers to it and emit it to have them called.

    ``emit`` queues one event per handler (safe from any thread; handlers run when
    events are processed); ``emit_now`` calls them at once in the calling thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated, so emit() can read it without the lock.
        self._handlers: tuple[_Handler, ...] = ()

    @property
    def type(self) -> type:
        """The type (``__class__``) of this signal."""
        return self.__class__

    def bind(self, func: Callable[..., Any]) -> None:
        """Add a handler; binding the same handler again has no effect.

        Bound methods are held by weak reference: the binding ends when their
        object is garbage collected.
        """
        handler = _Handler(func)
        with self._lock:
            handlers = [h for h in self._handlers if not h.dead]
            if any(h.matches(func) for h in handlers):
                logger.debug("handler %r is already bound to %r", func, self)
            else:
                handlers.append(handler)
            self._handlers = tuple(handlers)

    def unbind(self, func: Callable[..., Any] | None = None) -> None:
        """Remove a handler, or all handlers if func is None."""
        with self._lock:
            if func is None:
                self._handlers = ()
            else:
                self._handlers = tuple(
                    h for h in self._handlers if not h.dead and not h.matches(func)
                )

    def _prune(self) -> None:
        with self._lock:
            self._handlers = tuple(h for h in self._handlers if not h.dead)

    def emit(self, *args: Any, **kwargs: Any) -> None:
        """Queue a call of every handler with these arguments (thread-safe)."""
        handlers = self._handlers
        if not handlers:
            return
        events = [(h, args, kwargs) for h in handlers if not h.dead]
        if len(events) != len(handlers):
            self._prune()
        if events:
            _queue.post_many(events)

    def emit_now(self, *args: Any, **kwargs: Any) -> None:
        """Call every handler now, in this thread; exceptions are logged."""
        pruned = False
        for handler in self._handlers:
            func = handler.get()
            if func is None:
                if not pruned:
                    self._prune()
                    pruned = True
                continue
            _run_event(func, args, kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self._handlers)} handler(s)>"


class Timer(Signal):
    """A signal that emits itself after ``interval`` seconds, once or repeatedly.

    Like yoton 2.2, handlers are called without arguments.
    """

    def __init__(self, interval: float = 1.0, oneshot: bool = True) -> None:
        super().__init__()
        self._entry: _Entry | None = None
        self.interval = interval
        self.oneshot = oneshot

    @property
    def interval(self) -> float:
        """The interval in seconds (> 0); a change applies from the next start."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"interval must be a number, not {value!r}")
        if not value > 0:
            raise ValueError(f"interval must be larger than 0, not {value!r}")
        self._interval = float(value)

    @property
    def oneshot(self) -> bool:
        """Whether the timer fires once (True) or repeatedly (False)."""
        return self._oneshot

    @oneshot.setter
    def oneshot(self, value: bool) -> None:
        self._oneshot = bool(value)

    @property
    def running(self) -> bool:
        """Whether the timer is started and will fire."""
        return self._entry is not None

    def start(self, interval: float | None = None, oneshot: bool | None = None) -> None:
        """(Re)start the timer, optionally with a new interval or oneshot mode."""
        if interval is not None:
            self.interval = interval
        if oneshot is not None:
            self.oneshot = oneshot
        _scheduler.start_timer(self)

    def stop(self) -> None:
        """Stop the timer; it will not fire until started again."""
        _scheduler.stop_timer(self)


def post_event(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Append a call of func to the event queue (thread-safe; internal API)."""
    if not callable(func):
        raise TypeError(f"event callable expected, not {func!r}")
    _queue.post((func, args, kwargs))


def call_later(
    func: Callable[..., Any], timeout: float = 0.0, *args: Any, **kwargs: Any
) -> None:
    """Call func(*args, **kwargs) from the event loop after timeout seconds.

    Zero queues it now; a negative timeout puts it at the front of the queue.
    """
    if not callable(func):
        raise TypeError(f"call_later needs a callable, not {func!r}")
    event = (func, args, kwargs)
    if timeout > 0:
        _scheduler.call_at(time.monotonic() + timeout, event)
    else:
        _queue.post(event, front=timeout < 0)


def process_events(block: bool | float = False) -> None:
    """Run all events queued so far.

    block: False returns at once if the queue is empty, True waits for an event,
    a number waits at most that many seconds.
    """
    _queue.process(block)


def start_event_loop() -> None:
    """Process events until :func:`stop_event_loop` is called (no-op if running)."""
    _queue.run_loop()


def stop_event_loop() -> None:
    """Make a running event loop return; thread-safe, takes effect at once."""
    _queue.stop_loop()


def embed_event_loop(callback: Callable[[], Any] | None) -> None:
    """Have callback called (from any thread) when an event is posted.

    The host loop should then call :func:`process_events`. The callback is called
    once for the first event after each process_events call. None disables it.
    """
    _queue.embed(callback)


def loop_active() -> bool:
    """Whether a yoton event loop runs (start_event_loop) or is embedded."""
    return _queue._in_loop or _queue._embed is not None
