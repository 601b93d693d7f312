"""Wiring of the kernel to yoton: its channels, the introspection replier, the run loop.

The slots are those of DESIGN.md section 2; protocol.md section 5 documents every
message. The main thread runs the interpreter; other threads: one reads
ctrl-command into the line queue, the output flusher (streams.py), the
introspection replier (yoton 'thread' mode), and a watchdog that runs the yoton
event loop so the connection's ``closed`` signal can end the kernel.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

import kernel
import yoton
from kernel import introspection
from kernel.interpreter import Interpreter, LineQueue, Status
from kernel.streams import OutputBuffer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to reach the broker at start-up
PARENT_CHECK_INTERVAL = 2.0  # seconds between checks that the parent still lives
EXIT_ORPHANED = 1  # exit code when the broker connection or the parent is gone


class Introspector(yoton.RepChannel):
    """Replier on reqp-introspect; answers from its own thread while user code runs.

    Every public method here can be called by any requester: add none lightly.
    """

    def __init__(
        self, context: yoton.Context, slot: str, namespace: Mapping[str, Any]
    ) -> None:
        super().__init__(context, slot)
        self._namespace = namespace

    def complete(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> dict[str, Any]:
        """Completions at the cursor (default: end of source); protocol.md §5."""
        return introspection.complete(self._namespace, source, line, column)

    def signature(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> dict[str, Any] | None:
        """Calltip of the call the cursor is in, or None."""
        return introspection.signature(self._namespace, source, line, column)

    def doc(
        self, source: str, line: int | None = None, column: int | None = None
    ) -> dict[str, Any] | None:
        """Documentation of the name at the cursor, or None."""
        return introspection.doc(self._namespace, source, line, column)

    def dir(self, expr: str = "") -> list[str]:
        """Attribute names of a dotted name or expression (no user code runs)."""
        return introspection.dir_(self._namespace, expr)


def kernel_info() -> dict[str, Any]:
    """What the kernel publishes on stat-startup."""
    return {
        "kernel_version": kernel.__version__,
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "platform": sys.platform,
    }


class KernelChannels:
    """The kernel's channels on one yoton context (slots of DESIGN.md section 2)."""

    def __init__(self, context: yoton.Context) -> None:
        self.command = yoton.SubChannel(context, "ctrl-command")
        self.out = yoton.PubChannel(context, "strm-out")
        self.err = yoton.PubChannel(context, "strm-err")
        self.echo = yoton.PubChannel(context, "strm-echo")
        self.prompt = yoton.PubChannel(context, "strm-prompt")
        self.status = yoton.StateChannel(context, "stat-interpreter")
        self.startup = yoton.StateChannel(context, "stat-startup", yoton.OBJECT)

    def send_output(self, target: object, text: str) -> None:
        """Send a batch of output text: target "out" or "err" (see streams.py)."""
        (self.err if target == "err" else self.out).send(text)


class Kernel:
    """One kernel process: channels, interpreter and the threads around them."""

    def __init__(self, address: str, key: bytes | None) -> None:
        # Threads inherit the signal mask: all threads started until run() unblocks
        # it again ignore SIGINT, so the OS delivers it to the main thread.
        _set_sigint_blocked(True)
        self._address = address
        self._key = key
        self._exiting = False
        self._parent = os.getppid()
        self.context = yoton.Context()
        self.channels = KernelChannels(self.context)
        self.output = OutputBuffer(self.channels.send_output)
        self.lines = LineQueue()
        self.interpreter = Interpreter(
            self.output,
            self.lines,
            on_prompt=self.channels.prompt.send,
            on_status=self.channels.status.send,
            on_echo=self.channels.echo.send,
        )
        self.introspector = Introspector(
            self.context, "reqp-introspect", self.interpreter.namespace
        )

    def run(self) -> int:
        """Connect, serve until user code exits; return the exit code."""
        threading.Thread(
            target=self._watch, name="kernel-watchdog", daemon=True
        ).start()
        connection = self.context.connect(
            self._address, timeout=CONNECT_TIMEOUT, key=self._key
        )
        connection.closed.bind(self._on_connection_closed)
        self.channels.status.send(Status.STARTING)
        self.channels.startup.send(kernel_info())
        if not connection.is_connected:
            self._on_connection_closed(connection, connection.close_reason)
        self.introspector.set_mode("thread")
        threading.Thread(
            target=self._read_commands, name="kernel-command-reader", daemon=True
        ).start()
        self.interpreter.install()
        self.interpreter.install_sigint_handler()
        _set_sigint_blocked(False)
        code = self.interpreter.run()
        self.shutdown()
        return code

    def shutdown(self) -> None:
        """Send all output, restore the real stdio and close the connection."""
        self._exiting = True
        self.output.close()
        # Late output (atexit handlers) goes to fd 1/2, which the broker reads.
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        sys.stdin = sys.__stdin__
        try:
            self.context.flush()
        except yoton.YotonError:
            log.debug("flush at exit failed", exc_info=True)
        self.context.close()

    def _read_commands(self) -> None:
        """Move ctrl-command messages into the line queue (ends when closed)."""
        while True:
            message = self.channels.command.recv(True)
            if not message:
                return  # empty messages are never sent: the channel is closed
            self.lines.put(message)

    def _watch(self) -> None:
        """Run the yoton event loop (connection signals) and watch the parent."""
        while True:
            yoton.process_events(PARENT_CHECK_INTERVAL)
            if os.getppid() != self._parent:
                self._orphaned("the parent process died")

    def _on_connection_closed(self, connection: object, reason: str) -> None:
        self._orphaned(f"the broker connection closed ({reason})")

    def _orphaned(self, why: str) -> None:
        if self._exiting:
            return
        log.warning("kernel exits: %s", why)
        os._exit(EXIT_ORPHANED)


def _set_sigint_blocked(blocked: bool) -> None:
    if hasattr(signal, "pthread_sigmask"):
        how = signal.SIG_BLOCK if blocked else signal.SIG_UNBLOCK
        signal.pthread_sigmask(how, {signal.SIGINT})


def run(address: str, key: bytes | None) -> int:
    """Run a kernel connected to ``address``; return its exit code."""
    return Kernel(address, key).run()
