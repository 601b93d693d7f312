"""Tab completion for the console: readline's completer, answered by the kernel.

readline hands the completer the word before the cursor (split at
:data:`DELIMITERS`); the kernel (jedi, on its live namespace) answers with names and
how many characters before the cursor they replace. :func:`candidates` reconciles the
two; :class:`Completer` is the object given to ``readline.set_completer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["DELIMITERS", "Completer", "candidates"]

logger = logging.getLogger("client")

#: Word delimiters for readline: like rlcompleter's, plus "." (jedi completes
#: attributes, so the word is the part after the last dot).
DELIMITERS = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?."


def candidates(text: str, reply: Any) -> list[str]:
    """Turn a kernel ``complete`` reply into readline candidates for ``text``.

    Each candidate replaces ``text`` (readline's word): the part of the word
    before jedi's prefix is kept, the name follows. Candidates are sorted,
    duplicates removed.
    """
    if not isinstance(reply, dict):
        return []
    names = reply.get("names")
    prefix_length = reply.get("prefix_length", 0)
    if not isinstance(names, list) or not isinstance(prefix_length, int):
        return []
    if prefix_length > len(text):
        # jedi's prefix reaches past readline's word: keep the names that still fit.
        head = ""
        names = [n for n in names if isinstance(n, str) and n.startswith(text)]
    else:
        head = text[: len(text) - prefix_length]
    seen: set[str] = set()
    result = []
    for name in names:
        if not isinstance(name, str):
            continue
        candidate = head + name
        if candidate.startswith(text) and candidate not in seen:
            seen.add(candidate)
            result.append(candidate)
    return sorted(result, key=lambda n: (n.startswith("_"), n))


class Completer:
    """readline completer that asks the kernel; ``complete(text, state)``.

    ``fetch(source)`` asks the kernel for completions at the end of ``source``
    and returns the reply (or None on timeout). ``get_line`` and ``get_begidx``
    give readline's line buffer and the start of the word being completed.
    """

    def __init__(
        self,
        fetch: Callable[[str], Any],
        get_line: Callable[[], str],
        get_begidx: Callable[[], int],
        get_endidx: Callable[[], int] | None = None,
    ) -> None:
        self._fetch = fetch
        self._get_line = get_line
        self._get_begidx = get_begidx
        self._get_endidx = get_endidx
        self.context = ""  # earlier lines of the block being typed
        self._matches: list[str] = []

    def complete(self, text: str, state: int) -> str | None:
        """The ``state``-th candidate for ``text`` (None when there are no more)."""
        if state == 0:
            try:
                self._matches = self._compute(text)
            except Exception:  # a completer must never raise into readline
                logger.debug("completion failed", exc_info=True)
                self._matches = []
        if state < len(self._matches):
            return self._matches[state]
        return None

    def _compute(self, text: str) -> list[str]:
        line = self._get_line()
        if self._get_endidx is not None:
            end = self._get_endidx()
        else:
            end = self._get_begidx() + len(text)
        before = line[:end]
        if not before.strip():
            return ["\t"]  # Tab at the start of a line indents
        reply = self._fetch(self.context + before)
        return candidates(text, reply)
