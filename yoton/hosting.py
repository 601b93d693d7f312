"""Accepting peers: the one-peer ``bind()`` and the many-peer :class:`Listener`."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from . import wire
from .addresses import is_loopback, split_address
from .connection import STATUS_HOSTING, TcpConnection, open_socket, run_handshake
from .errors import YotonError
from .events import Signal
from .threads import start_thread

if TYPE_CHECKING:
    from .context import Context

logger = logging.getLogger("yoton")


def normalize_key(key: bytes | str | None) -> bytes | None:
    """Return the key as bytes (str keys are UTF-8 encoded); None stays None."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes | bytearray) or not key:
        raise ValueError("A key must be a non-empty bytes or str value.")
    return bytes(key)


def check_key_policy(host: str, key: bytes | None, insecure: bool) -> None:
    """Refuse to accept unauthenticated peers on a non-loopback address."""
    if key is None and not insecure and not is_loopback(host):
        raise YotonError(
            f"Refusing to listen on {host} without a key: anyone on the network could "
            "connect and run code. Pass key=... (and give the same key to the "
            "connecting side), or insecure=True if you really want this."
        )


def listening_socket(
    host: str, port: int, max_tries: int, backlog: int
) -> socket.socket:
    """Bind a listening socket on the first free port of ``max_tries`` from ``port``."""
    sock = open_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    error: OSError | None = None
    for attempt in range(max(1, int(max_tries))):
        try:
            sock.bind((host, port + attempt if port else 0))
            break
        except OSError as err:
            error = err
    else:
        sock.close()
        raise OSError(
            f"Could not bind to {host}: tried {max_tries} port(s) from {port} "
            f"({error})."
        )
    sock.listen(backlog)
    return sock


def open_listening(
    address: str, max_tries: int, key: bytes | str | None, insecure: bool, backlog: int
) -> tuple[socket.socket, bytes | None]:
    """Parse the address, apply the key policy and bind; return (socket, key)."""
    host, port = split_address(address)
    key = normalize_key(key)
    check_key_policy(host, key, insecure)
    return listening_socket(host, port, max_tries, backlog), key


def _accept(listen_sock: socket.socket) -> socket.socket | None:
    try:
        sock, _ = listen_sock.accept()
    except OSError:
        return None  # closed
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _greet_as_host(
    context: Context, sock: socket.socket, key: bytes | None
) -> wire.Handshake | str:
    """Run the host side of the greeting; return it, or the reason it failed."""
    handshake = wire.Handshake(True, context.id, context._pid, key)
    try:
        run_handshake(sock, handshake)
    except (wire.HandshakeError, OSError) as err:
        try:
            sock.close()
        except OSError:
            pass
        return str(err)
    return handshake


def _report_refused(signal: Signal, source, peer: str, reason: str) -> None:
    logger.warning("yoton: refused a peer from %s: %s", peer, reason)
    signal.emit(source, peer, reason)


def host_one_peer(connection: TcpConnection, listen_sock: socket.socket, key) -> None:
    """Thread body for bind(): wait for one peer that completes the greeting."""
    context = connection._context
    while connection.is_waiting:
        sock = _accept(listen_sock)
        if sock is None:
            return
        peer = _peer_name(sock)
        result = _greet_as_host(context, sock, key)
        if isinstance(result, str):
            _report_refused(connection.refused, connection, peer, result)
            continue
        try:
            listen_sock.close()
        except OSError:
            pass
        connection._start(sock, result, STATUS_HOSTING)
        context._connection_established(connection)
        return


def _peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


class Listener:
    """Accepts any number of peers on one address; each becomes a connection.

    Created by :meth:`Context.listen`. ``accepted`` is emitted with each new
    connection and ``refused`` with (listener, peer address, reason) for peers
    whose greeting failed (a wrong key, garbage, silence).
    """

    def __init__(
        self,
        context: Context,
        listen_sock: socket.socket,
        key: bytes | None,
        name: str = "",
    ) -> None:
        self._context = context
        self._sock = listen_sock
        self._key = key
        self.name = name
        self.hostname, self.port = listen_sock.getsockname()[:2]
        self.accepted = Signal()
        self.refused = Signal()
        self.refused_count = 0
        self._closed = False
        self._thread = start_thread(self._accept_loop, name=f"yoton-listen-{self.port}")

    @property
    def closed(self) -> bool:
        """Whether the listener stopped accepting peers."""
        return self._closed

    def close(self) -> None:
        """Stop accepting peers; connections already made stay open."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            sock = _accept(self._sock)
            if sock is None:
                break
            start_thread(self._greet, sock, name="yoton-greet")

    def _greet(self, sock: socket.socket) -> None:
        peer = _peer_name(sock)
        result = _greet_as_host(self._context, sock, self._key)
        if isinstance(result, str):
            self.refused_count += 1
            _report_refused(self.refused, self, peer, result)
            return
        if self._closed:
            sock.close()
            return
        connection = TcpConnection(self._context, self.name)
        # Under the routing lock, so nothing the peer sends is routed before the
        # context knows the connection (its replies would go nowhere).
        with self._context._lock:
            connection._start(sock, result, STATUS_HOSTING)
            self._context._adopt(connection)
        self._context._connection_established(connection)
        self.accepted.emit(connection)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening"
        return f"<Listener {self.hostname}:{self.port} {state}>"
