"""The receive side of one TCP connection: read, parse, deliver, one step at a time.

A :class:`SocketReader` holds the receive buffer and parser state of a
connection. Whoever holds its ``lock`` may call :meth:`SocketReader.step`:
normally the connection's receiving thread, but also a thread that waits for
a reply (or a replier thread waiting for a request) and borrows the reader,
so the package it waits for reaches it with no thread hand-off.
"""

from __future__ import annotations

import bisect
import io
import signal
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from . import wakeups, wire
from .threads import BLOCKED_SIGNALS
from .threads import pthread_sigmask as _sigmask

if TYPE_CHECKING:
    from .connection import TcpConnection

STOP_EOF = "Other end dropped the connection."
STOP_EOF_MID_MESSAGE = "Other end dropped the connection in the middle of a message."
STOP_CLOSED_FROM_THERE = "Closed from other end."
#: step() result: the connection was closed here, stop reading without a reason.
STOP_QUIETLY = ""

RECV_BUFFER = 1 << 20
#: One read takes at most this much: the frames parsed out of 1 MiB of small
#: messages are more objects than the caches hold until their consumer takes
#: them (256 KiB: 15% more messages a second than 1 MiB, here).
RECV_CHUNK = 256 << 10
#: Payloads from this size on get a buffer of their own (received in place).
LARGE_FRAME = 256 << 10
#: A flow-controlled queue's consumer is waited for at most this long.
CONSUMER_PATIENCE = 0.5
#: Packages are routed in slices of this many, so one recv of tiny messages
#: cannot overflow a queue before flow control pauses reading.
DELIVERY_SLICE = 2048

_TIMEVAL = struct.Struct("@ll")
_MSG_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_HEADER_SIZE = wire.HEADER_SIZE
_DATA = wire.F_DATA
_monotonic = time.monotonic


