"""Interactive-interpreter semantics, like ``python -i``, driven by lines and callbacks.

The interpreter knows nothing of yoton: lines come from a ``LineQueue`` (fed by
whoever receives ctrl-command messages) and prompts, status values and echoed lines
go to callbacks. Output goes through the kernel stdio of ``streams.py``.
"""

from __future__ import annotations

import builtins
import codeop
import linecache
import os
import re
import select
import signal
import socket
import sys
import threading
import traceback
import types
from collections import deque
from collections.abc import Callable
from types import TracebackType

from kernel.streams import InputStream, KernelStdio, OutputBuffer
from yoton.threads import start_thread

PS1 = ">>> "
PS2 = "... "

_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MAIN_THREAD_ID = threading.main_thread().ident
_CAN_KILL_THREAD = hasattr(signal, "pthread_kill")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what the tokenizer treats as a line end


class Status:
    """The values published on the stat-interpreter state channel."""

    STARTING = "Starting"  # kernel process is setting up
    READY = "Ready"  # waiting for a new statement (prompt PS1)
    MORE = "More"  # waiting for the rest of a multi-line statement (prompt PS2)
    BUSY = "Busy"  # running user code
    INPUT = "Input"  # user code waits in input() / sys.stdin.readline()


def split_lines(message: str) -> list[str]:
    """Split a ctrl-command message into lines; one trailing newline ends the last."""
    lines = _NEWLINE.split(message)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def _noop(_text: str) -> None:
    pass


class InterruptGuard:
    """Decide whether SIGINT raises KeyboardInterrupt now or at the next safe point.

    SIGINT raises only while the main thread runs user code or waits for a line;
    anywhere else in the kernel (publishing a prompt, bookkeeping) it is remembered
    and raised when the main thread next enters an interruptible section.
    """

    def __init__(self) -> None:
        self.active = False
        self.pending = False
        #: Times the handler ran; a SigintWatcher waits on ``handled`` for it.
        self.received = 0
        # Reentrant: the handler may run again inside itself (a second SIGINT).
        self.handled = threading.Condition(threading.RLock())

    def handle_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        """Signal handler for SIGINT."""
        with self.handled:
            self.received += 1
            self.handled.notify_all()
        if self.active:
            raise KeyboardInterrupt
        self.pending = True

    def interruptible(self) -> _Section:
        """Context manager for a section where KeyboardInterrupt may be raised."""
        return _Section(self, True)

    def shielded(self) -> _Section:
        """Context manager for kernel work inside user code (e.g. publishing the
        input() prompt): SIGINT is delayed to the end of the section."""
        return _Section(self, False)


#: Sent to the main thread to make a blocking call return so a pending SIGINT
#: handler runs; its own handler does nothing. A real-time signal near the top
#: of the range, which libraries rarely use, where the platform has them.
POKE_SIGNAL: int | None = (
    signal.SIGRTMAX - 2 if hasattr(signal, "SIGRTMAX") and _CAN_KILL_THREAD else None
)
#: After a SIGINT, how long the watcher waits for its handler before each poke.
POKE_DELAYS = (0.02, 0.05, 0.1, 0.2)


