"""The stat-interpreter value the broker publishes, as a small state machine.

The kernel publishes its own states (Starting, Ready, More, Busy, Input); the
broker overlays two of its own: ``Stalled`` while the kernel's heartbeats are
missing, and ``Dead`` once the kernel process has exited. Pure: no yoton here.
"""

from __future__ import annotations

import signal

STARTING = "Starting"
STALLED = "Stalled"
DEAD = "Dead"
#: States only the broker may publish; a kernel never sends these.
BROKER_STATES = frozenset({STALLED, DEAD})


class StatusTracker:
    """Combines the kernel's last status with stall and exit events.

    ``current`` is the value that should be on stat-interpreter: ``Dead`` when no
    kernel process runs, ``Stalled`` while its heartbeats are missing, otherwise
    the kernel's last status (``Starting`` until it said anything).
    """

    def __init__(self) -> None:
        self.alive = False
        self.stalled = False
        self.kernel_status: str | None = None

    @property
    def current(self) -> str:
        """The status to publish now."""
        if not self.alive:
            return DEAD
        if self.stalled:
            return STALLED
        return self.kernel_status or STARTING

    def launched(self) -> str:
        """A new kernel process was started; return the status to publish."""
        self.alive = True
        self.stalled = False
        self.kernel_status = None
        return self.current

    def kernel_said(self, status: str) -> str:
        """The kernel published ``status``; return the status to publish.

        A kernel never returns to Starting: a later Starting is a stale state its
        channel picked up from a client and resent (yoton state channels resend
        whatever they last saw when a context joins), so it is ignored.
        """
        if not self.alive or not status or status in BROKER_STATES:
            return self.current
        if status == STARTING and self.kernel_status not in (None, STARTING):
            return self.current
        self.kernel_status = status
        return self.current

    def set_stalled(self, stalled: bool) -> str:
        """Heartbeats stopped (True) or resumed (False); return the status."""
        if self.alive:
            self.stalled = bool(stalled)
        return self.current

    def exited(self) -> str:
        """The kernel process exited; return the status to publish."""
        self.alive = False
        self.stalled = False
        self.kernel_status = None
        return self.current


def exit_reason(returncode: int) -> str:
    """Return "exit code N" or the signal name for a Popen returncode."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def describe_exit(returncode: int, requested: bool = False) -> str:
    """Return the strm-broker message for a kernel process that ended."""
    reason = exit_reason(returncode)
    if requested:
        return f"Kernel stopped ({reason})"
    if returncode == 0:
        return f"Kernel exited ({reason})"
    return f"Kernel died ({reason})"