class SocketReader:
    """Receive state of a connection; one holder of ``lock`` reads at a time."""

    def __init__(self, connection: TcpConnection, leftover: bytes) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        #: The reason reading stopped (a str), once the stream has ended.
        self.finished: str | None = None
        self._sock = connection._sock
        self._deliver_to = connection._context._recv_packages
        self._deliver_one = connection._context._recv_one
        self._route = connection._context._route_frames
        self._take_one_reply = connection._context._take_reply
        self._max_size = connection._max_message_size
        self._buf = bytearray(max(RECV_BUFFER, len(leftover)))
        self._view = memoryview(self._buf)
        self._buf[: len(leftover)] = leftover
        self._start = 0
        self._end = len(leftover)
        self._need_read = self._end == 0
        self._large_mode = False
        self._timed_out = False
        #: Counts received and not yet taken (a signal handler raised between).
        self._got: list = []
        #: The receive timeout set on the socket (see _set_wait).
        self._wait: float | None = None
        self._set_wait(connection._timeout)

    def step(
        self,
        wait: float,
        deferred: list | None,
        mask_signals: bool = False,
    ) -> str | None:
        """Wait up to ``wait`` s for data, read once, parse and route what is complete.

        Returns None to go on, else why the stream ended (``STOP_QUIETLY`` when
        the connection was closed here; a protocol or socket error is such a
        reason too), also kept in ``finished``. The reader lock must be held.
        ``deferred`` are wake-ups to run before blocking. ``mask_signals`` (for
        the main thread) makes signals wait from the moment data is read until
        it is delivered: a KeyboardInterrupt raised in between would lose what
        was read.
        """
        try:
            got = self._got
            if self._need_read and not got:
                if deferred:
                    wakeups.run_deferred(deferred)  # wake others just before blocking
                if not self._read(wait, mask_signals):
                    reason = self._quiet()
                    if reason is not None:
                        self.finished = reason
                    return reason
            if not mask_signals:
                reason = self._take(deferred)
            elif got and self._end == 0 and self._take_reply():
                reason = None  # a reply, taken without a signal mask
            else:
                previous = None
                try:
                    previous = _sigmask(signal.SIG_BLOCK, BLOCKED_SIGNALS)
                    reason = self._take(deferred)
                finally:
                    if previous is None:  # a handler raised as the mask was set
                        _sigmask(signal.SIG_UNBLOCK, BLOCKED_SIGNALS)
                    else:
                        _sigmask(signal.SIG_SETMASK, previous)
        except wire.RemoteProtocolError as err:
            reason = str(err)
        except OSError as err:
            reason = f"Socket error while receiving: {err}"
        if reason is not None:
            self.finished = reason
        return reason

    def _take_reply(self) -> bool:
        """Take a lone reply just read by the main thread, without masking
        signals (two system calls a call): True once taken, False if what was
        read needs the general way. A handler may raise after any call here;
        the count stays in ``_got`` until the very end, so the next step takes
        the same frame again, and every step of the taking can be done twice
        (see _Requester._take_reply)."""
        got = self._got
        n = got[-1]
        if not n or self._large_mode or self._timed_out:
            return False
        frame = wire.lone_frame(self._buf, 0, n, self._max_size)
        if frame is None:
            return False
        conn = self.connection
        conn._last_recv = _monotonic()
        conn._received_since_send = True
        take = self._take_one_reply  # loaded, then called: see _take
        if not take(frame, conn):
            return False
        got.clear()  # taken: the buffer is free again
        return True

    def _read(self, wait: float, guarded: bool) -> bool:
        """Receive once, waiting up to ``wait`` s; False if nothing came.

        The count goes to ``_got`` for :meth:`_take`. ``guarded`` (the main
        thread) keeps signals free to interrupt the wait, so the count is
        stored by C code: a handler raising right after the read cannot lose
        it, and the next step takes it.
        """
        if self._large_mode and self._start == self._end:
            # After a large frame, read just one header so the next large
            # payload can be received straight into its own buffer.
            self._start = self._end = 0
            target, size = self._view, _HEADER_SIZE
        elif self._end == 0:
            target, size = self._buf, RECV_CHUNK
        else:
            target, size = self._view[self._end : self._end + RECV_CHUNK], 0
        if wait != self._wait:
            self._set_wait(wait)
        try:
            if guarded:
                self._got.extend(map(self._sock.recv_into, (target,), (size,)))
            else:
                self._got.append(self._sock.recv_into(target, size))
        except BlockingIOError:  # SO_RCVTIMEO passed
            return False
        return True

    def _set_wait(self, wait: float) -> None:
        """Make a blocking receive give up after ``wait`` s (SO_RCVTIMEO).

        Waiting in the receive itself saves a poll() per read on the path of
        every package. A shorter wait than asked is harmless (callers loop),
        so a wait close above the current one keeps it: no system call.
        """
        current = self._wait
        if current is not None and current <= wait < 4 * current:
            return
        seconds = int(wait)
        micros = int((wait - seconds) * 1e6)
        if seconds <= 0 and micros <= 0:
            seconds, micros = 0, 1  # zero would mean no timeout at all
        self._sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(seconds, micros)
        )
        self._wait = wait

    def _quiet(self) -> str | None:
        """Nothing came in time: report a quiet peer once (or stop if closed here)."""
        conn = self.connection
        if conn._closed_here():
            return STOP_QUIETLY
        if not self._timed_out and _monotonic() - conn._last_recv >= conn._timeout:
            self._timed_out = True  # reported once, until data comes
            conn._timedout_signal.emit(conn, True)
        return None

    def _take(self, deferred: list | None = None) -> str | None:
        """Take what was read (or parse what is buffered), then route it."""
        conn = self.connection
        if self._need_read:
            n = self._got.pop()
            if not n:
                if conn._closed_here():
                    return STOP_QUIETLY
                return STOP_EOF_MID_MESSAGE if self._end > self._start else STOP_EOF
            self._end += n
            conn._last_recv = _monotonic()
            conn._received_since_send = True
            if self._timed_out:
                self._timed_out = False
                conn._timedout_signal.emit(conn, False)
        self._need_read = True
        buf, start, end = self._buf, self._start, self._end
        if not self._large_mode:
            # One frame alone (a call, a reply): straight to the router.
            frame = wire.lone_frame(buf, start, end, self._max_size)
            if frame is not None:
                self._start = self._end = 0
                # Bound methods kept as attributes are loaded, then called: a
                # method call on them is one CPython 3.11 does not specialize.
                deliver = self._deliver_one
                handled, full = deliver(frame, conn)
                if not handled:  # a heartbeat, a close, one to forward...
                    reason, full = self._deliver([frame], [0])
                    if reason:
                        return reason
                if full:
                    self._wait_for_consumers(full, deferred)
                return None
        # Payloads are unpacked out of the buffer as bytes: it is reused at once.
        frames, runs, start, pending, signals = wire.parse_frame_runs(
            buf, start, end, self._max_size
        )
        self._start = start
        if pending >= LARGE_FRAME:
            if frames:  # deliver what came before, then maybe wait
                reason, _ = self._deliver(frames, runs)
                if reason:
                    return reason
            if deferred:
                wakeups.run_deferred(deferred)
            conn._large_window.wait()
            frame = self._receive_large(pending)
            if frame is None:
                return STOP_EOF_MID_MESSAGE
            # A large (tracked) frame is delivered alone.
            frames, runs, signals = [frame], [0], 0
            frame = None  # hold no reference: the window waits for it
            self._start = self._end = 0
            self._large_mode = True
        elif frames and self._large_mode and frames[-1][_DATA]:
            self._large_mode = False
        if not signals and len(frames) <= DELIVERY_SLICE:  # the usual case
            if frames:
                deliver = self._deliver_to
                full = deliver(frames, conn, runs)
                if full:
                    self._wait_for_consumers(full, deferred)
        else:
            reason = self._deliver_flow_controlled(frames, runs, signals, deferred)
            if reason:
                return reason
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
        elif start > len(buf) - LARGE_FRAME:
            # Move the partial frame (< LARGE_FRAME) to the front.
            buf[: end - start] = buf[start:end]
            self._end = end - start
            self._start = 0
        return None

    def _receive_large(self, total: int) -> tuple | None:
        """Receive the rest of a large frame straight into one bytes object;
        the frame is tracked by the connection's large-message window."""
        sock, view, start, end = self._sock, self._view, self._start, self._end
        # The rest of the frame is waited for as long as it takes (the peer
        # vanishing ends the receive): no receive timeout while it comes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, 0))
        self._wait = None
        head = bytes(view[start : start + wire.HEAD_SIZE])
        rest = wire.HEADER_REST.unpack_from(view, start + wire.HEAD_SIZE)
        size = rest[3]
        prefix = end - start - _HEADER_SIZE
        if prefix == 0:
            data = sock.recv(size, _MSG_WAITALL)  # one allocation, filled in place
            if len(data) < size:
                parts, got = [data], len(data)
                while got < size:
                    if not parts[-1]:
                        return None
                    parts.append(sock.recv(size - got))
                    got += len(parts[-1])
                data = b"".join(parts)
        else:
            # Part of the payload is in our buffer already. A BytesIO grown to
            # the payload size lends its buffer to recv_into and then hands over
            # that very bytes object (getvalue() does not copy an unshared
            # buffer): N bytes of payload cost N bytes, not 2N.
            payload = io.BytesIO()
            payload.seek(size - 1)
            payload.write(b"\0")
            with payload.getbuffer() as target:
                target[:prefix] = view[start + _HEADER_SIZE : end]
                got = prefix
                while got < size:
                    n = sock.recv_into(target[got:], size - got, _MSG_WAITALL)
                    if not n:
                        return None
                    got += n
            data = payload.getvalue()
        self.connection._last_recv = _monotonic()
        return self.connection._large_window.track((head, *rest, data))

    def _deliver_flow_controlled(
        self, frames: list, runs: list, signals: int, deferred: list | None
    ) -> str | None:
        """Deliver in slices (or with signals among the frames); after each
        slice, wait for subscribers that fell behind.

        Waiting (rather than dropping) lets TCP slow the sender down; slices
        keep one recv's worth of tiny messages from overflowing a queue at once.
        """
        for first in range(0, len(frames), DELIVERY_SLICE):
            stop = first + DELIVERY_SLICE
            part = frames[first:stop]
            part_runs = _slice_runs(runs, first, stop)
            if signals:
                reason, full = self._deliver(part, part_runs)
                if reason:
                    return reason
            else:
                full = self._deliver_to(part, self.connection, part_runs)
            if full:
                self._wait_for_consumers(full, deferred)
        return None

    @staticmethod
    def _wait_for_consumers(full: list, deferred: list | None) -> None:
        """Wait until the consumers of the ``full`` queues took enough."""
        if deferred:
            wakeups.run_deferred(deferred)  # they may be among those woken
        for queue in full:
            queue.wait_for_consumer(CONSUMER_PATIENCE)

    def _deliver(self, frames: list, runs: list) -> tuple[str | None, list | None]:
        """Route frames, leaving out connection-level ones (heartbeats, close);
        return (close reason, full queues) as :meth:`Context._recv_packages`
        does. Those come in runs of their own: their head is slot 1's."""
        routed: list = []
        routed_runs: list = []
        heads = wire.known_heads
        for first, stop in zip(runs, [*runs[1:], len(frames)]):
            head = frames[first][wire.F_HEAD]
            if (heads.get(head) or wire.split_head(head))[0] != wire.SLOT_DUMMY:
                routed_runs.append(len(routed))
                routed += frames[first:stop]
                continue
            for frame in frames[first:stop]:
                if not frame[_DATA] and frame[wire.F_SOURCE_SEQ] == wire.SIGNAL_CLOSE:
                    if routed:
                        self._route(routed, self.connection, routed_runs)
                    return STOP_CLOSED_FROM_THERE, None
        if not routed:
            return None, None
        # The general way: a lone frame got here after Context._recv_one.
        return None, self._route(routed, self.connection, routed_runs)


def _slice_runs(runs: list, first: int, stop: int) -> list:
    """The runs of ``frames[first:stop]``, given those of ``frames``."""
    inside = runs[bisect.bisect_right(runs, first) : bisect.bisect_left(runs, stop)]
    return [0, *(start - first for start in inside)]
