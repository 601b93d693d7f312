"""Publish/subscribe: PubChannel, SubChannel and select_sub_channel."""

from __future__ import annotations

import threading
import time
from typing import Any

from .. import wire
from .base import BaseChannel

#: Sync mode: a SubChannel asks publishers to wait above HWM and resume below LWM.
SYNC_HWM = 32
SYNC_LWM = 16
#: A "full" report blocks publishers for at most this long unless it is renewed.
SYNC_LOCK_SECONDS = 10.0
SYNC_RENEW_SECONDS = 4.0
_MSG_FULL = b"full"
_MSG_OK = b"ok"


class PubChannel(BaseChannel):
    """The sending side of publish/subscribe: every SubChannel on the slot gets
    every message."""

    def __init__(self, context, slot_base: str, message_type: Any = None) -> None:
        super().__init__(context, slot_base, message_type)
        self._full_subscribers: dict[int, float] = {}  # source id -> lock deadline
        self._sync_cond = threading.Condition(threading.Lock())

    def _messaging_patterns(self) -> tuple[str, str]:
        return "pub-sub", "sub-pub"

    def send(self, message: Any) -> None:
        """Send a message to all subscribers; it arrives as one message."""
        data = self.message_to_bytes(message)
        if self._full_subscribers:
            self._wait_for_subscribers()
        self._send(data)

    def _wait_for_subscribers(self) -> None:
        # Blocks while a subscriber in sync mode reports a full queue.
        with self._sync_cond:
            while self._full_subscribers and not self._closed:
                now = time.monotonic()
                deadline = max(self._full_subscribers.values())
                if deadline <= now:
                    self._full_subscribers.clear()
                    break
                self._sync_cond.wait(deadline - now)

    def _recv_packages(self, packages: list) -> None:
        with self._sync_cond:
            for package in packages:
                if bytes(package.data) == _MSG_FULL:
                    deadline = time.monotonic() + SYNC_LOCK_SECONDS
                    self._full_subscribers[package.source_id] = deadline
                else:
                    self._full_subscribers.pop(package.source_id, None)
            self._sync_cond.notify_all()

    def _sources_lost(self, ids: list[int]) -> None:
        with self._sync_cond:
            for source_id in ids:
                self._full_subscribers.pop(source_id, None)
            self._sync_cond.notify_all()

    def close(self) -> None:
        """Close the channel (a send blocked by sync mode returns)."""
        super().close()
        with self._sync_cond:
            self._sync_cond.notify_all()


class SubChannel(BaseChannel):
    """The receiving side of publish/subscribe; iterate it to get pending messages."""

    def __init__(self, context, slot_base: str, message_type: Any = None) -> None:
        super().__init__(context, slot_base, message_type)
        self._sync = False
        self._reported_full = False
        self._report_time = 0.0
        self._ref_seq = 0

    def _messaging_patterns(self) -> tuple[str, str]:
        return "sub-pub", "pub-sub"

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        package = self._recv(False)
        if package is None:
            raise StopIteration()
        self._check_queue_status()
        return self._decode(package)

    def recv(self, block: bool | float = True) -> Any:
        """Return the next message.

        ``block`` False returns at once, True waits until a message arrives,
        a number waits that many seconds. Without a message (or when the
        channel is closed) the empty message is returned ("" for text).
        """
        package = self._recv(block)
        self._check_queue_status()
        if package is None:
            return self.message_from_bytes(b"")
        return self._decode(package)

    def recv_all(self) -> list:
        """Return all pending messages (possibly none)."""
        packages = self._q_in.pop_all()
        self._check_queue_status()
        return [self._decode(p) for p in packages]

    def recv_selected(self) -> list:
        """After select_sub_channel(): the messages older than any pending
        message of the other channels given to it."""
        selected = []
        queue = self._q_in
        while True:
            try:
                package = queue.peek(0)
            except IndexError:
                break
            if package.recv_seq > self._ref_seq:
                break
            selected.append(queue.pop(False))
        self._check_queue_status()
        return [self._decode(p) for p in selected]

    def set_sync_mode(self, value: bool) -> None:
        """In sync mode, publishers wait while this channel's queue is too long."""
        value = bool(value)
        if not value and self._reported_full:
            self._report(False)
        self._sync = value

    # -- sync mode ---------------------------------------------------------------

    def _recv_packages(self, packages: list) -> None:
        super()._recv_packages(packages)
        if self._sync:
            self._check_queue_status()

    def _check_queue_status(self) -> None:
        if not self._sync:
            return
        size = len(self._q_in)
        if size > SYNC_HWM and not self._reported_full:
            self._report(True)
        elif size < SYNC_LWM and self._reported_full:
            self._report(False)
        elif self._reported_full and time.monotonic() > self._report_time:
            self._report(True)

    def _report(self, full: bool) -> None:
        self._reported_full = full
        self._report_time = time.monotonic() + SYNC_RENEW_SECONDS
        if self._closed or not self._context.connection_count:
            return
        package = wire.Package(
            _MSG_FULL if full else _MSG_OK, self._slot_out_h, 0, 0, 0, 0
        )
        self._context._send_package(package, block=False)

    def _pending_range(self) -> tuple[int, int]:
        # (recv_seq of the oldest pending message, recv_seq of the newest + 1)
        queue = self._q_in
        try:
            return queue.peek(0).recv_seq, queue.peek(-1).recv_seq + 1
        except IndexError:
            return -1, -1


def select_sub_channel(*channels: SubChannel) -> SubChannel | None:
    """Return the channel holding the oldest pending message, or None.

    Then call ``channel.recv_selected()`` to get its messages that are older
    than every pending message of the other channels, preserving send order.
    """
    first = None
    first_seq = None
    for channel in channels:
        if not isinstance(channel, SubChannel):
            raise ValueError("select_sub_channel() only accepts SubChannel instances.")
    ranges = [(c, c._pending_range()) for c in channels]
    for channel, (oldest, _) in ranges:
        if oldest >= 0 and (first_seq is None or oldest < first_seq):
            first, first_seq = channel, oldest
    if first is None:
        return None
    # Messages of ``first`` up to (not including) the oldest of the others.
    limit = min(
        (oldest for c, (oldest, _) in ranges if c is not first and oldest >= 0),
        default=None,
    )
    first._ref_seq = (limit - 1) if limit is not None else float("inf")
    return first
