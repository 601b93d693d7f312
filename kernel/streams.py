"""The kernel's stdio: batched, ordered output streams and a stdin fed by a callback.

Writes to sys.stdout and sys.stderr land in one ``OutputBuffer`` in write order; a
single flusher thread hands them to ``send(target, text)`` in batches. Because one
thread does every send, batches leave in the order they were written, and switching
from stdout to stderr sends the stdout text first. No send ever happens in the main
thread, so a KeyboardInterrupt raised there (SIGINT) cannot lose output that was
already taken from the buffer.
"""

from __future__ import annotations

import codecs
import functools
import io
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

BATCH_SIZE = 64 * 1024  # characters: send as soon as this much is pending
FLUSH_DELAY = 0.002  # seconds after the first unflushed write
MAX_PENDING = 4 * BATCH_SIZE  # characters: writers block beyond this (backpressure)
MAX_MESSAGE = 1024 * 1024  # characters per sent message; longer text is split


def write_to_fd(target: Hashable, text: str) -> None:
    """Write text for target "err" to fd 2, anything else to fd 1 (UTF-8)."""
    view = memoryview(text.encode("utf-8", "backslashreplace"))
    fd = 2 if target == "err" else 1
    while view:
        view = view[os.write(fd, view) :]


def _after_fork_in_child(ref: weakref.ref[OutputBuffer]) -> None:
    buffer = ref()
    if buffer is not None:
        buffer._write_directly()


