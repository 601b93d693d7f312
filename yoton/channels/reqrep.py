"""Request/reply as remote procedure calls: ReqChannel, RepChannel and Future.

Wire-compatible with yoton 2.2. A request is negotiated: the requester
broadcasts ``req?``; a free replier answers ``req!``; the first to answer gets
the encoded call and the requester broadcasts ``req-`` so the others forget it.
Fast path (our extension): a requester that knows an idle replier sends the
call to it directly, one round trip; if that replier is busy it answers
``req~`` and the request falls back to negotiation. Control messages travel
with ``dest_seq = request_id + 2**63``; calls and replies with ``request_id``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import types
from collections import deque
from typing import Any

from .. import events, wakeups, wire
from ..errors import (
    CancelledError,
    EncodeError,
    RemoteError,
    ReplierLostError,
    TimeoutError,
)
from ..message_types import (
    OBJECT,
    decode_object,
    decode_request,
    encode_object,
    encode_request,
)
from ..queues import Empty
from ..threads import start_thread
from ..wire import F_DATA, F_DEST_ID, F_DEST_SEQ, F_HEAD, split_head
from .base import BaseChannel

logger = logging.getLogger("yoton")

REQREP_SEQ_REF = 2**63
ERROR_OBJECT = "yoton_ERROR_HANDLING_REQUEST"
_TRACEBACK_MARK = "\n--- remote traceback ---\n"
_ASK = b"req?"
_ACK = b"req!"
_FORGET = b"req-"
_BUSY = b"req~"
#: Unanswered negotiations are repeated this often (late repliers hear them).
RESEND_INTERVAL = 0.5
#: A replier forgets a request it acknowledged but never received after this.
ACK_EXPIRY = 10.0
#: A thread waiting for a reply (or a request) reads the connection itself
#: for at most this long, then waits for the receiving thread as usual.
_BORROW_MAX = 0.1
_get_ident = threading.get_ident
# Not imported by name: CPython 3.11 calls a method of an imported name the
# slow way (no LOAD_METHOD), and this one is called for every reply and call.
_known_heads = wire.known_heads
_BAD_REQUEST = "A request carries (name, args tuple, kwargs dict)."

_PENDING, _RUNNING, _CANCELLED, _ERROR, _DONE = range(5)


class Future:
    """The future result of a request (PEP 3148 semantics, plus ``await``).

    Done-callbacks run in the yoton event loop when one runs (or is
    embedded), else in the thread that completes the future; they must not block.
    """

    __slots__ = (
        "_channel",
        "_request_id",
        "_cond",
        "_gate",
        "_status",
        "_result",
        "_callbacks",
        "_waiters",
        "_replier",
        "_request_data",
        "_direct",
        "_start_time",
        "_next_ask",
        "_auto_cancel",
        "__weakref__",
    )

    def __init__(
        self,
        req_channel: ReqChannel | _Requester | None = None,
        request_id: int = 0,
        timeout: float | None = 10.0,
    ) -> None:
        if type(req_channel) is not _Requester and isinstance(req_channel, ReqChannel):
            req_channel = req_channel._core
        self._channel = req_channel
        self._request_id = request_id
        # Guards the status, gate and callbacks: a requester's futures share
        # its lock, so it finishes one under the lock its bookkeeping needs.
        self._cond = threading.Lock() if req_channel is None else req_channel._lock
        # Made (and held) by the first thread that must block until the future
        # is done, released when it is done (cheaper than a Condition: a
        # single C-level lock hand-off wakes the waiting thread). A caller
        # that reads its reply itself (see _wait) never needs one.
        self._gate: threading.Lock | None = None
        self._status = _PENDING
        self._result: Any = None
        self._callbacks: list | None = None  # made by the first one added
        self._waiters: list | None = None  # internal callbacks (asyncio), direct
        self._replier = 0
        self._request_data = b""
        self._direct = False
        self._start_time = time.monotonic()
        self._next_ask = 0.0
        self._auto_cancel = float("inf") if timeout is None else float(timeout)
        if self._auto_cancel <= 0:
            raise ValueError("The auto-cancel timeout must be positive (or None).")

    # -- state queries -------------------------------------------------------------

    def cancelled(self) -> bool:
        """Whether the request was cancelled."""
        return self._status == _CANCELLED

    def running(self) -> bool:
        """Whether a replier is handling the request (it can no longer be cancelled)."""
        return self._status == _RUNNING

    def done(self) -> bool:
        """Whether the request finished, failed or was cancelled."""
        return self._status >= _CANCELLED

    def set_auto_cancel_timeout(self, timeout: float | None) -> None:
        """Cancel the request if no replier took it within ``timeout`` s."""
        if timeout is None:
            self._auto_cancel = float("inf")
        elif timeout > 0:
            self._auto_cancel = float(timeout)
        else:
            raise ValueError("The auto-cancel timeout must be positive (or None).")
        if self._channel is not None:
            self._channel._wake_timer()

    # -- waiting -------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        if self._status >= _CANCELLED:
            return
        channel = self._channel
        connection = channel and channel._context._sole_connection()
        if connection is not None:
            # Read the reply in this thread: no hand-off from the receiving one.
            started = time.monotonic()
            budget = (
                _BORROW_MAX if timeout is None or timeout > _BORROW_MAX else timeout
            )
            if connection._read_until(self.done, budget):
                if self._status >= _CANCELLED:
                    return
                if timeout is not None:
                    timeout -= time.monotonic() - started
        with self._cond:
            if self._status >= _CANCELLED:
                return
            gate = self._gate
            if gate is None:
                gate = self._gate = threading.Lock()
                gate.acquire()
        if timeout is None:
            passed = gate.acquire()
        else:
            passed = gate.acquire(timeout=max(0.0, timeout))
        if passed:
            gate.release()  # let any other waiter through as well

    def result(self, timeout: float | None = None) -> Any:
        """Return the reply, waiting up to ``timeout`` s (TimeoutError after)."""
        self._wait(timeout)
        status = self._status
        if status == _DONE:
            return self._result
        if status == _ERROR:
            raise self._result
        if status == _CANCELLED:
            raise CancelledError("The request was cancelled; there is no result.")
        raise TimeoutError(f"No reply within {timeout} s (the request goes on).")

    def result_or_cancel(self, timeout: float = 1.0) -> Any:
        """Return the reply within ``timeout`` s, else cancel and return None."""
        self._wait(timeout)
        if self._status == _DONE:
            return self._result
        self.cancel()
        return None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception of the request (None if it succeeded)."""
        self._wait(timeout)
        status = self._status
        if status == _ERROR:
            return self._result
        if status == _DONE:
            return None
        if status == _CANCELLED:
            raise CancelledError("The request was cancelled; there is no exception.")
        raise TimeoutError(f"No reply within {timeout} s (the request goes on).")

    def __await__(self):
        import asyncio  # only await needs it; importing it costs ~40 ms

        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def wake(_future: Future) -> None:
            try:
                loop.call_soon_threadsafe(_settle, waiter, self)
            except RuntimeError:
                pass  # the loop was closed: nobody awaits any more

        self._add_waiter(wake)
        return (yield from waiter.__await__())

    # -- completion ----------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the request unless a replier already handles it."""
        with self._cond:
            if self._status == _RUNNING:
                return False
            if self._status != _PENDING:
                return self._status == _CANCELLED
            self._status = _CANCELLED
            gate = self._gate
        if gate is not None:
            gate.release()
        if self._channel is not None:
            self._channel._request_cancelled(self)
        self._run_callbacks()
        return True

    def add_done_callback(self, fn) -> None:
        """Call ``fn(future)`` when the future is done (at once if it is)."""
        if not callable(fn):
            raise ValueError("add_done_callback() expects a callable.")
        with self._cond:
            if self._status < _CANCELLED:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._call(fn)

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the future running; False if it was cancelled."""
        with self._cond:
            if self._status == _CANCELLED:
                return False
            if self._status != _PENDING:
                raise RuntimeError(
                    "set_running_or_notify_cancel() on a started future."
                )
            self._status = _RUNNING
            return True

    def set_result(self, result: Any) -> None:
        """Set the result of a running future and call its callbacks."""
        self._finish(_DONE, result)

    def set_exception(self, exception: BaseException | str) -> None:
        """Set the exception of a running future and call its callbacks."""
        if isinstance(exception, str):
            exception = Exception(exception)
        if not isinstance(exception, BaseException):
            raise ValueError("set_exception() needs an exception instance.")
        self._finish(_ERROR, exception)

    def _finish(self, status: int, value: Any) -> bool:
        with self._cond:
            if self._status >= _CANCELLED:
                return False
            self._status = status
            self._result = value
            gate = self._gate
        if gate is not None:
            wakeups.wake(gate.release)
        if self._callbacks or self._waiters:
            self._run_callbacks()
        return True

    def _add_waiter(self, fn) -> None:
        with self._cond:
            if self._status < _CANCELLED:
                if self._waiters is None:
                    self._waiters = [fn]
                else:
                    self._waiters.append(fn)
                return
        fn(self)

    def _run_callbacks(self) -> None:
        if not self._callbacks and not self._waiters:
            return  # none can be added once the status is final
        with self._cond:
            callbacks, self._callbacks = self._callbacks, None
            waiters, self._waiters = self._waiters, None
        for fn in waiters or ():
            fn(self)
        for fn in callbacks or ():
            self._call(fn)

    def _call(self, fn) -> None:
        if events.loop_active():
            events.call_later(fn, 0, self)
            return
        try:
            fn(self)
        except Exception:
            logger.exception("yoton: exception in a Future done-callback")

    def __repr__(self) -> str:
        names = ["pending", "running", "cancelled", "error", "done"]
        return f"<yoton.Future #{self._request_id} {names[self._status]}>"


def _settle(waiter: Any, future: Future) -> None:
    if waiter.done():
        return
    if future._status == _DONE:
        waiter.set_result(future._result)
    elif future._status == _ERROR:
        waiter.set_exception(future._result)
    else:
        import asyncio

        waiter.set_exception(asyncio.CancelledError())


def _reply_outcome(data: bytes) -> tuple[int, Any]:
    """The (status, value) a reply's payload finishes its future with."""
    try:
        reply = decode_object(data)
    except Exception as err:
        return _ERROR, err
    if type(reply) is tuple and len(reply) == 2 and reply[0] == ERROR_OBJECT:
        return _ERROR, _remote_error(reply[1])
    return _DONE, reply


