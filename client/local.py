"""Starting a local broker (and with it a kernel) for a bare ``yoton-console``.

The broker runs as ``python -m broker --connection-file <tmp dir>/connection.json`` in
a session of its own (so the terminal's Ctrl-C reaches only the console). Its stdout
is read line by line until the connection file is complete; everything it prints
later goes, like its stderr, to ``broker.log`` next to the connection file.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kernel.launch import module_command
from yoton.threads import start_thread

from .connection_file import ConnectionFileError, ConnectionInfo, read_connection_file

__all__ = ["LocalBroker", "LocalBrokerError"]

logger = logging.getLogger("client")

#: Seconds to wait for the broker to exit after SHUTDOWN before it is killed.
SHUTDOWN_WAIT = 5.0


class LocalBrokerError(RuntimeError):
    """The local broker could not be started (the message includes its log)."""


class LocalBroker:
    """A broker process started by this console; :meth:`start` waits for it."""

    def __init__(self, python: str = sys.executable, args: list[str] | None = None):
        self.python = python
        self.args = list(args or [])
        self.directory = Path(tempfile.mkdtemp(prefix="yoton-console-"))
        os.chmod(self.directory, 0o700)
        self.connection_file = self.directory / "connection.json"
        self.log_file = self.directory / "broker.log"
        self.process: subprocess.Popen | None = None
        self.info: ConnectionInfo | None = None
        self._log = None
        self._drain: threading.Thread | None = None
        self.detached = False  # left running for others (%detach)

    @property
    def command(self) -> list[str]:
        """The broker's command line."""
        return [
            *module_command("broker", self.python),
            "--connection-file",
            str(self.connection_file),
            *self.args,
        ]

    def start(self) -> ConnectionInfo:
        """Start the broker and return its connection info once the file is there."""
        self._log = open(self.log_file, "ab", buffering=0)  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        stdout = self.process.stdout
        assert stdout is not None
        # Each readline blocks until the broker prints; it announces itself once
        # listening, after writing the connection file (atomically).
        while True:
            line = stdout.readline()
            if line:
                self._log.write(line)
            info = self._try_read()
            if info is not None:
                break
            if not line:
                self.process.wait()
                raise LocalBrokerError(
                    f"The broker exited (code {self.process.returncode}) before it "
                    f"was ready:\n{self.log_text()}"
                )
        self.info = info
        self._drain = start_thread(self._drain_stdout, name="broker-stdout")
        return info

    def _try_read(self) -> ConnectionInfo | None:
        try:
            return read_connection_file(self.connection_file)
        except ConnectionFileError:
            return None

    def _drain_stdout(self) -> None:
        stdout = self.process.stdout if self.process else None
        if stdout is None or self._log is None:
            return
        try:
            for line in stdout:
                self._log.write(line)
        except (OSError, ValueError):
            pass

    def log_text(self, limit: int = 4000) -> str:
        """The end of the broker's log."""
        try:
            return self.log_file.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def running(self) -> bool:
        """Whether the broker process still runs."""
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float = SHUTDOWN_WAIT) -> int | None:
        """Wait for the broker to exit (after SHUTDOWN); kill it if it does not."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("the local broker did not exit; killing it")
            self.process.kill()
            return self.process.wait()

    def cleanup(self, force: bool = False) -> None:
        """Remove the temporary directory once the broker is gone (or if ``force``).

        A broker still running (just sent SIGTERM) removes its connection file
        itself; its open log survives the directory's removal.
        """
        if self.running() and not force:
            return
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.directory, ignore_errors=True)
