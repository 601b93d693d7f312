"""Connections between two contexts: the socket, its two IO threads and the greeting.

This is the thin IO layer around :mod:`yoton.wire`: a sending thread batches
queued frames into one system call (a sparse frame is written by its sender),
and a receiving thread reads with a :class:`~yoton.receiver.SocketReader`,
which parses every complete frame out of each ``recv`` and hands them to the
context for routing. A thread that waits for a reply or a request on a
context with a single connection borrows that reader and reads for itself.
"""

from __future__ import annotations

import builtins
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

from . import wakeups, wire
from .errors import ConnectionClosedError, TimeoutError, YotonError
from .events import Signal
from .queues import LargeMessageWindow
from .receiver import (  # noqa: F401 - the close reasons are part of this API
    STOP_CLOSED_FROM_THERE,
    STOP_EOF,
    STOP_EOF_MID_MESSAGE,
    STOP_QUIETLY,
    SocketReader,
)
from .threads import pthread_sigmask as _sigmask
from .threads import start_thread

if TYPE_CHECKING:
    from .context import Context

logger = logging.getLogger("yoton")

STATUS_CLOSED = 0
STATUS_CLOSING = 1
STATUS_WAITING = 2
STATUS_HOSTING = 3
STATUS_CONNECTED = 4

#: Smallest allowed ``timeout`` (seconds without data before ``timedout`` fires).
TIMEOUT_MIN = 0.5
#: An idle connection sends a heartbeat this often (yoton 2.2 peers expect < 0.5 s).
HEARTBEAT_INTERVAL = 0.25

STOP_DEFAULT = "Closed by the user."
STOP_CONTEXT = "Closed by the context."

#: Local senders block while more than this many bytes wait to be sent.
HIGH_WATER_BYTES = 8 << 20
#: Packages routed *through* this context are discarded (and counted) above this.
FORWARD_LIMIT_BYTES = 64 << 20
#: A local sender waits at most this long for a peer that takes no data.
CONGESTION_TIMEOUT = 5.0
#: Payloads up to this size are joined with their header into one buffer.
JOIN_LIMIT = 16 << 10
#: Before reading a large payload, wait this long at most for the consumer to
#: take the previous one (so a consumer that keeps up never holds two).
_LARGE_WAIT = 0.02
_IOV_MAX = 512
#: A local sender that finds this many bytes queued writes them itself.
_PRODUCER_BYTES = 64 << 10
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_DONTWAIT_FLAGS = (_MSG_DONTWAIT,)
_NO_ANCILLARY = ((),)
#: A frame queued this long after the previous one is sent by the caller itself.
_INLINE_GAP = 0.0002
#: After a batch, the sending thread waits this long for more before idling.
_LINGER = 0.0005
#: While threads borrow the reader, the receiving thread looks this often
#: whether they still do (and reads again once they stopped).
LEND_CHECK = 0.002
#: A borrowing thread waits for data in slices this long (its package may
#: also arrive by another path).
BORROW_SLICE = 0.02
_monotonic = time.monotonic
_CAN_MASK = _sigmask is not None
_MAIN_THREAD_ID = threading.main_thread().ident
_get_ident = threading.get_ident


class ConnectionCollection(list):
    """A list of connections that can also be indexed by connection name."""

    def __getitem__(self, key):
        if isinstance(key, str):
            if not key:
                raise KeyError("An empty string is not a valid connection name.")
            for connection in self:
                if connection.name == key:
                    return connection
            raise KeyError(f"No connection named {key!r}.")
        return list.__getitem__(self, key)


