"""The Context: a node of the network that routes packages between its channels
and its connections."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from . import wire
from .addresses import split_address
from .connection import (
    HIGH_WATER_BYTES,
    JOIN_LIMIT,
    STATUS_CONNECTED,
    STATUS_WAITING,
    STOP_CLOSED_FROM_THERE,
    STOP_CONTEXT,
    ConnectionCollection,
    TcpConnection,
    frame_buffers,
    open_socket,
    run_handshake,
)
from .errors import AuthenticationError, ConnectFailedError
from .hosting import Listener, host_one_peer, normalize_key, open_listening
from .queues import PackageQueue, check_queue_params
from .threads import BLOCKED_SIGNALS, start_thread
from .threads import pthread_sigmask as _sigmask

if TYPE_CHECKING:
    from .channels.base import BaseChannel

logger = logging.getLogger("yoton")
_pack_header = wire.HEADER.pack
_pack_tail = wire.HEADER_TAIL_UNADDRESSED.pack
_unpack_head = wire.HEADER_HEAD.unpack
_CONTROL_WORD = wire.CONTROL_WORD
_monotonic = time.monotonic
_MAIN_THREAD_ID = threading.main_thread().ident
_get_ident = threading.get_ident
#: A poster that finds this many payloads posted frames them (see _after_post).
POST_BATCH = 64
#: A payload posted this long after the previous framing is framed at once.
POST_GAP = 0.0002
#: Payloads up to this size may be posted (larger ones are sent at once): the
#: size up to which a frame is one joined buffer.
POST_LIMIT = JOIN_LIMIT

MSG_NEW_CONNECTION = b"NEW_CONNECTION"
MSG_CLOSE_CONNECTION = b"CLOSE_CONNECTION"
#: Extension: "LOST <hex id> ..." - contexts that became unreachable.
MSG_LOST_PREFIX = b"LOST "


def _new_context_id() -> int:
    # 32 bits of milliseconds and 32 random bits, like yoton 2.2 (never 0).
    millis = int(time.time() * 1000) & 0xFFFFFFFF
    return (millis << 32) | int.from_bytes(os.urandom(4), "little") or 1


_split_head = wire.split_head
_known_heads = wire.known_heads


def _deposit(channel: BaseChannel, frames: list, runs: list) -> tuple:
    """Give a channel its frames (routing lock held); return its after-deposit
    handler (or None) and its queue if flow control finds it too full (or None)."""
    if channel._receives_items:
        channel._recv_frames(frames, runs)
    else:
        channel._recv_packages(_packages(frames, runs))
    handler = channel._after_deposit
    if handler is not None:
        return handler, None
    queue = channel._q_in
    if queue.flow_control and queue.over_high_water():
        return None, queue
    return None, None


def _packages(frames: list, runs: list) -> list:
    """Packages of deposited frames, their recv_seq restored from the runs."""
    recv_seqs = []
    for (index, recv_seq), following in zip(runs, runs[1:] + [(len(frames), 0)]):
        recv_seqs.extend(range(recv_seq, recv_seq + following[0] - index))
    return [wire.package_from_frame(f, r) for f, r in zip(frames, recv_seqs)]


class Context:
    """A node in the network: channels attach to it, connections link it to others.

    Packages sent while no connection exists are kept and delivered to the
    first peer. ``queue_params`` is ``(size, 'old'|'new')``: the size of every
    receive queue and which end is discarded (and counted) when it is full.
    Without it, queues hold 10,000 messages and SubChannels use flow control:
    a subscriber that falls behind makes its connections pause reading (TCP
    then slows the publisher) instead of losing messages, unless it takes
    nothing for 0.5 s.
    """

    def __init__(
        self,
        verbose: int = 0,
        queue_params: tuple[int, str] | None = None,
        max_message_size: int = wire.DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._verbose = verbose
        self._queue_params = check_queue_params(queue_params)
        # With the default queues, a subscriber that keeps up on average slows
        # its connections down rather than losing messages (flow control).
        self._flow_control = queue_params is None
        self._max_message_size = int(max_message_size)
        self._id = _new_context_id()
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._connections: list[TcpConnection] = []
        self._listeners: list[Listener] = []
        self._sending_channels: dict = {}
        self._receiving_channels: dict = {}
        self._startup_queue = PackageQueue(*self._queue_params, name="startup")
        # (header head, payload) posted (see _after_post) and not framed yet,
        # in sending order.
        self._posted: deque[tuple[bytes, bytes]] = deque()
        self._last_framing = 0.0
        self._send_seq = 0
        self._recv_seq = 0
        self._source_seqs: dict[int, int] = {}
        self._routes: dict[int, TcpConnection] = {}

    # -- properties ------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The 64-bit unique id of this context."""
        return self._id

    @property
    def connections_all(self) -> ConnectionCollection:
        """All live connections, including those still waiting for a peer."""
        with self._lock:
            return ConnectionCollection(c for c in self._connections if c.is_alive)

    @property
    def connections(self) -> ConnectionCollection:
        """The connected connections (indexable by position or name)."""
        with self._lock:
            return ConnectionCollection(c for c in self._connections if c.is_connected)

    @property
    def connection_count(self) -> int:
        """The number of connected peers (usable as a boolean)."""
        return len(self.connections)

    @property
    def listeners(self) -> list[Listener]:
        """The listeners created with :meth:`listen` that are still open."""
        with self._lock:
            return [item for item in self._listeners if not item.closed]

    @property
    def dropped(self) -> int:
        """Packages this context discarded (startup queue, slow peers)."""
        with self._lock:
            total = self._startup_queue.dropped
            return total + sum(c.dropped for c in self._connections)

    # -- connecting ------------------------------------------------------------------

    def bind(
        self,
        address: str,
        max_tries: int = 1,
        name: str = "",
        *,
        key: bytes | str | None = None,
        insecure: bool = False,
    ) -> TcpConnection:
        """Host a connection: wait (in a thread) for one peer at ``address``.

        Returns the waiting connection; its ``port1`` is the port to connect to.
        A peer whose greeting fails is refused and waiting goes on. With
        ``key``, the peer must prove it holds the same key. A non-loopback
        address needs a key unless ``insecure=True``.
        """
        listen_sock, key = open_listening(address, max_tries, key, insecure, 1)
        connection = TcpConnection(self, name)
        connection._listen_sock = listen_sock
        connection._set_waiting(*listen_sock.getsockname()[:2])
        self._adopt(connection)
        start_thread(
            host_one_peer,
            connection,
            listen_sock,
            key,
            name=f"yoton-host-{connection.port1}",
        )
        return connection

    def listen(
        self,
        address: str,
        max_tries: int = 1,
        name: str = "",
        *,
        key: bytes | str | None = None,
        insecure: bool = False,
    ) -> Listener:
        """Accept any number of peers at ``address`` (our extension to bind()).

        Each peer that completes the greeting becomes a connection of this
        context; see :class:`yoton.hosting.Listener`.
        """
        listen_sock, key = open_listening(address, max_tries, key, insecure, 128)
        listener = Listener(self, listen_sock, key, name)
        with self._lock:
            self._listeners.append(listener)
        return listener

    def connect(
        self,
        address: str,
        timeout: float = 1.0,
        name: str = "",
        *,
        key: bytes | str | None = None,
    ) -> TcpConnection:
        """Connect to a context that bound or listens at ``address``.

        Retries for up to ``timeout`` seconds while nobody listens yet. Raises
        ConnectFailedError when no yoton context answers, and
        AuthenticationError when the keys do not match.
        """
        host, port = split_address(address)
        key = normalize_key(key)
        deadline = time.monotonic() + max(timeout, 0.01)
        delay = 0.005
        while True:
            sock = open_socket()
            try:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                sock.connect((host, port))
                break
            except OSError as err:
                sock.close()
                if time.monotonic() + delay >= deadline:
                    raise ConnectFailedError(
                        f"Cannot connect to {host}:{port}: {err}. Is the other side "
                        "bound or listening there?"
                    ) from None
                time.sleep(delay)  # nothing to wait on but the clock: back off
                delay = min(delay * 2, 0.1)
        handshake = wire.Handshake(False, self._id, self._pid, key)
        try:
            run_handshake(sock, handshake, max(timeout, wire.HANDSHAKE_TIMEOUT))
        except wire.AuthHandshakeError as err:
            sock.close()
            raise AuthenticationError(
                f"Could not connect to {address}: {err}"
            ) from None
        except (wire.HandshakeError, OSError) as err:
            sock.close()
            raise ConnectFailedError(f"Could not connect to {address}: {err}") from None
        connection = TcpConnection(self, name)
        with self._lock:  # route nothing from the peer before it is adopted
            connection._start(sock, handshake, STATUS_CONNECTED)
            self._adopt(connection)
        self._connection_established(connection)
        self._send_package(wire.Package(MSG_NEW_CONNECTION, wire.SLOT_CONTEXT))
        return connection

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the packages posted so far are sent on every connection."""
        deadline = time.monotonic() + timeout
        if self._posted:
            self._frame_posted(False)
        for connection in self.connections:
            connection.flush(max(0.0, deadline - time.monotonic()))
        return True

    def close(self) -> None:
        """Close all connections, listeners and channels (the context is reusable)."""
        for listener in self.listeners:
            listener.close()
        for connection in self.connections_all:
            connection.close(STOP_CONTEXT)
        self.close_channels()

    def close_channels(self) -> None:
        """Close every channel of this context; connections stay open."""
        with self._lock:
            channels = set(self._sending_channels.values())
            channels.update(self._receiving_channels.values())
        for channel in channels:
            channel.close()

    def __repr__(self) -> str:
        return f"<yoton.Context {self._id:016x} with {self.connection_count} peer(s)>"

    # -- bookkeeping for connections --------------------------------------------------

    def _adopt(self, connection: TcpConnection) -> None:
        with self._lock:
            if self._posted:
                self._frame_posted(False)  # into the startup queue, just below
            self._connections = [c for c in self._connections if c.is_alive]
            self._connections.append(connection)
            # The first live connection takes the packages sent before it existed.
            if len(self._startup_queue):
                for package in self._startup_queue.pop_all():
                    connection._queue(package.header(), package.data)

    def _connection_established(self, connection: TcpConnection) -> None:
        if self._verbose:
            logger.info(
                "yoton: connected to %s:%s (context %016x)",
                connection.hostname2,
                connection.port2,
                connection.id2,
            )

    def _connection_closed(self, connection: TcpConnection, reason: str) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
            lost = [sid for sid, via in self._routes.items() if via is connection]
            for sid in lost:
                del self._routes[sid]
            others = [c for c in self._connections if c.is_connected]
        if lost:
            self._sources_lost(lost)
            text = MSG_LOST_PREFIX + " ".join(f"{sid:016x}" for sid in lost).encode()
            package = wire.Package(text, wire.SLOT_CONTEXT_EXT)
            if others:
                self._send_package(package, block=False)

    def _sources_lost(self, ids: list[int]) -> None:
        """Tell the channels that the contexts ``ids`` can no longer be reached."""
        with self._lock:
            channels = set(self._receiving_channels.values())
        for channel in channels:
            handler = getattr(channel, "_sources_lost", None)
            if handler is not None:
                handler(ids)

    # -- channels ----------------------------------------------------------------

    def _register_channel(self, channel, slot_out: int, slot_in: int, names) -> None:
        with self._lock:
            if slot_out and slot_out in self._sending_channels:
                raise ValueError(f"Slot not free: {names[0]!r} already has a channel.")
            if slot_in and slot_in in self._receiving_channels:
                raise ValueError(f"Slot not free: {names[1]!r} already has a channel.")
            if slot_out:
                self._sending_channels[slot_out] = channel
            if slot_in:
                self._receiving_channels[slot_in] = channel

    def _unregister_channel(self, channel) -> None:
        with self._lock:
            for table in (self._sending_channels, self._receiving_channels):
                for slot in [s for s, c in table.items() if c is channel]:
                    del table[slot]

    # -- routing -----------------------------------------------------------------

    def _send_package(self, package: wire.Package, block: bool = True) -> None:
        """Send a package made by this context (context messages)."""
        package.source_id = self._id
        package.source_seq = self._send_frame(
            package.slot, package.data, package.dest_id, package.dest_seq, block
        )

    def _send_frame(
        self,
        slot: int,
        data: bytes,
        dest_id: int = 0,
        dest_seq: int = 0,
        block: bool = True,
    ) -> int:
        """Send a payload from this context to every connection (or keep it).

        Returns its source sequence number. With ``block`` the caller waits
        while a connection has too much queued (backpressure); IO threads pass
        False so they can never deadlock. Runs once per message sent.
        """
        with self._lock:
            seq, full = self._send_frame_held(slot, data, dest_id, dest_seq)
        if full and block:
            self._wait_for_backlog()
        return seq

    def _send_frame_held(
        self, slot: int, data: bytes, dest_id: int, dest_seq: int
    ) -> tuple[int, bool]:
        """:meth:`_send_frame` for a caller that holds the context lock (a
        requester, whose lock it is): (sequence number, whether a connection
        is too full now, to wait for once the lock is released)."""
        full = False
        if self._posted:
            full = self._frame_posted(False)  # they were sent first
        self._send_seq = seq = self._send_seq + 1
        header = _pack_header(
            _CONTROL_WORD, slot, self._id, seq, dest_id, dest_seq, len(data)
        )
        buffers, single = frame_buffers(header, data)  # once for all
        route = self._routes.get(dest_id) if dest_id else None
        if route is not None and route._status >= STATUS_WAITING:
            # addressed: only towards it
            full = route._send_local(buffers, single)
        else:
            sent = False
            for connection in self._connections:
                if connection._status >= STATUS_WAITING:
                    if connection._send_local(buffers, single):
                        full = True
                    sent = True
            if not sent:
                self._startup_queue.push(
                    wire.Package(data, slot, self._id, seq, dest_id, dest_seq)
                )
        return seq, full

    def _wait_for_backlog(self) -> None:
        """Backpressure, outside the lock: wait for connections that are too far
        behind (a congested peer is not waited for)."""
        for connection in list(self._connections):
            if connection._out_bytes > HIGH_WATER_BYTES and not connection._congested:
                connection._wait_writable()

    def _after_post(self, count: int, block: bool) -> None:
        """Called by a poster that just made ``count`` payloads wait in
        ``_posted``, when that is 1 or POST_BATCH.

        Posting sends a small payload (<= POST_LIMIT) to every connection like
        :meth:`_send_frame` does, but framed later together with its
        neighbours: a poster appends ``(wire.encode_header_head(slot, id),
        payload)`` to ``_posted`` (PubChannel.send does), so a stream of
        published messages costs no lock and no header per message. Payloads
        get their sequence numbers and headers in one pass, in posting order:
        when POST_BATCH of them wait (framed by that poster), when anything
        else is sent from this context (framed first), or when a sending
        thread looks. A payload posted after a pause is framed at once, so
        sparse messages are not delayed.
        """
        if count >= POST_BATCH or _monotonic() - self._last_framing > POST_GAP:
            self._frame_posted(block)
        else:
            self._wake_senders()

    def _wake_senders(self) -> None:
        """Make idle sending threads look at the posted payloads."""
        for connection in list(self._connections):
            cond = connection._out_cond
            with cond:
                if connection._sender_idle:
                    cond.notify()

    def _frame_posted(self, block: bool) -> bool:
        """Frame and queue everything posted so far (see :meth:`_after_post`);
        with ``block``, wait while a connection is too far behind. Returns
        whether one is."""
        masked = False
        previous = None
        full = False
        try:
            if _get_ident() == _MAIN_THREAD_ID and _sigmask is not None:
                # A KeyboardInterrupt between taking payloads and queueing
                # their frames would lose them: signals wait until queued.
                masked = True
                previous = _sigmask(signal.SIG_BLOCK, BLOCKED_SIGNALS)
            with self._lock:
                full = self._frame_posted_locked()
        finally:
            if masked:
                if previous is None:  # a handler raised as the mask was set
                    _sigmask(signal.SIG_UNBLOCK, BLOCKED_SIGNALS)
                else:
                    _sigmask(signal.SIG_SETMASK, previous)
        if full and block:
            self._wait_for_backlog()
        return full

    def _frame_posted_locked(self) -> bool:
        """The work of :meth:`_frame_posted` (lock held); returns whether a
        connection now has more than its high-water mark queued."""
        posted = self._posted
        take = posted.popleft
        seq = self._send_seq
        connections = [c for c in self._connections if c._status >= STATUS_WAITING]
        if not connections:  # kept for the first peer, as _send_frame does
            push = self._startup_queue.push
            while posted:
                head, data = take()
                seq += 1
                _, slot, source_id = _unpack_head(head)
                push(wire.Package(data, slot, source_id, seq))
            self._send_seq = seq
            return False
        full = False
        # Loop until nothing is left: a payload posted meanwhile whose poster
        # saw others waiting counts on us.
        while posted:
            if len(posted) == 1:  # sparse: the connection may write it inline
                head, data = take()
                self._send_seq = seq = seq + 1
                frame = head + _pack_tail(seq, len(data)) + data
                for connection in connections:
                    if connection._send_local((frame,), frame):
                        full = True
                continue
            parts = []  # header parts and payloads, joined into one buffer below
            append = parts.append
            while posted:
                head, data = take()
                seq += 1
                append(head)
                append(_pack_tail(seq, len(data)))
                append(data)
            self._send_seq = seq
            frames = [b"".join(parts)]
            count = len(parts) // 3
            for connection in connections:
                if connection._queue_frames(frames, count):
                    full = True
        # After the writes: a payload posted soon after this is dense traffic.
        self._last_framing = _monotonic()
        return full

    def _sole_connection(self) -> TcpConnection | None:
        """The one connection, if this context has exactly one (else None).

        A thread waiting for a package may then read it from that connection
        itself (see :meth:`TcpConnection._read_until`): nothing else can bring it.
        """
        connections = self._connections
        return connections[0] if len(connections) == 1 else None

    def _recv_packages(
        self, frames: list, via: TcpConnection | None, runs: list | None = None
    ) -> list | None:
        """Route frames received on ``via`` (see :func:`wire.parse_frame_runs`):
        forward them and deposit them here.

        ``runs`` are where runs of frames with the same head and destination
        start (None: each frame on its own); a run whose sequence numbers are
        new and consecutive is routed as one. A channel that says so
        (``_receives_items``) gets the frames as they are, with where its runs
        of consecutive arrivals start (see SubChannel._recv_frames); others get
        Packages. Returns the flow-controlled queues that are now too full, if
        any: the caller should wait for their consumers before delivering more.
        """
        if len(frames) == 1:
            handled, full = self._recv_one(frames[0], via)
            if handled:
                return full
        return self._route_frames(frames, via, runs)

    def _route_frames(
        self, frames: list, via: TcpConnection | None, runs: list | None = None
    ) -> list | None:
        """:meth:`_recv_packages` the general way, frame by frame or run by run."""
        count = len(frames)
        deposits: dict = {}
        context_packages = None
        my_id = self._id
        if runs is None:
            runs = range(count)
        with self._lock:
            seqs = self._source_seqs
            routes = self._routes
            receiving = self._receiving_channels
            connections = self._connections
            forward_to = (
                [c for c in connections if c is not via and c.is_alive]
                if len(connections) > 1
                else None
            )
            recv_seq = self._recv_seq
            last_head = last_sid = last_seq = slot = None
            last_slot = last_list = None
            for first, stop in zip(runs, [*runs[1:], count]):
                frame = frames[first]
                head, seq, dest = frame[0], frame[1], frame[2]
                if head != last_head:
                    if last_sid is not None:
                        seqs[last_sid] = last_seq
                    last_head = head
                    slot, sid = _known_heads.get(head) or _split_head(head)
                    last_sid, last_seq = sid, seqs.get(sid, 0)
                    if routes.get(sid) is not via:
                        routes[sid] = via
                if stop - first == 1:
                    if seq <= last_seq:
                        continue  # already seen (arrived by another path)
                    last_seq = seq
                    run = (frame,)
                elif seq > last_seq and frames[stop - 1][1] - seq == stop - first - 1:
                    last_seq = frames[stop - 1][1]  # all new: in order, no gap
                    run = frames[first:stop]
                else:
                    run = []  # some seen already: one by one
                    for frame in frames[first:stop]:
                        if frame[1] > last_seq:
                            last_seq = frame[1]
                            run.append(frame)
                    if not run:
                        continue
                if forward_to and dest != my_id:
                    route = routes.get(dest) if dest else None
                    for frame in run:
                        raw_header = wire.frame_header(frame)
                        if route is not None and route in forward_to:
                            route._queue(raw_header, frame[5], True)
                        else:
                            for connection in forward_to:
                                connection._queue(raw_header, frame[5], True)
                if dest == 0 or dest == my_id:
                    if slot == last_slot:
                        last_list += run
                    elif slot in receiving:
                        last_slot = slot
                        deposit = deposits.get(slot)
                        if deposit is None:
                            deposit = deposits[slot] = ([], [])
                        last_list = deposit[0]
                        deposit[1].append((len(last_list), recv_seq + 1))
                        last_list += run
                    else:
                        last_slot = None  # a run of arrivals ends here
                        if slot == wire.SLOT_CONTEXT or slot == wire.SLOT_CONTEXT_EXT:
                            for k, frame in enumerate(run, recv_seq + 1):
                                package = wire.package_from_frame(frame, k)
                                if context_packages is None:
                                    context_packages = [package]
                                else:
                                    context_packages.append(package)
                    recv_seq += len(run)
            if last_sid is not None:
                seqs[last_sid] = last_seq
            self._recv_seq = recv_seq
            # Deposit while holding the lock so recv_seq order is kept per channel.
            after = full = None
            for slot, (items, runs) in deposits.items():
                channel = receiving[slot]
                handler, too_full = _deposit(channel, items, runs)
                if handler is not None:
                    if after is None:
                        after = [handler]
                    else:
                        after.append(handler)
                elif too_full is not None:
                    if full is None:
                        full = [too_full]
                    else:
                        full.append(too_full)
        if after is not None:
            for handler in after:
                handler()
        if context_packages is not None:
            for package in context_packages:
                self._recv_context_package(package, via)
        return full

    def _recv_one(self, frame: tuple, via: TcpConnection | None) -> tuple:
        """:meth:`_recv_packages` of one frame for a channel here, the usual
        case (a call, a reply) done directly: returns (True, full queues),
        or (False, None) if the frame needs the general way."""
        head, seq, dest, _, _, _ = frame
        slot, sid = _known_heads.get(head) or _split_head(head)
        if dest != 0 and dest != self._id:
            return False, None
        with self._lock:
            channel = self._receiving_channels.get(slot)
            if channel is None or len(self._connections) > 1:
                return False, None  # not for a channel, or maybe to forward
            if seq <= self._source_seqs.get(sid, 0):
                return True, None  # already seen (arrived by another path)
            self._source_seqs[sid] = seq
            if self._routes.get(sid) is not via:
                self._routes[sid] = via
            self._recv_seq = recv_seq = self._recv_seq + 1
            take = channel._take_frame
            if take is None:
                handler, full = _deposit(channel, [frame], [(0, recv_seq)])
        if take is not None:
            take(frame)
            return True, None
        if handler is not None:
            handler()
            return True, None
        return True, None if full is None else [full]

    def _take_reply(self, frame: tuple, via: TcpConnection) -> bool:
        """:meth:`_recv_one` of a lone reply, for the main thread reading
        without a signal mask (see SocketReader._take_reply): True once the
        reply is taken; it may be asked again for the same frame (a handler
        raised before the reader marked it taken). False: the general way."""
        head, seq, dest, _, _, _ = frame
        if dest != self._id:
            return False
        slot, source_id = _known_heads.get(head) or _split_head(head)
        channel = self._receiving_channels.get(slot)
        if channel is None or len(self._connections) > 1:
            return False
        if not channel._take_reply(frame, source_id, seq, self._source_seqs):
            return False
        if self._routes.get(source_id) is not via:
            self._routes[source_id] = via
        return True

    def _recv_context_package(self, package: wire.Package, via: TcpConnection) -> None:
        message = bytes(package.data)
        if message == MSG_NEW_CONNECTION:
            with self._lock:
                channels = list(self._sending_channels.values())
            for channel in channels:
                resend = getattr(channel, "_on_new_context", None)
                if resend is not None:
                    resend(package.source_id)
                elif hasattr(channel, "send_last"):
                    channel.send_last()
        elif message == MSG_CLOSE_CONNECTION:
            for connection in self.connections:
                if connection.id2 == package.source_id:
                    connection.close_on_problem(STOP_CLOSED_FROM_THERE)
        elif message.startswith(MSG_LOST_PREFIX):
            try:
                ids = [int(x, 16) for x in message[len(MSG_LOST_PREFIX) :].split()]
            except ValueError:
                logger.warning("yoton: malformed LOST message %r", message[:80])
                return
            with self._lock:
                # A context we still reach through another connection is not lost.
                ids = [i for i in ids if self._routes.get(i, via) is via]
                for i in ids:
                    self._routes.pop(i, None)
            if ids:
                self._sources_lost(ids)
        else:
            logger.warning("yoton: unknown context message %r", message[:80])
