"""The client library: attach to a broker, run code, read output, introspect, control.

::

    from client import Client
    c = Client.from_connection_file("~/.yoton/broker-1234.json")
    c.add_output_callback(lambda o: print(o.stream, o.text, end=""))
    c.execute("print(6 * 7)")
    names = c.complete("os.pa").result()["names"]
    c.close()  # detach; the kernel keeps running

Everything that arrives (output, status, connection events) is handled in the yoton
event loop. By default the client runs that loop in a daemon thread of its own
(``event_loop=True``); a GUI that embeds the yoton event loop
(:func:`yoton.embed_event_loop`) passes ``event_loop=False`` and gets its callbacks in
its own thread. Callbacks must not block.
"""

from __future__ import annotations

import codeop
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import yoton
from yoton.threads import start_thread

from .connection_file import ConnectionInfo, read_connection_file

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "NO_HEARTBEAT",
    "STREAMS",
    "Client",
    "Output",
    "OutputIterator",
    "Request",
]

logger = logging.getLogger("client")

#: Output streams in the order they are merged; "history" replays come as theirs.
STREAMS = ("out", "err", "echo", "prompt", "raw", "broker")

#: Connection states reported by :attr:`Client.connection_state`.
CONNECTED = "connected"
NO_HEARTBEAT = "no-heartbeat"
DISCONNECTED = "disconnected"

#: Default seconds a synchronous introspection call waits for the kernel.
REQUEST_TIMEOUT = 1.0
#: Default seconds without data from the broker before the link is reported silent.
HEARTBEAT_TIMEOUT = 3.0

_CONTROL_WORDS = ("INT", "TERM", "KILL", "RESTART", "SHUTDOWN")


class Output(NamedTuple):
    """One piece of output: ``stream`` is one of :data:`STREAMS`.

    ``replay`` is True for text the broker sent from its history when we attached.
    """

    stream: str
    text: str
    replay: bool = False


class Request:
    """The future reply of an introspection call: ``result()`` waits a short time.

    Wraps a :class:`yoton.Future`; ``await request`` works in asyncio.
    """

    def __init__(self, future: Any, timeout: float = REQUEST_TIMEOUT) -> None:
        self.future = future
        self.timeout = timeout

    def result(self, timeout: float | None = -1.0) -> Any:
        """The reply; waits ``timeout`` s (default: the request's short timeout)."""
        if timeout is not None and timeout < 0:
            timeout = self.timeout
        return self.future.result(timeout)

    def result_or_none(self, timeout: float | None = -1.0) -> Any:
        """The reply, or None (and the request cancelled) if it fails or is late."""
        try:
            return self.result(timeout)
        except (yoton.YotonError, TimeoutError):
            self.future.cancel()
            return None

    def done(self) -> bool:
        """Whether the reply (or an error) arrived."""
        return self.future.done()

    def cancel(self) -> bool:
        """Cancel the request if no replier took it yet."""
        return self.future.cancel()

    def cancelled(self) -> bool:
        """Whether the request was cancelled (or no replier took it in time)."""
        return self.future.cancelled()

    def add_done_callback(self, fn: Callable[[Request], Any]) -> None:
        """Call ``fn(request)`` once the reply is there."""
        self.future.add_done_callback(lambda _f: fn(self))

    def __await__(self):
        return self.future.__await__()

    def __repr__(self) -> str:
        return f"<client.Request {self.future!r}>"


class ObserverStateChannel(yoton.StateChannel):
    """A StateChannel that only listens: it never sends, not even ``send_last``.

    A plain StateChannel re-sends the state it last received whenever any
    context joins; a client holding a stale state ("Starting", "Dead") would
    then overwrite the current one in the kernel and in the other clients.
    """

    def send(self, message: Any) -> None:
        """Clients do not set kernel states."""
        raise yoton.LocalProtocolError("A client only observes this state.")

    def send_last(self) -> None:
        """Do nothing (see the class docstring)."""


