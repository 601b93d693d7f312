"""Request/reply over short-lived TCP connections: ``do_request`` and ``RequestServer``.

One connection carries one request and one reply, like telnet, and interoperates with
the ``clientserver`` module of yoton 2.2 in both directions.

Wire convention (the 2.2 handshake convention):

* The client sends the request as UTF-8 text terminated by ``"\\r\\n"`` (appended when
  the text does not already end with it), then shuts down its write side.
* The server reads the request up to the first ``"\\r\\n"`` (or end of stream), so a
  request is a single line: use ``"\\n"`` inside multi-line requests. It sends the
  reply as UTF-8 text terminated by ``"\\r\\n"`` and closes the connection.
* The client reads the reply until the server closes the connection, so a reply may
  contain ``"\\r\\n"``.

Differences from 2.2, on purpose:

* The terminating ``"\\r\\n"`` is framing: it is removed from the request given to
  :meth:`RequestServer.handle_request` and from the text :func:`do_request` returns
  (2.2 keeps it; code written for 2.2 usually ``strip()``\\s anyway).
* :func:`do_request` returns ``None`` when the reply is not complete within the timeout
  (2.2 returned whatever part had arrived), and waits without polling.
* When nothing listens at the address, :func:`do_request` raises
  :class:`NoServerError`, which is a :class:`~yoton.errors.YotonError`, a
  :class:`ConnectionRefusedError` and (like 2.2's error) a :class:`RuntimeError`.
* The server bounds how long a client may take to send its request and how large the
  request may be, replies ``"Error: ..."`` when the handler raises, and stops at once on
  :meth:`RequestServer.stop` (no 0.25 s polling). The default ``handle_request`` echoes
  but no longer lets any client stop the server or make it sleep.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import sys
import threading
import time

from yoton.addresses import split_address
from yoton.errors import ConnectionClosedError, YotonError
from yoton.threads import start_thread

__all__ = ["NoServerError", "RequestServer", "do_request"]

logger = logging.getLogger(__name__)

_TERMINATOR = b"\r\n"
_CHUNK = 65536
#: Default largest request (in bytes, terminator excluded) a server accepts.
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
#: Default time (s) a client gets to send its whole request to a server.
DEFAULT_REQUEST_TIMEOUT = 5.0
#: Longest time (s) the server keeps reading (and discarding) after replying.
_LINGER_TIME = 1.0
#: Longest time (s) a stopping server waits for its request handler threads.
_STOP_GRACE = 5.0
_MAX_ERROR_TEXT = 300


class NoServerError(YotonError, ConnectionRefusedError, RuntimeError):
    """No server is listening at the address given to :func:`do_request`."""


def _encode_message(text: str) -> bytes:
    # Append the CRLF terminator unless the text already ends with it (2.2 convention).
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode("utf-8")


def _decode_message(data: bytes) -> str:
    # Remove one CRLF terminator and decode, replacing invalid UTF-8 sequences.
    if data.endswith(_TERMINATOR):
        data = data[: -len(_TERMINATOR)]
    return data.decode("utf-8", "replace")


def _remaining(deadline: float | None) -> float | None:
    # Seconds left until ``deadline`` (None means no deadline); raises when passed.
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def do_request(address: str, request: str, timeout: float = -1) -> str | None:
    """Send ``request`` to the server at ``address`` and return its reply text.

    ``address`` has the form ``host:port`` (see :func:`yoton.addresses.split_address`).
    The server may be a :class:`RequestServer` (ours or yoton 2.2's) or any server that
    answers one request per connection and then closes it. If ``timeout`` is larger
    than 0 and the complete reply has not arrived within that many seconds (connecting
    included), ``None`` is returned; otherwise this waits as long as it takes.

    Raises :class:`NoServerError` when the connection is refused,
    :class:`~yoton.errors.ConnectionClosedError` when the connection breaks before the
    reply is complete, and :class:`TypeError` when ``request`` is not a string.
    """
    if not isinstance(request, str):
        raise TypeError(f"request must be a str, not {type(request).__name__}.")
    host, port = split_address(address)
    deadline = None
    if timeout is not None and timeout > 0:
        deadline = time.monotonic() + timeout
    payload = _encode_message(request)

    try:
        sock = socket.create_connection((host, port), timeout=_remaining(deadline))
    except TimeoutError:
        return None
    except ConnectionRefusedError:
        raise NoServerError(
            errno.ECONNREFUSED, f"No server is listening at {host}:{port}."
        ) from None

    with sock:
        try:
            return _exchange(sock, payload, deadline)
        except TimeoutError:
            return None


def _exchange(sock: socket.socket, payload: bytes, deadline: float | None) -> str:
    # Send the request, half-close, and read the reply until the server closes.
    send_error: OSError | None = None
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
    except TimeoutError:
        raise
    except OSError as exc:
        # The server may have refused the request early (e.g. too large) and already
        # sent an explanation: still try to read it.
        send_error = exc

    chunks: list[bytes] = []
    try:
        while True:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        raise
    except OSError as exc:
        if not chunks:
            raise ConnectionClosedError(
                f"The server broke the connection before replying: {exc}"
            ) from exc
        logger.debug("connection broken after part of the reply: %s", exc)
    if send_error is not None and not chunks:
        raise ConnectionClosedError(
            f"The server closed the connection before the request was sent: "
            f"{send_error}"
        ) from send_error
    return _decode_message(b"".join(chunks))


class _RequestTooLarge(Exception):
    """Internal: the request exceeded the server's size limit."""


class RequestServer(threading.Thread):
    """A server answering one request per connection; subclass and override
    :meth:`handle_request`.

    ``run()`` serves in the calling thread, ``start()`` in a new (daemon) thread;
    ``stop()`` ends serving. With ``async_val`` True every connection is handled in
    its own thread, so a slow request does not delay others. With ``verbose`` each
    accepted connection is logged at INFO level (DEBUG otherwise).

    The socket is bound and listening when the constructor returns (binding to port 0
    picks a free port: see :attr:`port`). A client gets ``request_timeout`` seconds to
    send its request and may send at most ``max_request_size`` bytes; otherwise it gets
    an ``"Error: ..."`` reply and the connection is closed.
    """

    def __init__(
        self,
        address: str,
        async_val: bool = False,
        verbose: int = 0,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        super().__init__(name=f"RequestServer({address})", daemon=True)
        self._async = bool(async_val)
        self._verbose = verbose
        self.request_timeout = float(request_timeout)
        self.max_request_size = int(max_request_size)

        host, port = split_address(address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sys.platform.startswith("win"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:
                # Allow rebinding a port whose old connections are in TIME_WAIT.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._host, self._port = sock.getsockname()[:2]
        # A socket pair wakes the selector in run() when stop() is called.
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._stop_event = threading.Event()
        self._state_lock = threading.Lock()
        self._serving = False
        self._closed = False
        self._handlers: set[threading.Thread] = set()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (useful after binding port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """The ``host:port`` address clients can pass to :func:`do_request`."""
        return f"{self._host}:{self._port}"

    def start(self) -> None:
        """Start serving in a separate (daemon) thread."""
        super().start()

    def stop(self) -> None:
        """Stop serving; returns at once (``join()`` waits until the server is done).

        Safe to call from any thread, from ``handle_request``, and more than once.
        """
        self._stop_event.set()
        with self._state_lock:
            serving = self._serving
            if not serving and not self._closed:
                self._close_sockets()
        if serving:
            try:
                self._wake_send.send(b"x")
            except OSError:
                pass  # Already woken (buffer full) or closing.

    def _close_sockets(self) -> None:
        # Close the listening socket (freeing the port) and the wake-up pair.
        self._closed = True
        for sock in (self._listener, self._wake_recv, self._wake_send):
            try:
                sock.close()
            except OSError:
                pass

    def run(self) -> None:
        """Serve connections in the calling thread until :meth:`stop` is called."""
        with self._state_lock:
            if self._closed or self._stop_event.is_set():
                if not self._closed:
                    self._close_sockets()
                return
            self._serving = True
        level = logging.INFO if self._verbose else logging.DEBUG
        logger.log(level, "serving requests at %s", self.address)
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_recv, selectors.EVENT_READ)
            while not self._stop_event.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_recv:
                        self._drain_wakeups()
                    elif not self._stop_event.is_set():
                        self._accept_one(level)
        finally:
            selector.close()
            with self._state_lock:
                self._serving = False
                self._close_sockets()
            self._join_handlers()
            logger.log(level, "stopped serving at %s", self.address)

    def _drain_wakeups(self) -> None:
        # Empty the wake-up socket so that select() blocks again.
        try:
            while self._wake_recv.recv(64):
                pass
        except OSError:
            pass

    def _accept_one(self, level: int) -> None:
        # Accept one pending connection and handle it (here or in a new thread).
        try:
            conn, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # Out of file descriptors and the like: log and back off briefly; the
            # wait wakes at once when stop() is called.
            logger.error("accept() failed on %s: %s", self.address, exc)
            self._stop_event.wait(0.1)
            return
        logger.log(level, "handling request from %s:%s", *peer[:2])
        if self._async:
            with self._state_lock:  # the thread removes itself under this lock
                self._handlers.add(
                    start_thread(
                        self._handle_connection_thread,
                        conn,
                        name=f"RequestServer-handler-{peer[1]}",
                    )
                )
        else:
            self._handle_connection(conn)

    def _handle_connection_thread(self, conn: socket.socket) -> None:
        # Body of a per-connection thread (async mode).
        try:
            self._handle_connection(conn)
        finally:
            with self._state_lock:
                self._handlers.discard(threading.current_thread())

    def _join_handlers(self) -> None:
        # Give in-flight request handlers a bounded time to finish.
        deadline = time.monotonic() + _STOP_GRACE
        with self._state_lock:
            handlers = list(self._handlers)
        for thread in handlers:
            if thread is threading.current_thread():
                continue
            thread.join(max(0.0, deadline - time.monotonic()))

    def _handle_connection(self, conn: socket.socket) -> None:
        # Read one request, compute the reply, send it, close; never raises.
        with conn:
            try:
                reply = self._reply_for(conn)
                conn.settimeout(self.request_timeout)
                conn.sendall(_encode_message(reply))
                conn.shutdown(socket.SHUT_WR)
                self._linger(conn)
            except OSError as exc:
                logger.debug("connection ended badly: %s", exc)
            except Exception:
                logger.exception("unexpected error in RequestServer")

    def _reply_for(self, conn: socket.socket) -> str:
        # Return the reply text for the request arriving on ``conn``.
        try:
            raw = self._read_request(conn)
        except TimeoutError:
            logger.warning(
                "request not complete within %.3g s; closing", self.request_timeout
            )
            return f"Error: request not complete within {self.request_timeout:g} s."
        except _RequestTooLarge:
            logger.warning(
                "request larger than %d bytes; closing", self.max_request_size
            )
            return f"Error: request larger than {self.max_request_size} bytes."
        request = raw.decode("utf-8", "replace")
        try:
            reply = self.handle_request(request)
        except Exception as exc:
            logger.exception("handle_request() raised for request %.80r", request)
            return _short_error(f"{type(exc).__name__}: {exc}")
        if not isinstance(reply, str):
            logger.error("handle_request() returned %s, not str", type(reply).__name__)
            return _short_error(
                f"handle_request() returned {type(reply).__name__}, not str"
            )
        return reply

    def _read_request(self, conn: socket.socket) -> bytes:
        # Read up to the first CRLF or end of stream, within the time and size limits.
        deadline = time.monotonic() + self.request_timeout
        buffer = bytearray()
        limit = self.max_request_size
        while True:
            conn.settimeout(_remaining(deadline))
            chunk = conn.recv(_CHUNK)
            if not chunk:
                if len(buffer) > limit:
                    raise _RequestTooLarge
                return bytes(buffer)
            search_from = max(0, len(buffer) - 1)
            buffer += chunk
            end = buffer.find(_TERMINATOR, search_from)
            if end >= 0:
                if end > limit:
                    raise _RequestTooLarge
                return bytes(buffer[:end])
            if len(buffer) > limit + 1:
                raise _RequestTooLarge

    def _linger(self, conn: socket.socket) -> None:
        # Discard what the client still sends until it closes, so that closing our
        # end does not reset the connection and destroy the reply in flight.
        deadline = time.monotonic() + min(_LINGER_TIME, self.request_timeout)
        try:
            while True:
                conn.settimeout(_remaining(deadline))
                if not conn.recv(_CHUNK):
                    return
        except OSError:
            return

    def handle_request(self, request: str) -> str:
        """Return the reply to ``request``; override this (the default echoes)."""
        return "Requested: " + request


def _short_error(text: str) -> str:
    # Format an error reply, truncated to a reasonable length.
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 3] + "..."
    return "Error: " + text