class SigintWatcher:
    """Makes sure a SIGINT reaches the main thread's handler, even at a bad moment.

    CPython runs the handler only when the main thread next checks for signals.
    A SIGINT that lands just before the main thread enters a blocking call
    (``time.sleep``, a read), for instance while it waits to get the GIL back,
    or that the OS hands to a thread user code started, leaves that call
    blocked to its end. The C-level handler also writes the signal number to
    the wakeup fd: this thread reads it and, when the handler has not run
    shortly after, sends the main thread POKE_SIGNAL, whose handler does
    nothing. The blocking call returns EINTR and the pending SIGINT handler runs.
    """

    def __init__(self, guard: InterruptGuard, on_sigint: Callable[[], None]) -> None:
        self._guard = guard
        self._on_sigint = on_sigint
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._seen = 0  # SIGINTs read from the wakeup fd, resynced with the guard

    @property
    def wakeup_fd(self) -> int:
        """The fd to give ``signal.set_wakeup_fd``."""
        return self._write.fileno()

    def start(self) -> None:
        """Install the poke handler and start watching (main thread only)."""
        if POKE_SIGNAL is not None:
            signal.signal(POKE_SIGNAL, _ignore_signal)
        self._seen = self._guard.received
        start_thread(self._run, name="kernel-sigint-watcher")

    def _run(self) -> None:
        while True:
            try:
                data = self._read.recv(64)
            except OSError:
                return
            if not data:
                return
            count = data.count(signal.SIGINT)
            if count:
                self._seen += count
                self._on_sigint()
                self._see_handled()

    def _see_handled(self) -> None:
        """Wait for the handler to run; poke the main thread while it does not."""
        guard = self._guard
        for delay in POKE_DELAYS:
            with guard.handled:
                if guard.handled.wait_for(lambda: guard.received >= self._seen, delay):
                    return
            if POKE_SIGNAL is None:
                break
            signal.pthread_kill(_MAIN_THREAD_ID, POKE_SIGNAL)
        # Two SIGINTs may have run the handler once, or the main thread runs C
        # code that holds the GIL: count what we saw as handled and go on.
        self._seen = guard.received


def _ignore_signal(signum: int, frame: types.FrameType | None) -> None:
    pass


class _Section:
    __slots__ = ("_guard", "_active", "_previous")

    def __init__(self, guard: InterruptGuard, active: bool) -> None:
        self._guard = guard
        self._active = active
        self._previous: bool | None = None

    def __enter__(self) -> None:
        if threading.get_ident() != _MAIN_THREAD_ID:
            return  # signals are only ever handled in the main thread
        guard = self._guard
        previous = guard.active
        try:
            # Activate first, then look for a pending interrupt: a SIGINT between
            # the two raises at once instead of being left pending.
            guard.active = self._active
            if self._active and guard.pending:
                guard.pending = False
                raise KeyboardInterrupt
        except BaseException:
            guard.active = previous
            raise
        self._previous = previous

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._previous is None:
            return
        guard = self._guard
        guard.active = self._previous
        if guard.active and guard.pending and exc_type is None:
            guard.pending = False
            raise KeyboardInterrupt


class LineQueue:
    """Lines of ctrl-command messages in arrival order; ``get`` waits interruptibly.

    The waiting thread sleeps in select() on a socket pair that ``put`` and
    ``wake`` write to; the kernel's SigintWatcher calls ``wake`` on a SIGINT, so
    the wait ends even when the OS delivers the signal to another thread.
    """

    def __init__(self, guard: InterruptGuard | None = None) -> None:
        self.guard = guard or InterruptGuard()
        self._lock = threading.Lock()
        self._messages: deque[deque[str]] = deque()
        self._started = False  # the first message was partly consumed
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def put(self, message: str) -> None:
        """Add the lines of one message."""
        lines = deque(split_lines(message))
        with self._lock:
            self._messages.append(lines)
        self.wake()

    def wake(self) -> None:
        """Make a waiting ``get`` look again (and run a pending signal handler)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full of wake-ups already, or closed

    def get(self) -> str:
        """Take the next line, waiting for one; SIGINT interrupts the wait."""
        while True:
            with self._lock:
                if self._messages:
                    head = self._messages[0]
                    line = head.popleft()
                    self._started = bool(head)
                    if not head:
                        self._messages.popleft()
                    return line
            with self.guard.interruptible():
                select.select([self._wake_r], [], [])
                self._drain()

    def _drain(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def discard_current(self) -> int:
        """Drop the rest of a partly consumed message (a pasted block); count lines."""
        with self._lock:
            if not self._started:
                return 0
            self._started = False
            return len(self._messages.popleft())

    def close(self) -> None:
        """Release the wake-up sockets."""
        self._wake_r.close()
        self._wake_w.close()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(m) for m in self._messages)


def make_main_module() -> types.ModuleType:
    """A fresh module named ``__main__`` for user code, like that of ``python -i``."""
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    return module


def _is_kernel_file(filename: str) -> bool:
    return filename.startswith(_KERNEL_DIR)


def _skip_kernel_frames(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and _is_kernel_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def format_exception(exc: BaseException, tb: TracebackType | None) -> str:
    """Format a traceback like Python does, leaving out the kernel's own frames."""
    te = traceback.TracebackException(type(exc), exc, tb, compact=True)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not _is_kernel_file(f.filename)]
    )
    return "".join(te.format())