class _EventLoopThread:
    """One daemon thread per process running the yoton event loop (if nobody does)."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._thread is not None and cls._thread.is_alive():
                return
            if yoton.events.loop_active():
                return  # a host application runs or embeds the loop
            # Born with signals blocked: Ctrl-C must reach the main thread.
            cls._thread = start_thread(
                yoton.start_event_loop, name="yoton-client-events"
            )


def needs_blank_line(code: str) -> bool:
    """Whether ``code`` would leave the interactive interpreter at a "... " prompt."""
    lines = code.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return False
    last = lines[-1]
    if last.strip() == "":
        return False
    if last[:1] in (" ", "\t"):
        return True  # still inside an indented block
    try:
        return codeop.compile_command(last, "<input>", "single") is None
    except (SyntaxError, OverflowError, ValueError):
        return False


class Client:
    """A client attached to a yoton broker (and through it, to the kernel).

    ``address`` is ``"host:port"``; ``key`` the broker's key (str or bytes; None
    only for an unauthenticated loopback broker). Raises
    :class:`yoton.AuthenticationError` for a wrong key and
    :class:`yoton.ConnectFailedError` when nobody answers. With
    ``connect=False`` nothing happens until :meth:`connect`, so callbacks added
    first also get the history the broker replays on attach.
    """

    def __init__(
        self,
        address: str,
        key: bytes | str | None = None,
        *,
        timeout: float = 5.0,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        event_loop: bool = True,
        name: str = "",
        connect: bool = True,
    ) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        self.address = address
        self.request_timeout = request_timeout
        self._key = key
        self._connect_timeout = timeout
        self._heartbeat_timeout = max(heartbeat_timeout, 0.5)
        self._name = name or f"client-{os.getpid()}"
        self._lock = threading.RLock()
        self._state_cond = threading.Condition(self._lock)
        self._drain_lock = threading.Lock()
        self._output_callbacks: list[Callable[[Output], Any]] = []
        self._status_callbacks: list[Callable[[str], Any]] = []
        self._info_callbacks: list[Callable[[dict], Any]] = []
        self._connection_callbacks: list[Callable[[str, str], Any]] = []
        self._iter_queues: list[queue.SimpleQueue] = []
        self._status = ""
        self._kernel_info: dict = {}
        self._connection_state = DISCONNECTED
        self._close_reason = ""
        self._closed = False
        self._connection: Any = None

        ctx = self._ctx = yoton.Context()
        self._pub_command = yoton.PubChannel(ctx, "ctrl-command")
        self._pub_broker = yoton.PubChannel(ctx, "ctrl-broker")
        self._subs: dict[Any, str] = {}
        for stream in STREAMS:
            self._subs[yoton.SubChannel(ctx, "strm-" + stream)] = stream
        self._sub_history = yoton.SubChannel(ctx, "strm-history", yoton.OBJECT)
        self._subs[self._sub_history] = "history"
        self._stat = ObserverStateChannel(ctx, "stat-interpreter")
        self._startup = ObserverStateChannel(ctx, "stat-startup", yoton.OBJECT)
        self._req = yoton.ReqChannel(ctx, "reqp-introspect")
        for sub in self._subs:
            sub.received.bind(self._on_stream_received)
        self._stat.received.bind(self._on_status_received)
        self._startup.received.bind(self._on_startup_received)
        self._history: list[Output] = []
        if event_loop:
            _EventLoopThread.ensure()
        if connect:
            self.connect()

    @classmethod
    def from_connection_file(cls, path: str | os.PathLike[str], **kwargs) -> Client:
        """Attach through a connection file (JSON with "address" and "key")."""
        info = read_connection_file(os.path.expanduser(os.fspath(path)))
        return cls.from_info(info, **kwargs)

    @classmethod
    def from_info(cls, info: ConnectionInfo, **kwargs) -> Client:
        """Attach to the broker described by a :class:`ConnectionInfo`."""
        return cls(info.address, info.key, **kwargs)

    # -- connection -----------------------------------------------------------------

    def connect(self) -> None:
        """Attach to the broker (done by the constructor unless connect=False).

        On failure the client is closed and the error raised.
        """
        if self._connection is not None:
            raise RuntimeError("The client is connected already.")
        try:
            self._connect()
        except BaseException:
            self._closed = True
            self._ctx.close()
            raise

    def _connect(self) -> None:
        conn = self._ctx.connect(
            self.address, timeout=self._connect_timeout, name=self._name, key=self._key
        )
        conn.timeout = self._heartbeat_timeout
        # The broker gives clients seconds before it worries: no need for 4 Hz.
        conn.heartbeat_interval = 1.0
        conn.timedout.bind(self._on_timedout)
        conn.closed.bind(self._on_closed)
        with self._lock:
            self._connection = conn
            self._close_reason = ""
        self._set_connection_state(CONNECTED, "")

    def reconnect(self, timeout: float | None = None) -> None:
        """Attach again to the same broker (after the connection was lost)."""
        if self._closed:
            raise yoton.ConnectionClosedError("This client was closed.")
        with self._lock:
            old, self._connection = self._connection, None
        if old is not None:
            old.closed.unbind(self._on_closed)
            old.timedout.unbind(self._on_timedout)
            old.close("reconnecting")
        if timeout is not None:
            self._connect_timeout = timeout
        self._connect()

    @property
    def connection(self) -> Any:
        """The yoton connection to the broker (None while disconnected)."""
        return self._connection

    @property
    def connection_state(self) -> str:
        """CONNECTED, NO_HEARTBEAT (the broker went silent) or DISCONNECTED."""
        return self._connection_state

    @property
    def connected(self) -> bool:
        """Whether the connection to the broker is up (possibly silent)."""
        return self._connection_state != DISCONNECTED

    @property
    def close_reason(self) -> str:
        """Why the connection was lost ('' while connected)."""
        return self._close_reason

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _on_timedout(self, conn: Any, timed_out: bool) -> None:
        if conn is not self._connection:
            return
        if timed_out:
            self._set_connection_state(
                NO_HEARTBEAT, f"no data from the broker for {conn.timeout:g} s"
            )
        else:
            self._set_connection_state(CONNECTED, "heartbeat back")

    def _on_closed(self, conn: Any, reason: str) -> None:
        with self._lock:
            if conn is not self._connection:
                return
            self._connection = None
            self._close_reason = reason
        self._set_connection_state(DISCONNECTED, reason)

    def _set_connection_state(self, state: str, reason: str) -> None:
        with self._lock:
            if state == self._connection_state:
                return
            self._connection_state = state
            self._state_cond.notify_all()
            callbacks = list(self._connection_callbacks)
            queues = list(self._iter_queues)
        if state == DISCONNECTED:
            for q in queues:
                q.put(None)  # wake iterators so they can notice
        for callback in callbacks:
            _call(callback, state, reason)

    def close(self) -> None:
        """Detach from the broker; the kernel keeps running."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn, self._connection = self._connection, None
        try:
            self._ctx.flush(1.0)
        except Exception:  # pragma: no cover - best effort
            logger.debug("flush before close failed", exc_info=True)
        if conn is not None:
            conn.closed.unbind(self._on_closed)
            conn.timedout.unbind(self._on_timedout)
        self._ctx.close()
        self._set_connection_state(DISCONNECTED, "closed by the user")
        with self._lock:
            queues = list(self._iter_queues)
        for q in queues:
            q.put(None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<client.Client {self.address} {self._connection_state} "
            f"kernel={self._status or '?'}>"
        )

    # -- sending --------------------------------------------------------------------

    def execute(self, code: str, *, complete_block: bool = True) -> None:
        """Send a line or a block of code to the kernel, as if typed at its prompt.

        With ``complete_block`` a blank line is added when the code would
        otherwise leave the interpreter waiting for more (``def``, ``for`` ...).
        """
        if complete_block and needs_blank_line(code):
            code = code.rstrip("\n") + "\n\n"
        self._send_command(code)

    def send_line(self, line: str) -> None:
        """Send one line exactly as typed (code, or the answer to input())."""
        self._send_command(line)

    def _send_command(self, text: str) -> None:
        if self._closed:
            raise yoton.ConnectionClosedError("This client was closed.")
        if text == "":
            text = "\n"  # an empty message is not sent; one newline is one blank line
        self._pub_command.send(text)

    def _send_broker(self, word: str) -> None:
        if self._closed:
            raise yoton.ConnectionClosedError("This client was closed.")
        assert word in _CONTROL_WORDS
        self._pub_broker.send(word)

    def interrupt(self) -> None:
        """Interrupt the running code (SIGINT, KeyboardInterrupt in the kernel)."""
        self._send_broker("INT")

    def terminate(self) -> None:
        """Ask the kernel process to end (SIGTERM)."""
        self._send_broker("TERM")

    def kill(self) -> None:
        """Kill the kernel process (SIGKILL); the broker keeps running."""
        self._send_broker("KILL")

    def restart(self) -> None:
        """Have the broker start a new kernel (killing the current one if needed)."""
        self._send_broker("RESTART")

    def shutdown(self) -> None:
        """Stop the kernel and the broker; other clients are disconnected."""
        self._send_broker("SHUTDOWN")
        self._ctx.flush(2.0)

    # -- introspection --------------------------------------------------------------

    def _request(self, method: str, *args: Any) -> Request:
        if self._closed:
            raise yoton.ConnectionClosedError("This client was closed.")
        future = getattr(self._req, method)(*args)
        return Request(future, self.request_timeout)

    def complete(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> Request:
        """Completions at the cursor (default: the end of ``source``).

        The reply is ``{"names": [...], "types": [...], "prefix_length": n}``.
        """
        return self._request("complete", source, line, column)

    def signature(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> Request:
        """Calltip of the call the cursor is in: ``{"name", "signatures", "index"}``."""
        return self._request("signature", source, line, column)

    def doc(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> Request:
        """Documentation of the name at the cursor: ``{"name", "type", "doc", ...}``."""
        return self._request("doc", source, line, column)

    def dir(self, expr: str) -> Request:
        """The attribute names of the expression ``expr`` in the kernel's namespace."""
        return self._request("dir", expr)

    # -- state ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """The kernel status: Starting, Ready, Busy, More, Input, Stalled, Dead..."""
        return self._status

    @property
    def kernel_info(self) -> dict:
        """What the kernel told about itself (python version, executable, pid, cwd)."""
        return dict(self._kernel_info)

    def wait_for_status(
        self, *statuses: str, timeout: float | None = None
    ) -> str | None:
        """Wait until the kernel status is one of ``statuses`` (any, if none given).

        Returns the status, or None on timeout or when the client is closed.
        """

        def ready() -> bool:
            if self._closed:
                return True
            if statuses:
                return self._status in statuses
            return bool(self._status)

        with self._state_cond:
            if not self._state_cond.wait_for(ready, timeout) or self._closed:
                return None
            return self._status

    def wait_for_kernel_info(self, timeout: float | None = None) -> dict | None:
        """Wait until the kernel published its info; None on timeout or close."""
        with self._state_cond:
            if not self._state_cond.wait_for(
                lambda: self._closed or bool(self._kernel_info), timeout
            ):
                return None
            return None if self._closed else dict(self._kernel_info)

    def _on_status_received(self, channel: Any) -> None:
        status = channel.recv()
        with self._lock:
            if status == self._status:
                return
            self._status = status
            self._state_cond.notify_all()
            callbacks = list(self._status_callbacks)
        for callback in callbacks:
            _call(callback, status)

    def _on_startup_received(self, channel: Any) -> None:
        info = channel.recv()
        if not isinstance(info, dict):
            return
        with self._lock:
            self._kernel_info = dict(info)
            self._state_cond.notify_all()
            callbacks = list(self._info_callbacks)
        for callback in callbacks:
            _call(callback, dict(info))

    # -- output ---------------------------------------------------------------------

    def drain(self) -> int:
        """Dispatch every output message received so far, in arrival order.

        The event loop calls this on arrival; returns how many were dispatched.
        """
        count = 0
        subs = list(self._subs)
        with self._drain_lock:
            while True:
                channel = yoton.select_sub_channel(*subs)
                if channel is None:
                    return count
                stream = self._subs[channel]
                for message in channel.recv_selected():
                    if stream == "history":
                        replay = [
                            Output(s, t, True) for s, t in _history_items(message)
                        ]
                        self._history = replay
                        for output in replay:
                            self._dispatch(output)
                            count += 1
                    else:
                        self._dispatch(Output(stream, message))
                        count += 1

    @property
    def history(self) -> list[Output]:
        """The output the broker replayed when we attached (oldest first)."""
        return list(self._history)

    def _on_stream_received(self, _channel: Any) -> None:
        self.drain()

    def _dispatch(self, output: Output) -> None:
        with self._lock:
            callbacks = list(self._output_callbacks)
            queues = list(self._iter_queues)
        for q in queues:
            q.put(output)
        for callback in callbacks:
            _call(callback, output)

    def iter_output(self, timeout: float | None = None) -> OutputIterator:
        """Iterate over output from this call on, in arrival order.

        Ends after ``timeout`` seconds without output (never, with None), or
        when the client is closed or the connection is lost. Close the
        iterator (or use it as a context manager) when done with it early.
        """
        return OutputIterator(self, timeout)

    def run(self, code: str, timeout: float | None = 30.0) -> str:
        """Execute ``code`` and return its stdout and stderr text once it finished.

        "Finished" means the kernel echoed every line sent and prompted again.
        Meant for scripts and tests: output of other clients' code running at the
        same time mixes in. Raises TimeoutError if the kernel takes longer than
        ``timeout`` seconds between two pieces of output.
        """
        if needs_blank_line(code):
            code = code.rstrip("\n") + "\n\n"
        expected = split_command_lines(code)
        parts: list[str] = []
        matched = 0
        with self.iter_output(timeout) as iterator:
            self._send_command(code)
            for item in iterator:
                if item.replay:
                    continue
                if item.stream == "echo" and matched < len(expected):
                    for line in split_command_lines(item.text):
                        if matched < len(expected) and line == expected[matched]:
                            matched += 1
                elif matched == 0:
                    continue  # output of code that ran before ours
                elif item.stream in ("out", "err", "raw"):
                    parts.append(item.text)
                elif item.stream == "prompt" and matched == len(expected):
                    return "".join(parts)
        raise TimeoutError(f"The kernel did not finish running {code[:40]!r}.")

    # -- callbacks ------------------------------------------------------------------

    def add_output_callback(self, fn: Callable[[Output], Any]) -> None:
        """Call ``fn(output)`` for every piece of output, in arrival order."""
        with self._lock:
            self._output_callbacks.append(fn)

    def add_status_callback(self, fn: Callable[[str], Any]) -> None:
        """Call ``fn(status)`` when the kernel status changes."""
        with self._lock:
            self._status_callbacks.append(fn)

    def add_kernel_info_callback(self, fn: Callable[[dict], Any]) -> None:
        """Call ``fn(info)`` when the kernel publishes its info (after a (re)start)."""
        with self._lock:
            self._info_callbacks.append(fn)

    def add_connection_callback(self, fn: Callable[[str, str], Any]) -> None:
        """Call ``fn(state, reason)`` when the connection state changes."""
        with self._lock:
            self._connection_callbacks.append(fn)

    def remove_callback(self, fn: Callable[..., Any]) -> None:
        """Remove ``fn`` from every callback list it is in."""
        with self._lock:
            for callbacks in (
                self._output_callbacks,
                self._status_callbacks,
                self._info_callbacks,
                self._connection_callbacks,
            ):
                while fn in callbacks:
                    callbacks.remove(fn)


class OutputIterator:
    """Output of a client from its creation on; see :meth:`Client.iter_output`."""

    def __init__(self, client: Client, timeout: float | None) -> None:
        self._client = client
        self._timeout = timeout
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._open = True
        with client._lock:
            client._iter_queues.append(self._queue)

    def __iter__(self) -> OutputIterator:
        return self

    def __next__(self) -> Output:
        client = self._client
        while self._open and not client._closed:
            try:
                item = self._queue.get(timeout=self._timeout)
            except queue.Empty:
                break
            if item is not None:
                return item
            if client._connection_state == DISCONNECTED:
                break
        self.close()
        raise StopIteration

    def close(self) -> None:
        """Stop receiving output."""
        self._open = False
        client = self._client
        with client._lock:
            if self._queue in client._iter_queues:
                client._iter_queues.remove(self._queue)

    def __enter__(self) -> OutputIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def split_command_lines(message: str) -> list[str]:
    """The lines the kernel makes of a ctrl-command message (one final newline
    ends the last line)."""
    lines = message.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def _history_items(message: Any) -> list[tuple[str, str]]:
    """Validate a strm-history message: a list of [stream, text] pairs."""
    items = []
    if not isinstance(message, (list, tuple)):
        return items
    for item in message:
        if (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], str)
        ):
            stream = item[0][5:] if item[0].startswith("strm-") else item[0]
            if stream in STREAMS:
                items.append((stream, item[1]))
    return items


def _call(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        logger.exception("Exception in client callback %r", callback)