class Connection:
    """A connection between two contexts (abstract; see :class:`TcpConnection`)."""

    # Slots: a connection has more attributes than CPython keeps inline in an
    # instance, and with them in a dict every method call on it (several per
    # message) would go the slow, unspecialized way. (A __dict__ still takes
    # what users add; CPython makes it only then.)
    __slots__ = (
        "_context",
        "_name",
        "_status",
        "_status_lock",
        "_hostname1",
        "_port1",
        "_hostname2",
        "_port2",
        "_id2",
        "_pid2",
        "_timeout",
        "_heartbeat_interval",
        "_timedout_signal",
        "_closed_signal",
        "_close_reason",
        "authenticated",
        "__weakref__",
        "__dict__",
    )

    def __init__(self, context: Context, name: str = "") -> None:
        self._context = context
        self._name = ""
        self.name = name
        self._status = STATUS_CLOSED
        self._status_lock = threading.RLock()
        self._hostname1, self._port1 = "", 0
        self._hostname2, self._port2 = "", 0
        self._id2 = 0
        self._pid2 = 0
        self._timeout = TIMEOUT_MIN
        self._heartbeat_interval = HEARTBEAT_INTERVAL
        self._timedout_signal = Signal()
        self._closed_signal = Signal()
        self._close_reason = ""
        self.authenticated = False

    # -- documented properties -------------------------------------------------------

    @property
    def closed(self) -> Signal:
        """Signal emitted as (connection, reason) when the connection closes."""
        return self._closed_signal

    @property
    def timedout(self) -> Signal:
        """Signal emitted as (connection, True) after ``timeout`` s without data.

        It is emitted again as (connection, False) when data arrives again.
        """
        return self._timedout_signal

    @property
    def hostname1(self) -> str:
        """The hostname of this end of the connection."""
        return self._hostname1

    @property
    def hostname2(self) -> str:
        """The hostname of the other end ('' when not connected)."""
        return self._hostname2

    @property
    def port1(self) -> int:
        """The port of this end; after bind(), the port to connect to."""
        return self._port1

    @property
    def port2(self) -> int:
        """The port of the other end (0 when not connected)."""
        return self._port2

    @property
    def id1(self) -> int:
        """The id of the context on this side."""
        return self._context.id

    @property
    def id2(self) -> int:
        """The id of the context on the other side (0 before the greeting)."""
        return self._id2

    @property
    def pid1(self) -> int:
        """The process id on this side."""
        return os.getpid()

    @property
    def pid2(self) -> int:
        """The process id on the other side (0 before the greeting)."""
        return self._pid2

    @property
    def is_alive(self) -> bool:
        """Whether the connection is waiting or connected and not closing."""
        return self._status >= STATUS_WAITING

    @property
    def is_connected(self) -> bool:
        """Whether the connection is connected to another context."""
        return self._status >= STATUS_HOSTING

    @property
    def is_waiting(self) -> bool:
        """Whether the connection waits for a peer (after bind())."""
        return self._status == STATUS_WAITING

    @property
    def name(self) -> str:
        """The name by which ``Context.connections[name]`` finds this connection."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise ValueError("A connection name must be a string.")
        self._name = value

    @property
    def timeout(self) -> float:
        """Seconds without received data after which ``timedout`` is emitted."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        if not isinstance(value, int | float):
            raise ValueError("timeout must be a number.")
        if value < TIMEOUT_MIN:
            raise ValueError(f"timeout must be at least {TIMEOUT_MIN:.2f} seconds.")
        self._timeout = float(value)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds of silence after which this end sends a heartbeat (ext).

        The default, 0.25 s, suits yoton 2.2 peers (their minimum timeout is
        0.5 s) and fast stall detection; a longer one saves idle wake-ups on
        links whose peer uses a longer ``timeout``.
        """
        return self._heartbeat_interval

    @heartbeat_interval.setter
    def heartbeat_interval(self, value: float) -> None:
        if not isinstance(value, int | float) or value <= 0:
            raise ValueError("heartbeat_interval must be a positive number.")
        self._heartbeat_interval = float(value)

    @property
    def close_reason(self) -> str:
        """Why the connection closed ('' while it is alive)."""
        return self._close_reason

    def __repr__(self) -> str:
        state = {0: "closed", 1: "closing", 2: "waiting", 3: "hosting", 4: "connected"}
        return (
            f"<{type(self).__name__} {self._name!r} {state[self._status]} "
            f"{self._hostname1}:{self._port1} <-> {self._hostname2}:{self._port2}>"
        )

    # -- closing ---------------------------------------------------------------------

    def close(self, reason: str | None = None) -> None:
        """Close the connection and tell the other end; it cannot be reused."""
        if self._status >= STATUS_HOSTING and self._context._posted:
            self._context._frame_posted(False)  # what was sent goes out first
        with self._status_lock:
            if self._status <= STATUS_CLOSING:
                return
            connected = self.is_connected
            self._status = STATUS_CLOSING
        if connected:
            self._notify_other_end_of_closing()
        self._finish_close(reason or STOP_DEFAULT)

    def close_on_problem(self, reason: str | None = None) -> None:
        """Close without telling the other end (it is probably gone)."""
        with self._status_lock:
            if self._status == STATUS_CLOSED:
                return
        self._finish_close(reason or "Unspecified problem.")

    def _finish_close(self, reason: str) -> None:
        with self._status_lock:
            if self._status == STATUS_CLOSED:
                return
            self._status = STATUS_CLOSED
            self._close_reason = reason
        self._release_resources()
        if self._context._verbose:
            logger.info("yoton connection %r closed: %s", self._name, reason)
        self._context._connection_closed(self, reason)
        self._closed_signal.emit(self, reason)

    def flush(self, timeout: float = 3.0) -> None:
        """Wait until every queued package is sent; raise TimeoutError otherwise."""
        raise NotImplementedError

    # -- for subclasses --------------------------------------------------------------

    def _notify_other_end_of_closing(self) -> None:
        pass

    def _release_resources(self) -> None:
        pass


class TcpConnection(Connection):
    """A connection over one persistent TCP socket, with a send and a receive thread."""

    __slots__ = (
        "_borrows",
        "_congested",
        "_dropped",
        "_flush_target",
        "_large_window",
        "_last_queued",
        "_last_recv",
        "_last_send",
        "_lend_cond",
        "_lend_requested",
        "_listen_sock",
        "_max_message_size",
        "_out",
        "_out_bytes",
        "_out_cond",
        "_out_lock",
        "_producer_writes",
        "_queued_total",
        "_reader",
        "_received_since_send",
        "_sender_idle",
        "_sent_total",
        "_sock",
        "_socket_full",
        "_threads",
        "_writer_waiting",
        "_writing",
        "refused",
    )

    def __init__(self, context: Context, name: str = "") -> None:
        super().__init__(context, name)
        self._sock: socket.socket | None = None
        self._out: deque = deque()
        self._out_bytes = 0
        self._out_lock = threading.Lock()
        self._out_cond = threading.Condition(self._out_lock)
        self._sender_idle = False  # the sending thread waits for frames
        self._congested = False  # the peer took nothing for CONGESTION_TIMEOUT
        self._socket_full = False  # a sender found the socket buffer full
        self._queued_total = 0  # buffers ever queued
        self._sent_total = 0  # buffers ever handed to the socket
        self._producer_writes = 0  # batches written by producers themselves
        self._flush_target = 0  # flush() waits until _sent_total reaches it
        self._dropped = 0
        self._last_recv = time.monotonic()
        self._last_send = 0.0
        self._last_queued = 0.0
        self._max_message_size = context._max_message_size
        self._threads: list[threading.Thread] = []
        self._listen_sock: socket.socket | None = None
        # True while one thread writes frames to the socket (guarded by
        # _out_lock); writers that find it set queue their frames instead.
        self._writing = False
        self._writer_waiting = 0  # the sending thread waits for _writing to clear
        self._large_window = LargeMessageWindow(_LARGE_WAIT)
        self._reader: SocketReader | None = None
        self._lend_requested = False  # a thread wants to read for itself
        self._lend_cond = threading.Condition(threading.Lock())
        self._borrows = 0  # times a thread borrowed the reader
        self._received_since_send = False
        #: Emitted as (connection, peer address, reason) when bind() refuses a peer.
        self.refused = Signal()

    @property
    def dropped(self) -> int:
        """Packages this connection discarded because its peer did not keep up."""
        return self._dropped

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet handed to the socket."""
        return self._out_bytes

    # -- setting up ------------------------------------------------------------------

    def _start(
        self, sock: socket.socket, handshake: wire.Handshake, status: int
    ) -> None:
        """Take over a socket whose greeting succeeded; start the IO threads."""
        sock.settimeout(None)
        self._hostname1, self._port1 = sock.getsockname()[:2]
        self._hostname2, self._port2 = sock.getpeername()[:2]
        self._id2 = handshake.peer_id
        self._pid2 = handshake.peer_pid
        self.authenticated = handshake.authenticated
        self._last_recv = time.monotonic()
        with self._status_lock:
            if self._status == STATUS_CLOSED and self._close_reason:
                sock.close()
                return
            self._sock = sock
            self._status = status
        name = f"yoton-{self._name or 'conn'}"
        self._threads = [
            start_thread(self._sending_loop, name=name + "-send"),
            start_thread(self._receiving_loop, handshake.leftover, name=name + "-recv"),
        ]
        with self._out_cond:
            self._out_cond.notify_all()

    def _set_waiting(self, hostname: str, port: int) -> None:
        self._hostname1, self._port1 = hostname, port
        self._status = STATUS_WAITING

    # -- sending -----------------------------------------------------------------

    def _queue(self, header: bytes, data: bytes, forwarded: bool = False) -> bool:
        """Queue one frame for sending; forwarded ones are dropped past the limit.

        Returns True when more than HIGH_WATER_BYTES wait to be sent (a local
        sender should then call :meth:`_wait_writable`).
        """
        buffers, _ = frame_buffers(header, data)
        return self._enqueue(buffers, 1, forwarded)

    def _queue_frames(self, frames: list, count: int) -> bool:
        """Queue ``count`` local frames at once (``frames`` holds their buffers);
        returns what :meth:`_queue` returns."""
        return self._enqueue(frames, count, False)

    def _send_local(self, buffers: tuple, single: bytes | None) -> bool:
        """Send one local frame: when traffic is sparse and ``single`` (the
        frame in one buffer) is given, its sender writes it at once, without
        a hand-off (the usual case for a call or a reply); else it is queued.
        Returns what :meth:`_queue` returns."""
        if single is None:
            return self._enqueue(buffers, 1, False)
        size = len(single)
        owns = False
        # What the writes took, stored by C code (map into extend): a signal
        # handler that raises once a call returns cannot lose the count, so
        # no frame is ever cut and no signal mask is needed.
        written: list = []
        try:
            with self._out_lock:
                if not self._out:
                    now = _monotonic()
                    # A frame that follows a received one (a request after its
                    # previous reply, a reply) is sparse whatever the gap.
                    if (
                        (
                            self._received_since_send
                            or now - self._last_queued > _INLINE_GAP
                        )
                        and not self._writing
                        and self._status >= STATUS_HOSTING
                    ):
                        # Plain stores, no call in between: an exception from
                        # a signal handler cannot leave _writing set and us
                        # not knowing it (the finally below clears it).
                        self._writing = owns = True
                    self._received_since_send = False
                    self._last_queued = now
            if not owns:
                return self._enqueue(buffers, 1, False)
            # We own the socket: no other frame can be written before this one.
            written.extend(map(self._sock.send, buffers, _DONTWAIT_FLAGS))
            return False
        except BlockingIOError:
            written.append(0)  # the socket is full: the sending thread waits
            return False
        except OSError:
            written.append(-1)  # broken: the receiving thread notices and closes
            return False
        finally:
            if owns:
                if written and written[0] == size:  # all of it: no call first
                    self._writing = False
                    self._last_send = now
                    if self._writer_waiting:
                        with self._out_lock:
                            self._out_cond.notify_all()
                else:
                    self._release_socket(buffers, written, True)

    def _enqueue(self, buffers, count: int, forwarded: bool) -> bool:
        """Queue ``count`` frames made of ``buffers`` for the sending thread.

        A local sender that has queued a full batch writes it itself (without
        blocking), so a stream does not wait for the IO thread to get the GIL.
        """
        owns = False  # whether this thread writes to the socket (see _writing)
        taken = None  # the batch it took to write
        written: list = []  # see _send_local
        try:
            with self._out_lock:
                status = self._status
                if status < STATUS_WAITING:
                    return False
                if self._out_bytes > FORWARD_LIMIT_BYTES and (
                    forwarded or self._congested
                ):
                    self._count_drop(count)
                    return False
                self._out.extend(buffers)
                self._queued_total += count
                self._out_bytes += sum(map(len, buffers))
                if (
                    self._out_bytes < _PRODUCER_BYTES
                    or forwarded
                    or self._socket_full
                    or status < STATUS_HOSTING
                    or self._writing
                ):
                    if self._sender_idle:
                        self._out_cond.notify()
                    return self._out_bytes > HIGH_WATER_BYTES
                # Dense traffic: the frame after this batch is queued too
                # (the gap is measured from the last frame seen queued).
                self._last_queued = _monotonic()
                fresh = deque()
                # Plain assignments from here on, as in _send_local.
                self._writing = owns = True
                taken = self._out
                self._out = fresh
                self._out_bytes = 0
                self._producer_writes += 1
            # Never blocking: what the socket cannot take now goes back to the
            # front of the queue and the sending thread writes it.
            head = list(islice(taken, _IOV_MAX)) if len(taken) > _IOV_MAX else taken
            written.extend(
                map(self._sock.sendmsg, (head,), _NO_ANCILLARY, _DONTWAIT_FLAGS)
            )
            return False
        except BlockingIOError:
            written.append(0)
            return False
        except OSError:
            written.append(-1)
            return False
        finally:
            if owns:
                self._release_socket(taken, written, False)

    def _release_socket(self, taken, written: list, inline: bool) -> None:
        """Stop owning the socket after writing ``taken`` (``written``: the
        counts of the writes; none if none started, -1 for a broken socket):
        the rest goes back to the front of the queue, for the sending thread;
        ``inline``: ``taken`` was never queued."""
        rest = [] if -1 in written else _unsent(list(taken), sum(written))
        # The raw lock: Condition.__enter__ is Python code, where a signal
        # handler could raise with it taken.
        with self._out_lock:
            if rest:
                self._out.extendleft(reversed(rest))
                self._out_bytes += sum(map(len, rest))
                if inline:  # queued now, so that flush() waits for it
                    self._queued_total += 1
                self._socket_full = bool(written)  # else the write never started
            else:
                self._last_send = _monotonic()
            self._writing = False
            self._out_cond.notify_all()

    def _count_drop(self, count: int = 1) -> None:
        before = self._dropped
        self._dropped += count
        if before == 0 or before // 1000 != self._dropped // 1000:
            logger.warning(
                "yoton: peer %s does not keep up; %d package(s) dropped",
                self._hostname2,
                self._dropped,
            )

    def _wait_writable(self) -> None:
        """Block while too many bytes are queued (backpressure for local senders).

        A peer that takes nothing for CONGESTION_TIMEOUT seconds is marked
        congested: senders stop waiting for it, and what it does not take
        beyond FORWARD_LIMIT_BYTES is dropped and counted, so one stopped peer
        can neither block this process nor fill its memory.
        """
        deadline = time.monotonic() + CONGESTION_TIMEOUT
        with self._out_cond:
            while (
                self._out_bytes > HIGH_WATER_BYTES
                and self._status >= STATUS_HOSTING
                and not self._congested
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._congested = True
                    logger.warning(
                        "yoton: peer %s:%s takes no data; not waiting for it "
                        "(what it misses is dropped and counted)",
                        self._hostname2,
                        self._port2,
                    )
                    return
                self._out_cond.wait(remaining)

    def flush(self, timeout: float = 3.0) -> None:
        """Wait until every package queued so far is handed to the socket."""
        if self._status < STATUS_CLOSING or self._status == STATUS_WAITING:
            raise ConnectionClosedError(
                "Cannot flush a connection that is not connected."
            )
        deadline = time.monotonic() + timeout
        if self._context._posted:
            self._context._frame_posted(False)
        with self._out_cond:
            target = self._queued_total
            # The IO thread confirms what was sent, neither lingering nor idling
            # first (producers may have written it all themselves).
            self._flush_target = max(self._flush_target, target)
            self._out_cond.notify_all()
            while self._sent_total < target:
                if self._status < STATUS_CLOSING:
                    raise ConnectionClosedError(
                        f"Connection closed while flushing: {self._close_reason}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"Sending the queued packages took more than {timeout} s."
                    )
                self._out_cond.wait(remaining)

    def _linger(self) -> None:
        """Dense traffic (out lock held): let frames gather for a moment, and stay
        out of the way while producers write full batches themselves, so a
        stream costs neither a wake-up per frame nor a fight for the GIL."""
        cond = self._out_cond
        while True:
            writes = self._producer_writes
            cond.wait(_LINGER)
            if (
                self._producer_writes == writes
                or self._socket_full
                or self._sent_total < self._flush_target
                or self._status < STATUS_HOSTING
            ):
                return

    def _sending_loop(self) -> None:
        sock = self._sock
        cond = self._out_cond
        posted = self._context._posted
        lingering = False
        writes_seen = 0
        try:
            while True:
                with cond:
                    # Linger when nothing waits (frames gather), or while a local
                    # producer writes its own batches; frames that wait and
                    # that nobody else will write (forwarded ones) go at once.
                    if (
                        lingering
                        and self._status >= STATUS_HOSTING
                        and (not self._out or self._producer_writes != writes_seen)
                    ):
                        self._linger()
                    writes_seen = self._producer_writes
                    if (
                        not self._out
                        and not posted
                        and self._status >= STATUS_HOSTING
                        and self._sent_total >= self._flush_target
                    ):
                        self._sender_idle = True
                        cond.wait(self._heartbeat_interval)
                        self._sender_idle = False
                if posted:  # payloads posted on the context: frame them first
                    self._context._frame_posted(False)
                with cond:
                    if self._status < STATUS_CLOSING:
                        return
                    if not self._out and self._status == STATUS_CLOSING:
                        return
                    # Own the socket before taking the frames, so an inline send
                    # by another thread can never overtake frames queued before it.
                    while self._writing:
                        self._writer_waiting += 1
                        cond.wait(self._heartbeat_interval)  # bounded: see _queue
                        self._writer_waiting -= 1
                    self._writing = True
                    buffers = self._out
                    count = self._queued_total
                    self._out = deque()
                    self._out_bytes = 0
                    self._congested = False  # it takes data again
                    cond.notify_all()
                try:
                    lingering = bool(buffers)
                    if buffers:
                        _send_buffers(sock, buffers)
                        self._socket_full = False  # it took everything
                    elif (
                        time.monotonic() - self._last_send
                        > self._heartbeat_interval / 2
                    ):
                        sock.sendall(wire.HEARTBEAT_FRAME)
                    self._last_send = time.monotonic()
                finally:
                    with cond:
                        self._writing = False
                        self._sent_total = count
                        cond.notify_all()
        except OSError as err:
            self.close_on_problem(f"Socket error while sending: {err}")
        except Exception:  # pragma: no cover - a bug; close rather than hang
            logger.exception("yoton: error in the sending thread")
            self.close_on_problem("Error in the sending thread.")

    def _notify_other_end_of_closing(self) -> None:
        with self._out_cond:
            self._out.append(wire.CLOSE_FRAME)
            self._queued_total += 1
            self._out_cond.notify_all()
        try:
            self.flush(1.0)
        except YotonError:
            return
        # Half-close and let the peer close first: closing a socket with unread
        # data makes the kernel send a reset, which can destroy frames the peer
        # has not read yet.
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        receiver = self._threads[1] if len(self._threads) > 1 else None
        if (
            receiver is not None
            and receiver.ident is not None
            and receiver is not threading.current_thread()
        ):
            receiver.join(1.0)

    def _release_resources(self) -> None:
        sock = self._sock
        listen_sock, self._listen_sock = self._listen_sock, None
        if listen_sock is not None:
            try:
                listen_sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listen_sock.close()
        with self._out_cond:
            self._out.clear()
            self._out_bytes = 0
            self._out_cond.notify_all()
        with self._lend_cond:
            self._lend_cond.notify_all()  # a parked receiving thread sees the close
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    # -- receiving ---------------------------------------------------------------

    def _closed_here(self) -> bool:
        """Whether this end closed (or is closing) the connection."""
        return self._status < STATUS_HOSTING

    def _receiving_loop(self, leftover: bytes) -> None:
        deferred = wakeups.defer_in_this_thread()
        try:
            reader = SocketReader(self, leftover)
        except (OSError, ValueError):  # the socket was closed before we started
            if not self._closed_here():
                self.close_on_problem("Socket closed before receiving started.")
            return
        self._reader = reader
        reason = None
        try:
            reason = self._read_loop(reader, deferred)
        except Exception:  # pragma: no cover - a bug; close rather than hang
            logger.exception("yoton: error in the receiving thread")
            reason = "Error in the receiving thread."
        wakeups.run_deferred(deferred)
        if reason:
            self.close_on_problem(reason)
        wakeups.run_deferred(deferred)

    def _read_loop(self, reader: SocketReader, deferred: list) -> str | None:
        """Read until the stream ends, lending the reader to threads that ask."""
        reason = None
        while reason is None:
            reason = self._read_turn(reader, deferred)
        return reason

    def _read_turn(self, reader: SocketReader, deferred: list) -> str | None:
        """Read once, or lend the reader; None to go on, else why the stream
        ended. (A method of its own: CPython 3.11 specializes the code of
        functions it calls often, never that of a loop that does not return.)"""
        if self._lend_requested:
            # A thread waiting for a package found us reading: after this
            # delivery (which likely woke it), let it read for itself.
            self._lend_requested = False
            wakeups.run_deferred(deferred)
            self._lend_reader(reader)
        if reader.finished is not None:
            return STOP_QUIETLY  # the borrower that saw the end closed us
        lock = reader.lock
        if not lock.acquire(False):
            if self._status >= STATUS_HOSTING:
                self._lend_reader(reader)  # a borrower reads
                return None
            lock.acquire()  # closing: the borrower returns soon
        try:
            if reader.finished is not None:
                return STOP_QUIETLY
            return reader.step(self._timeout, deferred)
        finally:
            lock.release()

    def _lend_reader(self, reader: SocketReader) -> None:
        """Park the receiving thread while other threads keep borrowing the reader.

        Borrowers do not wake us (that would cost a hand-off per call): we
        look every LEND_CHECK s and read again once nobody borrowed for that
        long, or at once when the connection closes.
        """
        seen = -1
        with self._lend_cond:
            while self._status >= STATUS_HOSTING and reader.finished is None:
                if self._borrows == seen and not reader.lock.locked():
                    return
                seen = self._borrows
                self._lend_cond.wait(LEND_CHECK)

    def _read_until(self, done: Callable[[], object], timeout: float) -> bool:
        """Read and route packages in this thread until ``done()`` or ``timeout`` s.

        For a thread that waits for a package this connection will bring: it
        gets it without a hand-off from the receiving thread. Returns False at
        once if another thread reads now (the caller waits as usual; the
        receiving thread lends the reader next time), and in the main thread
        where signals cannot be masked: a Ctrl-C could land mid-delivery, and
        the routing (RepChannel._take_call, say) counts on none there.
        """
        reader = self._reader
        if reader is None or reader.finished is not None:
            return False
        main = _get_ident() == _MAIN_THREAD_ID  # reads with signals masked
        if main and not _CAN_MASK:
            return False
        if not reader.lock.acquire(False):
            self._lend_requested = True
            return False
        reason = None
        try:
            if reader.finished is not None:
                return False
            deadline = None  # taken after the first step: one clock read less
            wait = timeout
            while not done():
                # Short waits: done() may also come true from another thread.
                if deadline is None:
                    deadline = _monotonic() + timeout
                else:
                    wait = deadline - _monotonic()
                    if wait <= 0:
                        break
                if wait > BORROW_SLICE:  # (no min(): a builtin call costs more)
                    wait = BORROW_SLICE
                reason = reader.step(wait, None, main)
                if reason is not None:
                    break
        finally:
            self._borrows += 1
            reader.lock.release()
        if reason:
            self.close_on_problem(reason)
        return True


def frame_buffers(header: bytes, data: bytes) -> tuple[tuple, bytes | None]:
    """Return a frame's buffers and, for a small one, that one joined buffer
    (which may be written inline, see TcpConnection._send_local)."""
    if len(data) > JOIN_LIMIT:
        return (header, data), None
    frame = header + data
    return (frame,), frame


def _send_buffers(sock: socket.socket, buffers: deque) -> None:
    """Send a sequence of buffers with as few system calls as possible."""
    while buffers:
        if len(buffers) == 1:
            sock.sendall(buffers.popleft())
            return
        batch = [buffers.popleft() for _ in range(min(len(buffers), _IOV_MAX))]
        total = sum(len(b) for b in batch)
        sent = sock.sendmsg(batch)
        if sent < total:
            for buffer in _unsent(batch, sent):
                sock.sendall(buffer)


def _unsent(buffers: list, sent: int) -> list:
    """Return what is left of ``buffers`` after the first ``sent`` bytes went out."""
    for index, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            rest = buffers[index:]
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= size
    return []


def open_socket() -> socket.socket:
    """Create a TCP socket set up for low latency."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run_handshake(
    sock: socket.socket,
    handshake: wire.Handshake,
    timeout: float = wire.HANDSHAKE_TIMEOUT,
) -> None:
    """Drive a :class:`wire.Handshake` over a socket, bounded in time and size."""
    deadline = time.monotonic() + timeout
    first = handshake.initiate()
    if first:
        sock.sendall(first)
    while not handshake.done:
        remaining = deadline - time.monotonic()
        data = None
        if remaining > 0:
            sock.settimeout(remaining)
        try:
            if remaining > 0:
                data = sock.recv(4096)
        except builtins.TimeoutError:
            pass
        except OSError as err:
            raise wire.HandshakeError(f"Socket error during handshake: {err}") from None
        if data is None:
            try:
                sock.sendall(b"ERROR: handshake timed out\r\n")
            except OSError:
                pass
            raise wire.HandshakeError(
                f"Handshake timed out after {timeout} s (the peer said too little)."
            )
        if not data:
            raise wire.HandshakeError(
                "The other end closed the connection during the handshake."
            )
        try:
            reply = handshake.receive_data(data)
        except wire.HandshakeError as err:
            if err.reply:
                try:
                    sock.sendall(err.reply)
                except OSError:
                    pass
            raise
        if reply:
            sock.sendall(reply)
    sock.settimeout(None)