class Interpreter:
    """Feed lines one by one; compile with codeop; run complete input in __main__."""

    def __init__(
        self,
        output: OutputBuffer,
        lines: LineQueue,
        *,
        on_prompt: Callable[[str], None] = _noop,
        on_status: Callable[[str], None] = _noop,
        on_echo: Callable[[str], None] = _noop,
        module: types.ModuleType | None = None,
    ) -> None:
        self.lines = lines
        self.guard = lines.guard
        self.stdio = KernelStdio(output, self.read_input_line)
        self.module = module if module is not None else make_main_module()
        self.namespace = self.module.__dict__
        self._on_prompt = on_prompt
        self._on_status = on_status
        self._on_echo = on_echo
        self._compile = codeop.CommandCompiler()
        self._buffer: list[str] = []
        self._count = 0  # numbers the <python-input-N> pseudo files
        self._status: str | None = None
        self._builtin_input = builtins.input
        self._sigint_watcher: SigintWatcher | None = None

    # -- setup ---------------------------------------------------------------

    def install(self) -> None:
        """Install ``__main__``, the prompts, input() and the kernel's stdio."""
        sys.modules["__main__"] = self.module
        if not hasattr(sys, "ps1"):
            sys.ps1 = PS1
        if not hasattr(sys, "ps2"):
            sys.ps2 = PS2
        builtins.input = self.input
        self.stdio.install()

    def install_sigint_handler(self) -> None:
        """Let SIGINT interrupt user code and the wait for a line (main thread only)."""
        self._sigint_watcher = SigintWatcher(self.guard, self.lines.wake)
        signal.set_wakeup_fd(self._sigint_watcher.wakeup_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGINT, self.guard.handle_sigint)
        self._sigint_watcher.start()

    def set_status(self, status: str) -> None:
        """Publish ``status`` if it differs from the last one published."""
        if status != self._status:
            self._status = status
            self._on_status(status)

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Serve lines until user code exits; return the exit code."""
        while True:
            code = self.step()
            if code is not None:
                return code

    def step(self) -> int | None:
        """Prompt, wait for one line and handle it; an exit code if user code exited."""
        try:
            more = bool(self._buffer)
            self.stdio.flush()
            self.set_status(Status.MORE if more else Status.READY)
            self._on_prompt(_prompt("ps2" if more else "ps1"))
            line = self.lines.get()
        except KeyboardInterrupt:
            self._buffer.clear()  # like Ctrl-C at the prompt: a fresh prompt
            return None
        self._on_echo(line + "\n")
        try:
            self.push(line)
        except SystemExit as exc:
            return self._exit_code(exc)
        return None

    def push(self, line: str) -> bool:
        """Add one line of source; run it once complete; True if more is needed."""
        self._buffer.append(line)
        try:
            code = self._compile_buffer(self._buffer)
        except (SyntaxError, OverflowError, ValueError):
            if self._run_block_before(line):
                return self.push(line)
            self._buffer.clear()
            self._count += 1
            self._show_syntax_error()
            return False
        if code is None:
            return True
        self._run(self._buffer, code)
        return False

    def _compile_buffer(self, lines: list[str]) -> types.CodeType | None:
        """Compile like the console; None while incomplete."""
        filename = f"<python-input-{self._count}>"
        return self._compile("\n".join(lines), filename, "single")

    def _run_block_before(self, line: str) -> bool:
        """Handle a pasted block without its closing blank line.

        A non-indented line after a complete compound statement is a SyntaxError for
        the console; run the statement first (True), so pasted code works.
        """
        if len(self._buffer) < 2 or not line or line[0] in " \t#":
            return False
        block = [*self._buffer[:-1], ""]  # the blank line the paste lacked
        try:
            code = self._compile_buffer(block)
        except (SyntaxError, OverflowError, ValueError):
            return False
        if code is None:
            return False
        self._run(block, code)
        return True

    def _run(self, lines: list[str], code: types.CodeType) -> None:
        """Run complete input; its source is registered for tracebacks and inspect."""
        source = [text + "\n" for text in lines]
        filename = code.co_filename
        linecache.cache[filename] = (sum(map(len, source)), None, source, filename)
        self._buffer.clear()
        self._count += 1
        self._run_code(code)

    def _run_code(self, code: types.CodeType) -> None:
        self.stdio.install()
        self.set_status(Status.BUSY)
        try:
            with self.guard.interruptible():
                exec(code, self.namespace)
        except SystemExit:
            self.stdio.install()
            raise
        except BaseException as exc:
            self.stdio.install()
            if isinstance(exc, KeyboardInterrupt):
                self.lines.discard_current()
            self._show_traceback()
        else:
            self.stdio.install()

    # -- input() ---------------------------------------------------------------

    def input(self, prompt: object = "") -> str:
        """Replacement for builtins.input: the prompt goes to strm-prompt."""
        stdin = sys.stdin
        if not isinstance(stdin, InputStream):
            return self._builtin_input(prompt)
        try:
            sys.stdout.flush()
        except Exception:
            pass
        return stdin.ask(str(prompt))

    def read_input_line(self, prompt: str) -> str:
        """Take the next command line for user code (input() / sys.stdin)."""
        self.stdio.flush()
        previous = self._status or Status.BUSY
        with self.guard.shielded():
            self.set_status(Status.INPUT)
            if prompt:
                self._on_prompt(prompt)
        try:
            line = self.lines.get()
        finally:
            with self.guard.shielded():
                self.set_status(previous)
        with self.guard.shielded():
            self._on_echo(line + "\n")
        return line

    # -- errors ------------------------------------------------------------------

    def _show_syntax_error(self) -> None:
        exc_type, value, _tb = sys.exc_info()
        assert exc_type is not None and value is not None
        sys.last_type, sys.last_value, sys.last_traceback = exc_type, value, None
        text = "".join(traceback.format_exception_only(exc_type, value))
        self.stdio.stderr.write(text)

    def _show_traceback(self) -> None:
        exc_type, value, tb = sys.exc_info()
        assert exc_type is not None and value is not None
        tb = _skip_kernel_frames(tb)
        value = value.with_traceback(tb)
        sys.last_type, sys.last_value, sys.last_traceback = exc_type, value, tb
        if sys.excepthook is not sys.__excepthook__:
            try:
                sys.excepthook(exc_type, value, tb)
                return
            except BaseException as hook_exc:
                self.stdio.stderr.write(
                    "Error in sys.excepthook:\n"
                    + format_exception(hook_exc, hook_exc.__traceback__)
                    + "\nOriginal exception was:\n"
                )
        self.stdio.stderr.write(format_exception(value, tb))

    def _exit_code(self, exc: SystemExit) -> int:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        self.stdio.stderr.write(f"{code}\n")
        return 1


def _prompt(name: str) -> str:
    """The current sys.ps1 / sys.ps2 as text (user code may set them to anything)."""
    try:
        return str(getattr(sys, name))
    except Exception:
        return PS1 if name == "ps1" else PS2
