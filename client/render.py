"""The console's terminal output: output streamed around a prompt being edited.

:class:`Screen` writes kernel output while readline waits for input on the same
terminal: it erases the prompt line, writes the output and draws the prompt and the
half-typed line again below it. :class:`EchoFilter` recognises the echo of lines this
console sent itself (so they are not shown twice), and :class:`StatusReporter` turns
kernel status changes into the few lines worth showing. No readline and no
threads in here: the console passes the line buffer getter and does the locking.
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO

__all__ = ["EchoFilter", "Screen", "StatusReporter", "split_lines"]

ERASE_LINE = "\r\x1b[K"
CURSOR_UP = "\x1b[A"


def split_lines(text: str) -> list[str]:
    """Lines of a message like the kernel splits them; one final newline ends it."""
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


class Screen:
    """Terminal writer that keeps an input prompt intact while output arrives.

    ``get_buffer`` returns the text typed so far at the prompt (readline's line
    buffer). With ``ansi`` False (not a terminal) nothing is redrawn.
    """

    def __init__(
        self,
        out: TextIO,
        get_buffer: Callable[[], str] = lambda: "",
        *,
        ansi: bool = True,
        width: Callable[[], int] | None = None,
    ) -> None:
        self.out = out
        self.get_buffer = get_buffer
        self.ansi = ansi
        self._width = width or (lambda: shutil.get_terminal_size((80, 24)).columns)
        self.lock = threading.RLock()
        self.prompt: str | None = None  # the prompt input() shows, while it waits
        self.partial = ""  # output text after the last newline written
        self._partial_above = False  # partial sits on the line above the prompt

    # -- prompt bracketing (main thread) --------------------------------------------

    def begin_input(self) -> None:
        """Called just before input(): make sure the prompt will start a line."""
        with self.lock:
            if self.partial and not self._partial_above:
                self._raw("\n")
                self._partial_above = True
            self._flush()

    def show_prompt(self, prompt: str | None) -> None:
        """The prompt input() has drawn (None: none); output now redraws it."""
        with self.lock:
            self.prompt = prompt

    def end_input(self, echoed_newline: bool = True) -> None:
        """Called when input() returned (the terminal is on a fresh line)."""
        with self.lock:
            self.prompt = None
            self.partial = ""
            self._partial_above = False
            if not echoed_newline:
                self._raw("\n")
            self._flush()

    def erase_prompt(self) -> None:
        """Remove the prompt line input() left behind when it was aborted."""
        with self.lock:
            if self.ansi:
                self._raw(ERASE_LINE)
            else:
                self._raw("\n")
            self.prompt = None
            self._flush()

    # -- output (any thread) --------------------------------------------------------

    def write(self, text: str) -> None:
        """Write output text, keeping an active prompt below it."""
        if not text:
            return
        with self.lock:
            if self.prompt is None or not self.ansi:
                self._raw(text)
                self._track(text)
            else:
                buffer = self.get_buffer()
                self._erase_prompt_rows(self.prompt + buffer)
                if self._partial_above:
                    if len(self.partial) < self._width():
                        self._raw(CURSOR_UP + "\r" + self.partial)
                    else:
                        self.partial = ""
                    self._partial_above = False
                self._raw(text)
                self._track(text)
                if self.partial:
                    self._raw("\n")
                    self._partial_above = True
                self._raw(self.prompt + buffer)
            self._flush()

    def write_line(self, text: str) -> None:
        """Write a whole line (a console message), starting on a fresh line."""
        with self.lock:
            if self.partial and (self.prompt is None or not self._partial_above):
                text = "\n" + text
            elif self.partial:
                self.partial = ""  # the message goes below the unfinished line
                self._partial_above = False
            self.write(text if text.endswith("\n") else text + "\n")

    # -- internals ------------------------------------------------------------------

    def _erase_prompt_rows(self, shown: str) -> None:
        width = max(self._width(), 1)
        rows = len(shown) // width if shown else 0
        self._raw(ERASE_LINE + (CURSOR_UP + ERASE_LINE) * rows)

    def _track(self, text: str) -> None:
        head, newline, tail = text.rpartition("\n")
        self.partial = tail if newline else self.partial + tail

    def _raw(self, text: str) -> None:
        try:
            self.out.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.out, "encoding", None) or "utf-8"
            self.out.write(text.encode(encoding, "replace").decode(encoding))

    def _flush(self) -> None:
        try:
            self.out.flush()
        except (OSError, ValueError):
            pass


class EchoFilter:
    """Remembers lines this console sent, to recognise their echo from the kernel.

    Lines the kernel never echoes (dropped by an interrupt) are forgotten when a
    later line of ours is echoed.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._lines: deque[str] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def sent(self, text: str) -> None:
        """Record a message sent on ctrl-command."""
        with self._lock:
            self._lines.extend(split_lines(text))

    def is_own(self, echo: str) -> bool:
        """Whether an echo message is (all) lines this console sent; consumes them."""
        lines = split_lines(echo)
        with self._lock:
            for line in lines:
                if line not in self._lines:
                    return False
            for line in lines:
                while self._lines:
                    if self._lines.popleft() == line:
                        break
            return True

    def clear(self) -> None:
        """Forget all pending lines."""
        with self._lock:
            self._lines.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._lines)


class StatusReporter:
    """Turns kernel info updates into the one-line messages that matter.

    The broker itself reports a stalled, recovered, died or restarting kernel on
    strm-broker; what it cannot say is that the new kernel is up: a new pid in
    the kernel info means the kernel was restarted.
    """

    def __init__(self) -> None:
        self.status = ""
        self.pid: int | None = None

    def update(self, status: str) -> list[str]:
        """Record a new status; return the messages to show (none so far)."""
        self.status = status
        return []

    def kernel_info(self, info: dict) -> list[str]:
        """Record kernel info; a new pid means the kernel was restarted."""
        pid = info.get("pid")
        if not isinstance(pid, int):
            return []
        old, self.pid = self.pid, pid
        if old is None or old == pid:
            return []
        return [f"kernel restarted (pid {pid})"]