def _remote_error(text: Any) -> RemoteError:
    """Build a RemoteError from the text of an error reply (ours or 2.2's)."""
    text = str(text)
    if _TRACEBACK_MARK in text:
        head, remote_tb = text.split(_TRACEBACK_MARK, 1)
        type_name, _, message = head.partition(": ")
        return RemoteError(type_name, message, remote_tb)
    # yoton 2.2 sends "<str(exception)>\nline <n> of <file>." (no type name).
    message, _, where = text.rstrip().rpartition("\n")
    if message and where.startswith("line "):
        return RemoteError("Exception", message.strip(), where)
    return RemoteError("Exception", text.strip())


#: A channel's public instance attributes (set by BaseChannel). Named here:
#: looking in ``core.__dict__`` would make CPython build the requester a
#: dict of its own, and every attribute access on it several times slower.
_CHANNEL_ATTRIBUTES = frozenset({"message_to_bytes", "message_from_bytes"})


class ReqChannel(BaseChannel):
    """The requesting side: ``req.name(*args, **kwargs)`` returns a Future.

    Arguments and results are OBJECT values. Several RepChannels on the slot
    share the load: each request is handled by exactly one of them.
    """

    # The work is done by a _Requester, the channel registered with the
    # context: a class with __getattr__ (which every call needs) makes each
    # attribute access on its instances several times slower, and this one
    # only looks its proxies up. Private names are the requester's.

    def __init__(
        self, context, slot_base: str, default_future_timeout: float = 10.0
    ) -> None:
        core = _Requester(context, slot_base, default_future_timeout)
        object.__setattr__(self, "_core", core)

    def __getattr__(self, name: str):
        if name == "_core":
            raise AttributeError(name)  # not made yet
        core = self._core
        if name.startswith("_") or name in _CHANNEL_ATTRIBUTES:
            return getattr(core, name)
        request = core._request

        def proxy(*args: Any, **kwargs: Any) -> Future:
            return request(name, args, kwargs)

        proxy.__name__ = name
        self.__dict__[name] = proxy  # found directly next time
        return proxy

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._core, name, value)

    @property
    def closed(self) -> bool:
        """Whether the channel is closed."""
        return self._core._closed

    def close(self) -> None:
        """Close the channel; pending requests are cancelled."""
        self._core.close()


