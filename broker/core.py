"""The broker: launches the kernel, relays it to any number of clients, watches it.

One yoton context holds a listener for the clients and a one-peer ``bind`` for
the kernel; the context forwards every package between them, so commands and
output need no code here. What the broker adds (see protocol.md section 6): its own
channels, the Stalled/Dead states, the output history for late joiners, the
ctrl-broker commands and the bookkeeping of slow and dead clients.

Threads: every state change happens in the thread running the yoton event loop
(the main thread in :meth:`Broker.run`); the kernel's output reader, its exit
waiter and the OS signal reader only post events to it or route packages.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yoton
from yoton.addresses import is_loopback, split_address
from yoton.threads import start_thread

from .channels import BrokerPubChannel, BrokerStateChannel, Injector
from .commands import (
    STEP_SIGNALS,
    Command,
    Step,
    parse_command,
    termination_schedule,
)
from .connfile import (
    connection_info,
    default_connection_file,
    remove_connection_file,
    write_connection_file,
)
from .history import History
from .kernel_process import KernelProcess
from .status import BROKER_STATES, StatusTracker, describe_exit

logger = logging.getLogger("broker")

#: Seconds without data from the kernel before it is reported Stalled.
KERNEL_TIMEOUT = 0.6
#: Seconds a client may be silent before its connection counts as timed out ...
CLIENT_TIMEOUT = 10.0
#: ... and seconds it may then stay silent before the broker closes it.
CLIENT_GRACE = 20.0
#: Seconds between checks for packages dropped for slow clients (while any attach).
DROP_CHECK_INTERVAL = 2.0
#: Seconds a launched kernel has to connect before it is terminated.
START_TIMEOUT = 60.0
#: Refused would-be kernels reported on strm-broker (the rest are only logged).
MAX_REFUSAL_MESSAGES = 3
#: Seconds spent at shutdown sending the last messages to the clients.
FLUSH_TIMEOUT = 1.0

#: The kernel's output slots kept in the history, as named in history items.
KERNEL_STREAMS = ("strm-out", "strm-err", "strm-echo", "strm-prompt")


class BrokerError(Exception):
    """The broker cannot start as asked (the message says why)."""


def parse_listen_address(text: str) -> tuple[str, int]:
    """Split a --listen value ("host", "host:port", ":port") into (host, port)."""
    text = text.strip()
    if ":" not in text:
        text += ":0"
    host, _, port = text.rpartition(":")
    try:
        return split_address(f"{host or 'localhost'}:{port or 0}")
    except ValueError as err:
        raise BrokerError(f"Bad --listen address {text!r}: {err}") from None


def advertised_address(host: str, port: int) -> str:
    """The "host:port" clients should connect to (a wildcard becomes the hostname)."""
    if host in ("", "0.0.0.0"):
        host = socket.gethostname()
    return f"{host}:{port}"


@dataclass
class _Client:
    """Bookkeeping for one attached client connection."""

    connection: yoton.Connection
    reported_dropped: int = 0
    silent_token: int = 0  # changes whenever the client's silence starts or ends
    silent: bool = False


class Broker:
    """A broker process: call :meth:`run` from the main thread.

    ``insecure`` allows clients without a key (loopback addresses only); otherwise
    a random key is generated and written to the connection file.
    """

    def __init__(
        self,
        listen: str = "localhost",
        *,
        python: str | None = None,
        connection_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        stdout: TextIO | None = None,
        kernel_timeout: float = KERNEL_TIMEOUT,
        client_timeout: float = CLIENT_TIMEOUT,
        client_grace: float = CLIENT_GRACE,
        start_timeout: float = START_TIMEOUT,
        schedule: list[tuple[float, Step]] | None = None,
    ) -> None:
        self.host, self.port = parse_listen_address(listen)
        if insecure and not is_loopback(self.host):
            raise BrokerError(
                f"--insecure is only allowed on a loopback address, not {self.host}: "
                "anyone who can reach the port could run code."
            )
        self.key: str | None = None if insecure else secrets.token_hex(32)
        self.python = python or sys.executable
        self.pid = os.getpid()
        self.connection_file = Path(
            connection_file if connection_file else default_connection_file(self.pid)
        ).absolute()
        self.address = ""
        self._stdout = stdout if stdout is not None else sys.stdout
        self._kernel_timeout = kernel_timeout
        self._client_timeout = client_timeout
        self._client_grace = client_grace
        self._start_timeout = start_timeout
        self._schedule = schedule or termination_schedule()
        self.history = History()
        self.tracker = StatusTracker()
        self._clients: dict[yoton.Connection, _Client] = {}
        self._client_view = ""  # the stat-interpreter value clients hold now
        self._kernel: KernelProcess | None = None
        self._kernel_conn: yoton.Connection | None = None
        self._generation = 0
        self._restarts = 0
        self._kernel_refusals = 0
        self._restart_pending = False
        self._shutting_down = False
        self._closed_dropped = 0  # dropped counts of connections already closed
        self._last_exit: dict[str, Any] = {}
        self._file_written = False
        self._ctx: yoton.Context | None = None
        self._listener: yoton.Listener | None = None
        self._drop_timer = yoton.Timer(DROP_CHECK_INTERVAL, oneshot=False)
        self._drop_timer.bind(self._check_dropped)

    # -- setting up --------------------------------------------------------------

    def start(self) -> None:
        """Create the context, channels and listener; write the connection file."""
        ctx = self._ctx = yoton.Context()
        self._ctrl = yoton.SubChannel(ctx, "ctrl-broker")
        self._ctrl.received.bind(self._on_ctrl)
        self._raw_pub = BrokerPubChannel(ctx, "strm-raw")
        self._raw = Injector(ctx, self._raw_pub)
        self._broker_pub = BrokerPubChannel(ctx, "strm-broker")
        self._history_pub = BrokerPubChannel(ctx, "strm-history", yoton.OBJECT)
        self._status = BrokerStateChannel(
            ctx, "stat-interpreter", on_received=self._on_status_received
        )
        self._info = BrokerStateChannel(
            ctx, "stat-broker", yoton.OBJECT, on_received=self._on_info_received
        )
        self._startup = BrokerStateChannel(
            ctx, "stat-startup", yoton.OBJECT, on_received=self._on_startup_received
        )
        self._streams: dict[yoton.SubChannel, str] = {}
        for name in KERNEL_STREAMS:
            channel = yoton.SubChannel(ctx, name)
            channel.received.bind(self._on_stream)
            self._streams[channel] = name
        listener = self._listener = ctx.listen(
            f"{self.host}:{self.port}", key=self.key, insecure=self.key is None
        )
        listener.accepted.bind(self._on_client_accepted)
        listener.refused.bind(self._on_client_refused)
        self.port = listener.port
        self.address = advertised_address(self.host, listener.port)
        info = connection_info(
            self.address,
            self.key,
            self.pid,
            python=self.python,
            version=yoton.__version__,
            created=time.time(),
        )
        write_connection_file(self.connection_file, info)
        self._file_written = True
        self._publish_info()

    def run(self, handle_signals: bool = True) -> int:
        """Start, launch the kernel and serve until shut down; return the exit code.

        With ``handle_signals`` (main thread only) SIGTERM, SIGINT and SIGHUP
        shut the broker down; this thread runs the yoton event loop.
        """
        try:
            if handle_signals:
                self._install_signal_handlers()
            self.start()
            self._print(
                f"yoton-broker listening on {self.address}, "
                f"connection file {self.connection_file}"
            )
            self.launch_kernel()
            yoton.start_event_loop()
        finally:
            self._final_cleanup()
        return 0

    def _install_signal_handlers(self) -> None:
        # The C-level handler writes the signal number to a pipe; a thread reads
        # it and posts the shutdown to the event loop. A Python-level handler
        # that touches locks could deadlock with the interrupted main thread.
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _ignore_signal)

        def read_signals() -> None:
            while True:
                data = os.read(read_fd, 64)
                if not data:
                    return
                for signum in data:
                    yoton.call_later(self._on_os_signal, 0, signum)

        start_thread(read_signals, name="broker-signals")

    def _on_os_signal(self, signum: int) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        self.shutdown(f"received {signal.Signals(signum).name}")

    # -- output helpers ----------------------------------------------------------

    def _print(self, text: str) -> None:
        try:
            print(text, file=self._stdout, flush=True)
        except (OSError, ValueError):
            pass

    def say(self, text: str, *, to_stdout: bool = False, dest_id: int = 0) -> None:
        """Send a human-readable broker message on strm-broker (and log it)."""
        logger.info("%s", text)
        if to_stdout:
            self._print(text)
        line = text if text.endswith("\n") else text + "\n"
        if dest_id:
            self._broker_pub.send_to(line, dest_id)
        else:
            self.history.append("strm-broker", line)
            self._broker_pub.send(line)

    def _publish_status(self, value: str) -> None:
        """Make the clients' stat-interpreter ``value`` (if they hold another)."""
        if value == self._client_view:
            return
        self._client_view = value
        self._status.send_to(value, [c.id2 for c in self._clients])

    def _publish_info(self) -> None:
        kernel, conn = self._kernel, self._kernel_conn
        dropped = self._closed_dropped + sum(c.dropped for c in self._clients)
        self._info.send(
            {
                "pid": self.pid,
                "address": self.address,
                "connection_file": str(self.connection_file),
                "python": self.python,
                "version": yoton.__version__,
                "clients": len(self._clients),
                "kernel_pid": kernel.pid if kernel is not None else 0,
                "kernel_alive": bool(kernel is not None and kernel.alive),
                "restarts": self._restarts,
                "dropped": dropped,
                "kernel_dropped": conn.dropped if conn is not None else 0,
                **self._last_exit,
            }
        )

    def _on_raw_output(self, text: str) -> None:
        # In the kernel's output reader thread.
        self.history.append("strm-raw", text)
        self._raw.send(text, self._kernel_conn)

    # -- the kernel --------------------------------------------------------------

    @property
    def kernel(self) -> KernelProcess | None:
        """The current (or last) kernel process."""
        return self._kernel

    def launch_kernel(self) -> None:
        """Start a kernel unless one runs; report a failure to start."""
        if self._shutting_down or (self._kernel is not None and self._kernel.alive):
            return
        self._generation += 1
        key = secrets.token_bytes(32)
        conn = self._ctx.bind("127.0.0.1:0", key=key, name="kernel")
        conn.timeout = self._kernel_timeout
        # The kernel needs no heartbeats from us (it sees us go on EOF); ours
        # only keep its receiving thread waking up.
        conn.heartbeat_interval = 2.0
        conn.timedout.bind(self._on_kernel_timedout)
        conn.refused.bind(self._on_kernel_refused)
        kernel = KernelProcess(
            self._generation,
            self.python,
            f"127.0.0.1:{conn.port1}",
            key,
            self._on_raw_output,
            self._on_kernel_exit_thread,
        )
        self._kernel, self._kernel_conn = kernel, conn
        self._publish_status(self.tracker.launched())
        try:
            kernel.start()
        except OSError as err:
            conn.close()
            self._publish_status(self.tracker.exited())
            self._last_exit = {"kernel_error": str(err)}
            self.say(
                f"Could not start the kernel with --python {self.python!r}: "
                f"{err.strerror or err}. Send RESTART to try again.",
                to_stdout=True,
            )
            self._publish_info()
            return
        logger.info("launched kernel pid %d (%s)", kernel.pid, self.python)
        yoton.call_later(self._check_started, self._start_timeout, kernel)
        self._publish_info()

    def _check_started(self, kernel: KernelProcess) -> None:
        if kernel is self._kernel and kernel.alive and self._kernel_conn.is_waiting:
            self.say(
                f"The kernel did not connect within {self._start_timeout:g} s; "
                "stopping it."
            )
            self.terminate_kernel()

    def _on_kernel_refused(
        self, conn: yoton.Connection, peer: str, reason: str
    ) -> None:
        self._kernel_refusals += 1
        if self._kernel_refusals <= MAX_REFUSAL_MESSAGES:
            self.say(f"Refused a process that tried to connect as the kernel: {reason}")
        else:
            logger.warning("refused a would-be kernel from %s: %s", peer, reason)

    def _on_kernel_timedout(self, conn: yoton.Connection, timed_out: bool) -> None:
        kernel = self._kernel
        if conn is not self._kernel_conn or kernel is None or not kernel.alive:
            return
        if timed_out == self.tracker.stalled:
            return
        self._publish_status(self.tracker.set_stalled(timed_out))
        if timed_out:
            self.say(
                "Kernel stalled: no heartbeat for "
                f"{conn.timeout:g} s (holding the GIL in extension code, or stopped)"
            )
        else:
            self.say("Kernel responds again")

    def _from_kernel(self, source_id: int) -> bool:
        kernel, conn = self._kernel, self._kernel_conn
        return bool(
            kernel is not None and kernel.alive and conn is not None and conn.id2
        ) and (source_id == conn.id2)

    def _on_status_received(self, items: list[tuple[int, str]]) -> None:
        """stat-interpreter states arrived; keep the clients' view right."""
        for source_id, value in items:
            if self._from_kernel(source_id) and value not in BROKER_STATES:
                self.tracker.kernel_said(value)
            # Either way the state was forwarded to the clients: they hold it now.
            # A stale one (resent by a client, an old kernel, a broker state echoed
            # back) is corrected below.
            self._client_view = value
        self._publish_status(self.tracker.current)

    def _on_startup_received(self, items: list[tuple[int, Any]]) -> None:
        """stat-startup arrived: keep the kernel's, correct stale resends."""
        stale = False
        for source_id, info in items:
            # The pid check: a kernel's channel may resend an older kernel's info
            # that a client resent to it.
            if self._from_kernel(source_id) and _pid_of(info) == self._kernel.pid:
                self._startup.send_to(info, [])  # remember it; it reached everyone
                stale = False
            else:
                stale = stale or info != self._startup.own_message
        if stale:
            self._startup.reassert([c.id2 for c in self._clients])

    def _on_info_received(self, items: list[tuple[int, Any]]) -> None:
        """A client resent a stat-broker state: send the current one again."""
        if any(info != self._info.own_message for _, info in items):
            self._info.reassert()

    def _on_kernel_exit_thread(self, kernel: KernelProcess) -> None:
        # In the kernel's waiter thread.
        yoton.call_later(self._on_kernel_exit, 0, kernel)

    def _on_kernel_exit(self, kernel: KernelProcess) -> None:
        if kernel is not self._kernel or kernel.reported:
            return
        kernel.reported = True
        conn = self._kernel_conn
        never_connected = conn.is_waiting or (not conn.is_alive and not conn.id2)
        if conn.is_waiting:
            conn.close()
        elif conn.is_alive:
            conn.close_on_problem("The kernel process exited.")
        returncode = kernel.returncode
        self._publish_status(self.tracker.exited())
        self._last_exit = {
            "kernel_returncode": returncode,
            "kernel_exit": describe_exit(returncode, kernel.terminating),
        }
        if never_connected and not kernel.terminating:
            self.say(
                f"Kernel failed to start: {describe_exit(returncode)} before it "
                f"connected (--python {self.python!r}); see strm-raw for its output. "
                "Send RESTART to try again.",
                to_stdout=True,
            )
        else:
            self.say(describe_exit(returncode, kernel.terminating))
        self._publish_info()
        if self._restart_pending and not self._shutting_down:
            self._restart_pending = False
            self.launch_kernel()

    def interrupt_kernel(self) -> None:
        """Send SIGINT to the kernel."""
        kernel = self._kernel
        if kernel is None or not kernel.send_signal(signal.SIGINT):
            self.say("No kernel runs: nothing to interrupt.")

    def kill_kernel(self) -> None:
        """Send SIGKILL to the kernel."""
        kernel = self._kernel
        if kernel is None or not kernel.alive:
            self.say("No kernel runs: nothing to kill.")
            return
        kernel.terminating = True
        kernel.send_signal(signal.SIGKILL)

    def terminate_kernel(self) -> None:
        """Stop the kernel: close its connection, then SIGINT, then SIGKILL."""
        kernel = self._kernel
        if kernel is None or not kernel.alive:
            self.say("No kernel runs: nothing to terminate.")
            return
        if kernel.terminating:
            return
        kernel.terminating = True
        for offset, step in self._schedule:
            yoton.call_later(self._terminate_step, offset, kernel, step)

    def _terminate_step(self, kernel: KernelProcess, step: Step) -> None:
        if not kernel.alive:
            return
        if step is Step.CLOSE:
            if kernel is self._kernel and self._kernel_conn.is_alive:
                self._kernel_conn.close_on_problem("The broker stops the kernel.")
        else:
            kernel.send_signal(STEP_SIGNALS[step])

    def restart_kernel(self) -> None:
        """Stop the kernel if it runs, then start a new one."""
        self._restarts += 1
        self.say("Restarting kernel")
        kernel = self._kernel
        if kernel is not None and kernel.alive:
            self._restart_pending = True
            self.terminate_kernel()
        else:
            self.launch_kernel()

    def _stop_kernel_now(self) -> None:
        """Stop the kernel, waiting for it (used at shutdown)."""
        kernel = self._kernel
        if kernel is None or not kernel.alive:
            return
        kernel.terminating = True
        start = time.monotonic()
        for offset, step in self._schedule:
            delay = offset - (time.monotonic() - start)
            if delay > 0 and kernel.wait(delay) is not None:
                break
            self._terminate_step(kernel, step)
        if kernel.wait(5.0) is None:
            logger.error("kernel pid %d did not exit", kernel.pid)
        else:
            self._on_kernel_exit(kernel)

    # -- commands ------------------------------------------------------------------

    def _on_ctrl(self, channel: yoton.SubChannel) -> None:
        for message in channel.recv_all():
            self.handle_command(message)

    def handle_command(self, text: str) -> None:
        """Carry out one ctrl-broker command."""
        command = parse_command(text)
        logger.info("command %r", text)
        if command is Command.INT:
            self.interrupt_kernel()
        elif command is Command.TERM:
            self.terminate_kernel()
        elif command is Command.KILL:
            self.kill_kernel()
        elif command is Command.RESTART:
            self.restart_kernel()
        elif command is Command.SHUTDOWN:
            self.shutdown("a client sent SHUTDOWN")
        else:
            names = ", ".join(c.value for c in Command)
            self.say(f"Unknown broker command {text[:80]!r}; expected one of {names}.")

    # -- clients -------------------------------------------------------------------

    def _on_client_accepted(self, conn: yoton.Connection) -> None:
        if self._shutting_down:
            conn.close()
            return
        conn.timeout = self._client_timeout
        # Clients watch the broker with timeouts of a second or more.
        conn.heartbeat_interval = 0.5
        conn.timedout.bind(self._on_client_timedout)
        conn.closed.bind(self._on_client_closed)
        if not conn.is_connected:
            return  # closed before we got here
        self._clients[conn] = _Client(conn)
        logger.info("client attached from %s:%s", conn.hostname2, conn.port2)
        dest = conn.id2
        self._history_pub.send_to(self.history.snapshot(), dest)
        self._status.send_to(self.tracker.current, [dest])
        self._startup.send_own_to(dest)
        self._publish_info()
        if not self._drop_timer.running:
            self._drop_timer.start()

    def _on_client_refused(self, listener: Any, peer: str, reason: str) -> None:
        logger.info("refused a client from %s: %s", peer, reason)

    def _on_client_closed(self, conn: yoton.Connection, reason: str) -> None:
        client = self._clients.pop(conn, None)
        if client is None:
            return
        logger.info("client %s:%s detached: %s", conn.hostname2, conn.port2, reason)
        self._closed_dropped += conn.dropped
        if not self._clients:
            self._drop_timer.stop()
        self._publish_info()

    def _on_client_timedout(self, conn: yoton.Connection, timed_out: bool) -> None:
        client = self._clients.get(conn)
        if client is None:
            return
        client.silent = timed_out
        client.silent_token += 1
        if timed_out:
            logger.info("client %s:%s is silent", conn.hostname2, conn.port2)
            yoton.call_later(
                self._close_silent, self._client_grace, client, client.silent_token
            )
        self._check_dropped()

    def _close_silent(self, client: _Client, token: int) -> None:
        if client.silent and client.silent_token == token:
            seconds = self._client_timeout + self._client_grace
            client.connection.close_on_problem(
                f"No data from the client for {seconds:g} s."
            )

    def _check_dropped(self) -> None:
        """Tell each client how many packages it lost by not keeping up."""
        changed = False
        for conn, client in list(self._clients.items()):
            dropped = conn.dropped
            if dropped > client.reported_dropped:
                count = dropped - client.reported_dropped
                client.reported_dropped = dropped
                changed = True
                self.say(
                    f"{count} messages were dropped because this client did not "
                    "keep up",
                    dest_id=conn.id2,
                )
        if changed:
            self._publish_info()

    # -- output history ----------------------------------------------------------

    def _on_stream(self, channel: yoton.SubChannel) -> None:
        name = self._streams[channel]
        for text in channel.recv_all():
            self.history.append(name, text)

    # -- shutting down -----------------------------------------------------------

    def shutdown(self, why: str = "") -> None:
        """Stop the kernel, say goodbye to the clients and end the event loop."""
        if self._shutting_down:
            return
        self._shutting_down = True
        logger.info("shutting down%s", f": {why}" if why else "")
        self.say("Broker shutting down")
        self._restart_pending = False
        self._drop_timer.stop()
        if self._listener is not None:
            self._listener.close()
        self._stop_kernel_now()
        self._close_connections()
        self._remove_connection_file()
        yoton.stop_event_loop()

    def _close_connections(self) -> None:
        deadline = time.monotonic() + FLUSH_TIMEOUT
        connections = list(self._ctx.connections) if self._ctx else []
        for conn in connections:
            try:
                conn.flush(max(0.0, deadline - time.monotonic()))
                conn.close("The broker shut down.")
            except (yoton.YotonError, OSError):
                conn.close_on_problem("The broker shut down.")

    def _remove_connection_file(self) -> None:
        if self._file_written:
            self._file_written = False
            remove_connection_file(self.connection_file, self.pid)

    def _final_cleanup(self) -> None:
        """Make sure no kernel and no connection file outlive the broker."""
        kernel = self._kernel
        if kernel is not None and kernel.alive:
            kernel.send_signal(signal.SIGKILL)
            kernel.wait(5.0)
        self._remove_connection_file()
        if self._ctx is not None:
            for conn in list(self._ctx.connections_all):
                conn.close_on_problem("The broker exited.")
            for listener in self._ctx.listeners:
                listener.close()


def _pid_of(info: Any) -> int | None:
    """The "pid" of a stat-startup dict, or None."""
    return info.get("pid") if isinstance(info, dict) else None


def _ignore_signal(signum: int, frame: Any) -> None:
    """Python-level handler; the work is done via the wakeup fd."""
