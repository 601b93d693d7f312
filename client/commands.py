"""Console commands: lines like ``%restart`` that the console handles itself.

They are recognised only at a primary prompt (">>> ") or a console prompt, never
inside a multi-line block or as the answer to input(), where "%" can be data.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["COMMANDS", "Command", "help_text", "parse_command"]

#: name -> one-line description, in the order %help shows them.
COMMANDS: dict[str, str] = {
    "interrupt": "interrupt the running code (like Ctrl-C)",
    "terminate": "ask the kernel to exit (SIGTERM)",
    "kill": "kill the kernel process (SIGKILL)",
    "restart": "start a fresh kernel (the old one is stopped)",
    "status": "show the kernel status, kernel info and the connection",
    "detach": "leave; the kernel and broker keep running",
    "shutdown": "stop the kernel and the broker, then leave",
    "reconnect": "attach again after the connection to the broker was lost",
    "help": "show this help",
}


class Command(NamedTuple):
    """A parsed console command: its name (a key of COMMANDS, or unknown) and rest."""

    name: str
    argument: str = ""

    @property
    def known(self) -> bool:
        """Whether the command exists."""
        return self.name in COMMANDS


def parse_command(line: str) -> Command | None:
    """Parse a console command, or None if the line is code for the kernel.

    A command is ``%name`` (optionally followed by an argument) alone on its line;
    unique prefixes are accepted (``%int`` is ``%interrupt``).
    """
    text = line.strip()
    if not text.startswith("%") or text.startswith("%%"):
        return None
    word, _, argument = text[1:].partition(" ")
    word = word.lower()
    if not word.isidentifier():
        return None
    if word not in COMMANDS:
        matches = [name for name in COMMANDS if name.startswith(word)]
        if len(matches) == 1:
            word = matches[0]
    return Command(word, argument.strip())


def help_text() -> str:
    """The text of %help."""
    lines = ["Console commands (everything else goes to the kernel):"]
    lines += [f"  %{name:<10} {text}" for name, text in COMMANDS.items()]
    lines += [
        "Keys: Ctrl-C interrupts running code or clears the line;"
        " Ctrl-D detaches; Tab completes.",
    ]
    return "\n".join(lines) + "\n"