class _Requester(BaseChannel):
    """What a ReqChannel does: send calls, match their replies to futures."""

    def __init__(
        self, context, slot_base: str, default_future_timeout: float = 10.0
    ) -> None:
        super().__init__(context, slot_base, OBJECT)
        # The context's lock: a direct call is sent under it (see _request)
        # without taking a second one. It also guards the futures' state.
        self._lock = context._lock
        self._futures: dict[int, Future] = {}
        self._counter = 0
        self._default_timeout = default_future_timeout
        self._repliers: dict[int, int] = {}  # known replier id -> outstanding calls
        self._timer_cond = threading.Condition(self._lock)
        self._timer_thread: threading.Thread | None = None
        # Replies and acknowledgements, from the routing lock to _after_deposit;
        # a deque (thread-safe appends and pops) is all they need, not a queue.
        self._arrived: deque = deque()

    def _messaging_patterns(self) -> tuple[str, str]:
        return "req-rep", "rep-req"

    # -- making requests -----------------------------------------------------------

    def _request(self, name: str, args: tuple, kwargs: dict) -> Future:
        data = encode_request(name, args, kwargs)  # EncodeError at once
        if self._closed:
            self._check_open()
        with self._lock:
            self._counter = request_id = self._counter + 1
            repliers = self._repliers
            for replier, busy in repliers.items():
                if not busy:
                    # Sent first, its future made while it travels: whoever
                    # reads the reply looks for the future under this lock.
                    repliers[replier] = 1
                    full = self._context._send_frame_held(
                        self._slot_out_h, data, replier, request_id
                    )[1]
                    break
            else:
                replier = full = 0
            future = Future(self, request_id, self._default_timeout)
            future._request_data = data
            self._futures[request_id] = future
            if replier:
                future._status = _RUNNING
                future._replier = replier
                future._direct = True
        if not replier:
            self._ask(future)
        elif full:
            self._context._wait_for_backlog()  # backpressure, not under the lock
        return future

    def _ask(self, future: Future) -> None:
        future._next_ask = time.monotonic() + RESEND_INTERVAL
        self._control(_ASK, 0, future._request_id)
        self._wake_timer()

    def _control(self, what: bytes, dest_id: int, request_id: int) -> None:
        try:
            self._send(what, dest_id, request_id + REQREP_SEQ_REF, block=False)
        except OSError:
            pass

    def _request_cancelled(self, future: Future) -> None:
        with self._lock:
            self._futures.pop(future._request_id, None)
        if not self._closed:
            self._control(_FORGET, 0, future._request_id)

    # -- the timer: re-ask and auto-cancel; sleeps while nothing waits ------------

    def _wake_timer(self) -> None:
        with self._timer_cond:
            if self._timer_thread is None:
                self._timer_thread = start_thread(
                    self._timer_loop, name="yoton-req-timer"
                )
            self._timer_cond.notify()

    def _timer_loop(self) -> None:
        while not self._closed:
            with self._timer_cond:
                now = time.monotonic()
                due = []
                next_time = None
                for future in self._futures.values():
                    if future._status != _PENDING:
                        continue
                    deadline = future._start_time + future._auto_cancel
                    wake = min(deadline, future._next_ask)
                    if wake <= now:
                        due.append(future)
                    elif next_time is None or wake < next_time:
                        next_time = wake
                if not due:
                    if self._closed:  # close() may have notified before we waited
                        return
                    self._timer_cond.wait(
                        None if next_time is None else next_time - now
                    )
                    continue
            for future in due:
                if time.monotonic() >= future._start_time + future._auto_cancel:
                    future.cancel()
                elif future._status == _PENDING:
                    self._ask(future)

    # -- receiving -----------------------------------------------------------------

    # Received frames, not Packages (see BaseChannel).
    _receives_items = True

    def _recv_frames(self, frames: list, runs: list) -> None:
        self._arrived.extend(frames)  # routing lock held: handled right after

    def _after_deposit(self) -> None:
        """Handle acknowledgements and replies (called outside the routing lock)."""
        arrived = self._arrived
        take = self._take_frame
        while arrived:  # looked at first: an empty pop costs an exception
            try:
                frame = arrived.popleft()
            except IndexError:
                return  # another receiving thread took it
            take(frame)

    def _take_frame(self, frame: tuple) -> None:
        """Handle one acknowledgement or reply."""
        if frame[F_DEST_ID] != self._context._id:
            return
        if frame[F_DEST_SEQ] >= REQREP_SEQ_REF:
            self._on_control(frame)
        else:
            self._on_reply(frame)

    def _on_control(self, frame: tuple) -> None:
        request_id = frame[F_DEST_SEQ] - REQREP_SEQ_REF
        what = frame[F_DATA]
        head = frame[F_HEAD]
        replier = (_known_heads.get(head) or split_head(head))[1]
        with self._lock:
            future = self._futures.get(request_id)
            self._repliers.setdefault(replier, 0)
            if what == _ACK:
                if future is None or future._status != _PENDING:
                    # Done, cancelled or taken (e.g. a resent "req?" crossed our
                    # "req-"): release that replier at once, else it waits
                    # ACK_EXPIRY for a call that never comes.
                    take = None
                else:
                    future._status = _RUNNING
                    future._replier = replier
                    # A replier acknowledges only when idle: it owes us no reply.
                    self._repliers[replier] = 1
                    take = True
            elif (
                what == _BUSY
                and future is not None
                and future._status == _RUNNING
                and future._replier == replier
            ):
                # The replier we picked is busy: negotiate with all of them.
                future._status = _PENDING
                future._direct = False
                future._replier = 0
                self._repliers[replier] = max(1, self._repliers[replier])
                take = False
            else:
                return
        if take is None:
            self._control(_FORGET, replier, request_id)
            return
        if take:
            try:
                self._send(future._request_data, replier, request_id, block=False)
            except OSError:
                return  # closed meanwhile: close() cancels the future
            self._control(_FORGET, 0, request_id)
        else:
            self._ask(future)

    def _on_reply(self, frame: tuple) -> None:
        head = frame[F_HEAD]
        replier = (_known_heads.get(head) or split_head(head))[1]
        with self._lock:
            future = self._futures.pop(frame[F_DEST_SEQ], None)
            outstanding = self._repliers.get(replier, 0)
            self._repliers[replier] = outstanding - 1 if outstanding > 0 else 0
        if future is not None:
            future._finish(*_reply_outcome(frame[F_DATA]))

    def _take_reply(self, frame: tuple, source_id: int, seq: int, seen: dict) -> bool:
        """Take a lone reply in the main thread, no signal mask: a handler may
        raise after any call here, and the reader then takes the same frame
        again (the general way, as the future is gone once it is taken).
        False (nothing done) if it needs the general way: a thread, callback
        or waiter to wake.

        ``seen`` is the context's last source sequence numbers, updated with
        the future's removal in stores that no call separates."""
        request_id = frame[F_DEST_SEQ]
        if request_id >= REQREP_SEQ_REF:
            return False
        future = self._futures.get(request_id)
        if future is None:
            return False  # cancelled, or taken already: _on_reply does the count
        status, value = _reply_outcome(frame[F_DATA])
        with self._lock:  # the future's lock too
            if future._gate is not None or future._callbacks or future._waiters:
                return False
            outstanding = self._repliers.get(source_id, 0)  # (its replier)
            present = self._futures.get(request_id) is future
            if not present or seen.get(source_id, 0) >= seq:
                return False  # cancelled meanwhile: the general way drops it
            # The last call is behind us: these go together or not at all.
            self._repliers[source_id] = outstanding - 1 if outstanding > 0 else 0
            del self._futures[request_id]
            seen[source_id] = seq
            if future._status < _CANCELLED:
                future._result = value
                future._status = status
        return True

    def _sources_lost(self, ids: list[int]) -> None:
        lost = set(ids)
        with self._lock:
            for replier in lost:
                self._repliers.pop(replier, None)
            failed = [f for f in self._futures.values() if f._replier in lost]
            for future in failed:
                self._futures.pop(future._request_id, None)
        for future in failed:
            future._finish(
                _ERROR,
                ReplierLostError(
                    f"The replier handling request {future._request_id} disconnected "
                    "before replying."
                ),
            )

    def close(self) -> None:
        """Close the channel; pending requests are cancelled."""
        with self._lock:
            pending = [f for f in self._futures.values() if f._status == _PENDING]
        if not self._closed:
            for future in pending:  # else a replier may wait for them (ACK_EXPIRY)
                self._control(_FORGET, 0, future._request_id)
        super().close()
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
            self._timer_cond.notify_all()
        for future in futures:
            future._finish(_CANCELLED, None)


