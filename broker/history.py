"""A bounded history of output, replayed to clients that attach late."""

from __future__ import annotations

import threading
from collections import deque

#: Items kept (one item is one message on an output slot, often many lines).
MAX_ITEMS = 500
#: Characters kept over all items; the oldest items go first. Each attach sends
#: them once (and yoton floods addressed packages to every connection), so this
#: stays moderate.
MAX_CHARS = 256 << 10


class History:
    """The last ``max_items`` (stream, text) items, at most ``max_chars`` of text.

    Thread-safe. A single item longer than ``max_chars`` keeps only its end.
    Memory is bounded by about ``max_chars`` characters plus ``max_items`` tuples.
    """

    def __init__(self, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS) -> None:
        if max_items < 1 or max_chars < 1:
            raise ValueError("max_items and max_chars must be positive.")
        self._items: deque[tuple[str, str]] = deque()
        self._chars = 0
        self._max_items = max_items
        self._max_chars = max_chars
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def chars(self) -> int:
        """Characters currently held."""
        return self._chars

    def append(self, stream: str, text: str) -> None:
        """Add one item, dropping the oldest ones beyond the limits."""
        if not text:
            return
        if len(text) > self._max_chars:
            text = text[-self._max_chars :]
        with self._lock:
            items = self._items
            items.append((stream, text))
            self._chars += len(text)
            while len(items) > self._max_items or self._chars > self._max_chars:
                self._chars -= len(items.popleft()[1])

    def snapshot(self) -> list[list[str]]:
        """Return the items, oldest first, as [stream, text] lists."""
        with self._lock:
            return [[stream, text] for stream, text in self._items]

    def clear(self) -> None:
        """Forget all items."""
        with self._lock:
            self._items.clear()
            self._chars = 0
