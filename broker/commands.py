"""Commands clients send on ctrl-broker, and how a kernel is asked to terminate."""

from __future__ import annotations

import enum
import signal


class Command(enum.Enum):
    """The ctrl-broker commands (the message text is the name, any case)."""

    INT = "INT"
    TERM = "TERM"
    KILL = "KILL"
    RESTART = "RESTART"
    SHUTDOWN = "SHUTDOWN"


def parse_command(text: str) -> Command | None:
    """Return the command in a ctrl-broker message, or None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return Command(text.strip().upper())
    except ValueError:
        return None


class Step(enum.Enum):
    """One step of terminating a kernel."""

    CLOSE = "close its connection"  # the kernel exits when its broker link closes
    INTERRUPT = "SIGINT"
    KILL = "SIGKILL"


#: Signals sent by the steps that send one.
STEP_SIGNALS = {Step.INTERRUPT: signal.SIGINT, Step.KILL: signal.SIGKILL}

#: Default seconds to wait after closing the connection, then after SIGINT.
CLOSE_GRACE = 1.0
INTERRUPT_GRACE = 1.0


def termination_schedule(
    close_grace: float = CLOSE_GRACE, interrupt_grace: float = INTERRUPT_GRACE
) -> list[tuple[float, Step]]:
    """Return (seconds from the start, step) pairs; stop at the first the kernel
    does not survive."""
    return [
        (0.0, Step.CLOSE),
        (close_grace, Step.INTERRUPT),
        (close_grace + interrupt_grace, Step.KILL),
    ]