class RepChannel(BaseChannel):
    """The replying side: subclass it and define the methods requesters may call.

    Only public methods defined by the subclass (and :meth:`echo`) can be
    called remotely. Call ``set_mode('thread')`` (or 'event') to start serving.
    """

    def __init__(self, context, slot_base: str) -> None:
        super().__init__(context, slot_base, OBJECT)
        self._mode = 0
        self._lock = threading.Lock()
        # (requester id, request id) that asked, oldest first; a dict, so that
        # the requests of a flood each cost O(1) (requesters re-ask often).
        self._pre_requests: dict[tuple[int, int], None] = {}
        self._acked: tuple[int, int, float] | None = None
        self._busy = False
        self._serving = False  # a serving thread runs (or is starting)
        self._thread: threading.Thread | None = None
        self._callable_names: set[str] = set()
        # The serving thread, while it reads requests itself, and the call it
        # read (handed to it directly rather than through the queue).
        self._borrower: int | None = None
        self._handoff: tuple | None = None

    def _messaging_patterns(self) -> tuple[str, str]:
        return "rep-req", "req-rep"

    def set_mode(self, mode: int | str) -> None:
        """Serve requests: 0/'off', 1/'event' (yoton event loop), 2/'thread'."""
        if isinstance(mode, str):
            mode = mode.lower()
        if mode in (0, "off"):
            self._mode = 0
            self.received.unbind(self._process_pending)
        elif mode in (1, "event", "event-driven"):
            self._mode = 1
            self.received.bind(self._process_pending)
            if self.pending:
                events.call_later(self._process_pending, 0)
        elif mode in (2, "thread", "thread-driven"):
            self.received.unbind(self._process_pending)
            with self._lock:
                self._mode = 2
                start = not self._serving  # a retiring thread clears it
                self._serving = True
            if start:
                self._thread = start_thread(self._serve_thread, name="yoton-rep")
        else:
            raise ValueError(f"Invalid mode {mode!r}: use 'off', 'event' or 'thread'.")
        self._acknowledge_next()  # requesters may be waiting already

    def echo(self, arg1: Any, sleep: float = 0.0) -> tuple:
        """Return (arg1, hex id of this context), after sleeping ``sleep`` s."""
        if sleep:
            time.sleep(sleep)
        return arg1, hex(self._context.id)

    # -- serving -------------------------------------------------------------------

    def _serve_thread(self) -> None:
        try:
            while self._serve_next():
                pass
        except BaseException:
            with self._lock:  # e.g. SystemExit in a method: set_mode() restarts
                self._serving = False
            raise

    def _serve_next(self) -> bool:
        """Wait for one call and answer it; False when the thread should end.

        A method of its own: CPython 3.11 specializes the code of functions it
        calls often, never that of a loop in a function that does not return.
        """
        if self._closed:
            return False
        if self._mode != 2:
            with self._lock:  # set_mode() looks at _serving under it
                if self._mode != 2:
                    self._serving = False
                    return False
        if not self._q_in._items:
            self._read_requests()
        item = self._handoff
        if item is not None:
            self._handoff = None
        else:
            try:
                item = self._q_in.pop(True)
            except Empty:
                return False  # closed
        if self._mode != 2:
            # Switched off (or to event mode) while we waited: leave the
            # call for whoever serves next.
            with self._q_in._cond:
                self._q_in._items.appendleft(item)
            if self._mode == 1:
                events.call_later(self._process_pending, 0)
            return True
        self._handle(item)
        self._acknowledge_next()
        return True

    def _read_requests(self) -> None:
        """While idle, read the next request from the connection in this thread."""
        connection = self._context._sole_connection()
        if connection is not None:
            self._borrower = _get_ident()
            try:
                connection._read_until(self._has_work, _BORROW_MAX)
            finally:
                self._borrower = None

    def _has_work(self) -> bool:
        return (
            self._handoff is not None
            or bool(self._q_in._items)
            or self._mode != 2
            or self._closed
        )

    def _process_pending(self, _channel: Any = None) -> None:
        if self._mode != 1:
            return
        while True:
            item = self._recv(False)
            if item is None:
                break
            self._handle(item)
        self._acknowledge_next()

    # Received frames, not Packages (see BaseChannel): the queue holds the
    # calls as such.
    _receives_items = True

    def _recv_frames(self, frames: list, runs: list) -> None:
        # Routing lock held: handle control messages here, queue calls.
        # In arrival order: a requester sends the call and then "req-" for it,
        # often in one batch; the call must be matched to our "req!" first.
        queued = False
        for frame in frames:
            if self._take_call(frame):
                queued = True
        if queued:
            self._notify_received()  # we are not free to take another now
        else:
            self._acknowledge_next()

    def _take_frame(self, frame: tuple) -> None:
        """:meth:`_recv_frames` of a frame that arrived alone."""
        if self._take_call(frame):
            self._notify_received()
        else:
            self._acknowledge_next()

    def _take_call(self, frame: tuple) -> bool:
        """Handle a control message, or queue (or bounce) a call; return
        whether a call was queued."""
        head, _, dest_id, request_id, _, _ = frame
        requester = (_known_heads.get(head) or split_head(head))[1]
        if request_id >= REQREP_SEQ_REF:
            self._on_control(frame, requester)
            return False
        if dest_id != self._context._id:
            return False
        # Only reading threads get here, where no signal handler can raise
        # (the main thread reads with signals masked, see SocketReader.step),
        # so the lock needs no `with` (which costs three times as much).
        lock = self._lock
        lock.acquire()
        try:
            acked = self._acked
            if acked is not None and acked[0] == requester and acked[1] == request_id:
                self._acked = None
            elif (
                self._busy
                or self._handoff is not None
                or self._q_in._items
                or self._mode == 0
            ):
                # A direct call while busy or off: let the requester negotiate.
                self._bounce(requester, request_id)
                return False
            if self._borrower == _get_ident() and not self._q_in._items:
                # The serving thread read it itself: no queue in between.
                if self._handoff is None:
                    self._handoff = frame
                    return True
            self._q_in.push(frame)
        finally:
            lock.release()
        return True

    def _bounce(self, requester: int, request_id: int) -> None:
        try:
            self._send(_BUSY, requester, request_id + REQREP_SEQ_REF, block=False)
        except OSError:
            pass  # channel closed meanwhile; never raise in the IO thread

    def _on_control(self, frame: tuple, requester: int) -> None:
        key = (requester, frame[F_DEST_SEQ] - REQREP_SEQ_REF)
        what = frame[F_DATA]
        with self._lock:
            if what == _ASK:
                # A repeated ask keeps its place: the oldest is served first.
                self._pre_requests.setdefault(key, None)
                return
            self._pre_requests.pop(key, None)
            if what == _FORGET and self._acked and self._acked[:2] == key:
                self._acked = None

    def _sources_lost(self, ids: list[int]) -> None:
        """Forget what requesters that can no longer be reached asked for."""
        lost = set(ids)
        with self._lock:
            self._pre_requests = {
                p: None for p in self._pre_requests if p[0] not in lost
            }
            if self._acked and self._acked[0] in lost:
                self._acked = None
        self._acknowledge_next()

    def _acknowledge_next(self) -> None:
        """Offer to take the oldest request that asked, if we are free."""
        if not self._pre_requests and self._acked is None:
            # Nothing to offer (looked at without the lock: a request that
            # asks after this calls us again on arrival, see _take_frame).
            return
        with self._lock:
            if self._acked and time.monotonic() - self._acked[2] > ACK_EXPIRY:
                self._acked = None
            if self._acked or self._busy or self._q_in._items or not self._pre_requests:
                return
            if self._mode == 0 or self._closed:
                return
            requester, request_id = key = next(iter(self._pre_requests))
            del self._pre_requests[key]
            self._acked = (requester, request_id, time.monotonic())
        try:
            self._send(_ACK, requester, request_id + REQREP_SEQ_REF, block=False)
        except OSError:
            pass

    def _handle(self, frame: tuple) -> None:
        """Answer one queued call, a received frame."""
        # Plain stores: the checks under the lock that read it only decide
        # whether a requester should negotiate, and this thread offers to
        # take the next request itself when done (_acknowledge_next).
        self._busy = True
        try:
            try:
                name, args, kwargs = decode_request(frame[F_DATA])
                if type(name) is str and name in self._callable_names:
                    method = getattr(self, name)  # checked before
                else:
                    method = self._public_method(name)
                if type(kwargs) is not dict or (
                    type(args) is not tuple and not isinstance(args, list)
                ):
                    raise TypeError(_BAD_REQUEST)
                reply = method(*args, **kwargs)
            except Exception as err:
                logger.debug("yoton.RepChannel: error in a request", exc_info=True)
                reply = _error_reply(err)
            try:
                data = encode_object(reply)
            except EncodeError as err:
                data = encode_object(_error_reply(err))
            head = frame[F_HEAD]
            requester = (_known_heads.get(head) or split_head(head))[1]
            if not self._closed:
                self._context._send_frame(
                    self._slot_out_h, data, requester, frame[F_DEST_SEQ], False
                )
        finally:
            self._busy = False

    def _public_method(self, name: Any):
        """The bound method a request names, checked once per name."""
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"{name!r} cannot be called remotely (private name).")
        if name != "echo":
            owner = next((k for k in type(self).__mro__ if name in vars(k)), None)
            if owner is None:
                raise AttributeError(
                    f"Method {name!r} is not implemented by this replier."
                )
            # Names of the channel API stay refused even if a subclass overrides
            # them (close, set_mode, ...).
            if hasattr(RepChannel, name) or not issubclass(owner, RepChannel):
                raise AttributeError(
                    f"{name!r} cannot be called remotely: only public methods that "
                    f"the {type(self).__name__} class defines (and echo) can."
                )
        method = getattr(self, name)
        if not isinstance(method, types.MethodType | types.FunctionType):
            raise AttributeError(f"{name!r} is not a method and cannot be called.")
        self._callable_names.add(name)  # checked once per name
        return method

    def close(self) -> None:
        """Stop serving and close the channel."""
        self._mode = 0
        super().close()


def _error_reply(err: BaseException) -> tuple:
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return ERROR_OBJECT, f"{type(err).__name__}: {err}{_TRACEBACK_MARK}{tb}"
