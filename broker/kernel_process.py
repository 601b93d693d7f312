"""One kernel process: its launch, the thread reading its raw output, its exit.

The kernel gets the broker's address and a one-time key in environment variables
(see ``kernel.launch``); its fd 1 and 2 go to one pipe, read by a thread, so raw
output keeps its order. Another thread blocks in ``wait()`` and reports the exit.
"""

from __future__ import annotations

import codecs
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from kernel.launch import kernel_command, kernel_environment
from yoton.threads import start_thread

logger = logging.getLogger("broker")

#: The directory holding the yoton, kernel and broker packages.
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
#: Seconds the exit report waits for the output pipe to reach its end.
DRAIN_TIMEOUT = 0.25
_READ_SIZE = 1 << 16


def same_interpreter(python: str) -> bool:
    """Whether ``python`` is the interpreter running the broker."""
    found = shutil.which(python) or python
    try:
        return os.path.samefile(found, sys.executable)
    except OSError:
        return False


def build_environment(
    address: str,
    key: bytes,
    python: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the kernel's environment; another interpreter gets PYTHONPATH set
    so it can import the kernel and yoton packages."""
    env = kernel_environment(address, key, base)
    if not same_interpreter(python):
        paths = [PROJECT_ROOT] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
        env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))
    return env


class KernelProcess:
    """A kernel process; ``on_output(text)`` and ``on_exit(self)`` run in its threads.

    ``start()`` raises OSError when the interpreter cannot be executed.
    """

    def __init__(
        self,
        generation: int,
        python: str,
        address: str,
        key: bytes,
        on_output: Callable[[str], None],
        on_exit: Callable[[KernelProcess], None],
    ) -> None:
        self.generation = generation
        self.python = python
        self.address = address
        self.terminating = False  # a stop was requested by the broker
        self.reported = False  # the broker has announced the exit
        self._key = key
        self._on_output = on_output
        self._on_exit = on_exit
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._exited = threading.Event()
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"<KernelProcess #{self.generation} pid={self.pid} rc={self.returncode}>"

    @property
    def pid(self) -> int:
        """The process id (0 before start)."""
        return self._proc.pid if self._proc is not None else 0

    @property
    def alive(self) -> bool:
        """Whether the process was started and has not been seen to exit."""
        return self._proc is not None and not self._exited.is_set()

    def start(self) -> None:
        """Launch ``python -m kernel`` and the reader and waiter threads."""
        env = build_environment(self.address, self._key, self.python)
        self._proc = subprocess.Popen(
            kernel_command(self.python),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the broker's terminal is ours only
        )
        name = f"broker-kernel{self.generation}"
        self._reader = start_thread(self._read_output, name=name + "-output")
        start_thread(self._wait, name=name + "-wait")

    def send_signal(self, sig: int) -> bool:
        """Signal the kernel's process group (like a terminal's Ctrl-C) if the
        kernel still runs; return whether it was sent.

        The kernel leads its own process group, so a SIGINT also reaches what
        it runs in the foreground (``os.system``) and a SIGKILL what it started.
        If user code moved the kernel to another group, only the kernel is signalled.
        """
        if not self.alive:
            return False
        pid = self._proc.pid
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        logger.info("sent %s to kernel pid %d", signal.Signals(sig).name, pid)
        return True

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the exit is known; return the returncode (None on timeout)."""
        if self._proc is None:
            return None
        self._exited.wait(timeout)
        return self.returncode

    def _read_output(self) -> None:
        stream = self._proc.stdout
        fd = stream.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            while True:
                try:
                    data = os.read(fd, _READ_SIZE)
                except OSError:
                    data = b""
                text = decoder.decode(data, final=not data)
                if text:
                    self._on_output(text)
                if not data:
                    return
        except Exception:  # pragma: no cover - a bug; do not lose the exit report
            logger.exception("error reading the kernel's output")
        finally:
            stream.close()

    def _wait(self) -> None:
        returncode = self._proc.wait()
        if self._reader is not None:
            # Output written just before the exit comes before the exit report;
            # a grandchild holding the pipe open must not delay that report.
            self._reader.join(DRAIN_TIMEOUT)
        self.returncode = returncode
        self._exited.set()
        self._on_exit(self)