class OutputBuffer:
    """Collect writes to several targets in order; a flusher thread sends batches.

    A batch is sent when ``batch_size`` characters are pending, ``delay`` seconds after
    the first unflushed write, or on ``flush()``. Writers block while ``max_pending``
    characters wait to be sent, so a slow ``send`` (a slow connection) slows the writer
    down instead of growing memory; nothing is ever dropped. Memory held is about
    ``max_pending`` plus one batch being sent. In a child made by ``os.fork`` (e.g.
    multiprocessing) there is no flusher thread: writes go straight to fd 1 / fd 2.
    """

    def __init__(
        self,
        send: Callable[[Hashable, str], None],
        *,
        batch_size: int = BATCH_SIZE,
        delay: float = FLUSH_DELAY,
        max_pending: int = MAX_PENDING,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        self._send = send
        self._batch_size = batch_size
        self._delay = delay
        self._max_pending = max(max_pending, batch_size)
        self._max_message = max_message
        self._lock = threading.Lock()
        self._wake_flusher = threading.Condition(self._lock)  # data or flush request
        self._progress = threading.Condition(self._lock)  # batch taken or sent
        # Pending text as segments of consecutive writes to one target.
        self._segments: list[tuple[Hashable, list[str]]] = []
        self._target: Hashable = None
        self._parts: list[str] = []
        self._pending = 0  # characters pending
        self._first_write = 0.0  # monotonic time of the first pending write
        self._written = 0  # number of writes accepted so far
        self._sent = 0  # writes[:_sent] have been handed to send()
        self._flush_requested = False
        self._closed = False
        self._direct = False  # True in a forked child: write with write_to_fd
        self._thread = threading.Thread(
            target=self._run, name="kernel-output-flusher", daemon=True
        )
        self._thread.start()
        os.register_at_fork(
            after_in_child=functools.partial(_after_fork_in_child, weakref.ref(self))
        )

    def write(self, target: Hashable, text: str) -> None:
        """Queue ``text`` for ``target``; may block while too much output is pending."""
        n = len(text)
        if not n:
            return
        if self._direct:
            write_to_fd(target, text)
            return
        with self._lock:
            if self._closed:
                raise ValueError("output buffer is closed")
            if target == self._target:
                self._parts.append(text)
            else:
                self._target = target
                self._parts = [text]
                self._segments.append((target, self._parts))
            self._written += 1
            pending = self._pending = self._pending + n
            if pending == n:
                self._first_write = time.monotonic()
                self._wake_flusher.notify()
            elif pending >= self._batch_size > pending - n:
                self._wake_flusher.notify()
            while self._pending >= self._max_pending and not self._closed:
                self._progress.wait()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything written so far was sent; False on timeout."""
        if self._direct or threading.current_thread() is self._thread:
            return True  # forked child, or a stream finalised on the flusher thread
        with self._lock:
            goal = self._written
            if self._sent >= goal or self._closed:
                return True
            self._flush_requested = True
            self._wake_flusher.notify()
            return self._progress.wait_for(
                lambda: self._sent >= goal or self._closed, timeout
            )

    def close(self, timeout: float | None = 5.0) -> None:
        """Send what is pending, then stop the flusher thread."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake_flusher.notify()
            self._progress.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _write_directly(self) -> None:
        """After fork, in the child: no flusher, no connection; use fd 1 and 2."""
        self._lock = threading.Lock()
        self._wake_flusher = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._segments = []  # the parent sends what was pending
        self._pending = 0
        self._direct = True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._segments and not self._closed:
                    self._wake_flusher.wait()
                if not self._segments:
                    return
                deadline = self._first_write + self._delay
                while (
                    self._pending < self._batch_size
                    and not self._flush_requested
                    and not self._closed
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake_flusher.wait(remaining)
                segments = self._segments
                self._segments = []
                self._target = None
                self._parts = []
                self._pending = 0
                self._flush_requested = False
                taken = self._written
                self._progress.notify_all()  # writers blocked on max_pending
            for target, parts in segments:
                self._deliver(target, "".join(parts))
            with self._lock:
                self._sent = taken
                self._progress.notify_all()

    def _deliver(self, target: Hashable, text: str) -> None:
        for start in range(0, len(text), self._max_message):
            chunk = text[start : start + self._max_message]
            try:
                try:
                    self._send(target, chunk)
                except ValueError:
                    # Lone surrogates cannot be encoded as UTF-8: escape, never drop.
                    safe = chunk.encode("utf-8", "backslashreplace").decode("utf-8")
                    if safe == chunk:
                        raise
                    self._send(target, safe)
            except Exception:
                log.exception("could not send %d characters of output", len(chunk))


class OutputStream(io.TextIOBase):
    """A text stream (sys.stdout or sys.stderr) writing into an ``OutputBuffer``."""

    def __init__(self, output: OutputBuffer, target: Hashable, name: str) -> None:
        super().__init__()
        self._output = output
        self._target = target
        self._name = name
        self._bytes: BytesWriter | None = None

    @property
    def name(self) -> str:
        """Like the name of a real std stream, e.g. ``<stdout>``."""
        return self._name

    @property
    def encoding(self) -> str:
        """The text travels as UTF-8."""
        return "utf-8"

    @property
    def errors(self) -> str:
        """Lone surrogates are escaped when sent, never raised on write."""
        return "backslashreplace"

    @property
    def line_buffering(self) -> bool:
        """Output is batched, not line buffered (a flusher sends it within ms)."""
        return False

    @property
    def buffer(self) -> BytesWriter:
        """A binary view for code that writes bytes to ``sys.stdout.buffer``."""
        if self._bytes is None:
            self._bytes = BytesWriter(self)
        return self._bytes

    def writable(self) -> bool:
        """Always writable (until closed)."""
        return True

    def isatty(self) -> bool:
        """Not a terminal."""
        return False

    def write(self, s: str) -> int:
        """Queue ``s`` for sending; returns its length."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._output.write(self._target, s)
        return len(s)

    def flush(self) -> None:
        """Wait until everything written so far was sent."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        self._output.flush()


class BytesWriter(io.RawIOBase):
    """``sys.stdout.buffer``: decodes UTF-8 bytes incrementally into the text stream."""

    def __init__(self, text: OutputStream) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        """Always writable."""
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:
        """Decode ``b`` and write it to the text stream."""
        data = bytes(b)
        text = self._decoder.decode(data)
        if text:
            self._text.write(text)
        return len(data)

    def flush(self) -> None:
        """Flush the text stream."""
        self._text.flush()


class InputStream(io.TextIOBase):
    """sys.stdin: each line read asks ``read_line(prompt)`` for the next input line."""

    def __init__(self, read_line: Callable[[str], str]) -> None:
        super().__init__()
        self._read_line = read_line
        self._rest = ""  # what a readline(size) left of the last line

    @property
    def name(self) -> str:
        """Like the name of the real stdin."""
        return "<stdin>"

    @property
    def encoding(self) -> str:
        """Lines arrive as text."""
        return "utf-8"

    def readable(self) -> bool:
        """Always readable (until closed)."""
        return True

    def isatty(self) -> bool:
        """Not a terminal."""
        return False

    def ask(self, prompt: str) -> str:
        """Read one line for ``input(prompt)``, without its newline."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if self._rest:
            line, self._rest = self._rest, ""
            return line.removesuffix("\n")
        return self._read_line(prompt)

    def readline(self, size: int | None = -1) -> str:
        """Read one line (with its newline); there is no end of file."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not self._rest:
            self._rest = self._read_line("") + "\n"
        if size is None or size < 0 or size >= len(self._rest):
            line, self._rest = self._rest, ""
        else:
            line, self._rest = self._rest[:size], self._rest[size:]
        return line

    def read(self, size: int | None = -1) -> str:
        """Read one line at most (there is no end of file to read up to)."""
        return self.readline(size)


class KernelStdio:
    """The kernel's sys.stdout/stderr/stdin; fresh ones replace any that were closed."""

    def __init__(self, output: OutputBuffer, read_line: Callable[[str], str]) -> None:
        self.output = output
        self._read_line = read_line
        self.stdout = OutputStream(output, "out", "<stdout>")
        self.stderr = OutputStream(output, "err", "<stderr>")
        self.stdin = InputStream(read_line)

    def install(self) -> None:
        """Make sys.stdout/stderr/stdin the kernel's again (user code may swap them)."""
        if self.stdout.closed:
            self.stdout = OutputStream(self.output, "out", "<stdout>")
        if self.stderr.closed:
            self.stderr = OutputStream(self.output, "err", "<stderr>")
        if self.stdin.closed:
            self.stdin = InputStream(self._read_line)
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        sys.stdin = self.stdin

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until all output written so far was sent."""
        return self.output.flush(timeout)
