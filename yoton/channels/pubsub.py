"""Publish/subscribe: PubChannel, SubChannel and select_sub_channel."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Any

from .. import wire
from ..context import POST_BATCH, POST_LIMIT
from ..message_types import BinaryMessageType, TextMessageType
from ..queues import ArrivalQueue, Empty
from ..wire import F_DATA, F_SOURCE_SEQ, frame_source_id
from .base import BaseChannel

#: Sync mode: a SubChannel asks publishers to wait above HWM and resume below LWM.
SYNC_HWM = 32
SYNC_LWM = 16
#: A "full" report blocks publishers for at most this long unless it is renewed.
SYNC_LOCK_SECONDS = 10.0
SYNC_RENEW_SECONDS = 4.0
#: A publisher waits while this many of its messages are unconsumed by a sync sub.
SYNC_WINDOW = 64
#: A sync subscriber reports what it consumed after this many messages.
SYNC_REPORT_EVERY = 16
_MSG_FULL = b"full"
_MSG_OK = b"ok"
_MSG_SYNC = b"ok+ "


class PubChannel(BaseChannel):
    """The sending side of publish/subscribe: every SubChannel on the slot gets
    every message."""

    def __init__(self, context, slot_base: str, message_type: Any = None) -> None:
        super().__init__(context, slot_base, message_type)
        self._full_subscribers: dict[int, float] = {}  # 2.2 "full": id -> deadline
        # Our sync subscribers: id -> (last consumed source_seq, report deadline).
        self._sync_subscribers: dict[int, tuple[int, float]] = {}
        self._in_flight: deque[int] = deque()  # source_seq of recent sends
        self._sync_cond = threading.Condition(threading.Lock())
        self._posted = context._posted  # the context's (never replaced)
        self._head = wire.encode_header_head(self._slot_out_h, context.id)

    def _messaging_patterns(self) -> tuple[str, str]:
        return "pub-sub", "sub-pub"

    def send(self, message: Any) -> None:
        """Send a message to all subscribers; it arrives as one message."""
        if type(message) is bytes and self._builtin_type is BinaryMessageType:
            data = message  # what BinaryMessageType gives, without a call
        else:
            # Through the type (a method lookup the interpreter caches), not
            # the bound method stored on the channel (looked up anew per call).
            data = self._message_type_instance.message_to_bytes(message)
        if self._full_subscribers or self._sync_subscribers:
            self._send_synced(data)
        elif self._closed:
            self._check_open()
        elif 0 < len(data) <= POST_LIMIT:  # the empty message is not sent
            # Posted to the context, framed later with its neighbours (see
            # Context._after_post): no lock and no header per message.
            posted = self._posted
            posted.append((self._head, data))
            count = len(posted)
            if count >= POST_BATCH or count == 1:
                self._context._after_post(count, self._send_blocks)
        elif data:
            self._send(data, block=self._send_blocks)

    def _send_synced(self, data: bytes) -> None:
        # A subscriber asked us to wait for it (sync mode, or a 2.2 "full").
        self._wait_for_subscribers()
        seq = self._send(data)
        if self._sync_subscribers and seq:
            with self._sync_cond:
                self._in_flight.append(seq)

    def _outstanding(self, consumed_seq: int) -> int:
        return len(self._in_flight) - bisect.bisect_right(self._in_flight, consumed_seq)

    def _blocked(self, now: float) -> bool:
        for source_id, deadline in list(self._full_subscribers.items()):
            if deadline <= now:
                del self._full_subscribers[source_id]
        for source_id, (seq, deadline) in list(self._sync_subscribers.items()):
            if deadline <= now:
                del self._sync_subscribers[source_id]  # silent too long: gone
            elif self._outstanding(seq) >= SYNC_WINDOW:
                return True
        return bool(self._full_subscribers)

    def _wait_for_subscribers(self) -> None:
        # Blocks while a subscriber in sync mode is too far behind.
        with self._sync_cond:
            while not self._closed:
                now = time.monotonic()
                if not self._blocked(now):
                    break
                deadlines = [d for _, d in self._sync_subscribers.values()]
                deadlines += list(self._full_subscribers.values())
                self._sync_cond.wait(max(0.001, min(deadlines) - now))
            if self._sync_subscribers:
                oldest = min(seq for seq, _ in self._sync_subscribers.values())
                while self._in_flight and self._in_flight[0] <= oldest:
                    self._in_flight.popleft()
            else:
                self._in_flight.clear()

    def _recv_packages(self, packages: list) -> None:
        me = f"{self._context.id:016x}="
        with self._sync_cond:
            now = time.monotonic()
            for package in packages:
                text = bytes(package.data).decode("ascii", "replace")
                source = package.source_id
                if text == "full":
                    self._full_subscribers[source] = now + SYNC_LOCK_SECONDS
                    continue
                self._full_subscribers.pop(source, None)
                if not text.startswith("ok+"):
                    continue  # a 2.2 subscriber
                # Our extension: "ok+ <hex pub id>=<last consumed seq> ...".
                seq = self._sync_subscribers.get(source, (0, 0))[0]
                for item in text.split()[1:]:
                    if item.startswith(me) and item[len(me) :].isdigit():
                        seq = int(item[len(me) :])
                self._sync_subscribers[source] = (seq, now + SYNC_LOCK_SECONDS)
            self._sync_cond.notify_all()

    def _sources_lost(self, ids: list[int]) -> None:
        with self._sync_cond:
            for source_id in ids:
                self._full_subscribers.pop(source_id, None)
                self._sync_subscribers.pop(source_id, None)
            self._sync_cond.notify_all()

    def close(self) -> None:
        """Close the channel (a send blocked by sync mode returns)."""
        super().close()
        with self._sync_cond:
            self._sync_cond.notify_all()


class SubChannel(BaseChannel):
    """The receiving side of publish/subscribe; iterate it to get pending messages."""

    # Queued items are received frames, cheaper than Packages; the queue keeps
    # their arrival order for select_sub_channel.
    _receives_items = True
    _queue_class = ArrivalQueue

    def __init__(self, context, slot_base: str, message_type: Any = None) -> None:
        super().__init__(context, slot_base, message_type)
        self._q_in.flow_control = context._flow_control
        self._sync = False
        # TextMessageType or BinaryMessageType out of sync mode: recv() then
        # decodes inline (see BaseChannel._builtin_type).
        self._plain_type = self._builtin_type
        self._reported_full = False
        self._report_time = 0.0
        self._ref_seq = 0
        self._consumed: dict[int, int] = {}  # source id -> last consumed seq
        self._since_report = 0

    def _messaging_patterns(self) -> tuple[str, str]:
        return "sub-pub", "pub-sub"

    def _consume(self, items: list) -> list:
        if self._sync:
            for frame in items:
                self._consumed[frame_source_id(frame)] = frame[F_SOURCE_SEQ]
            self._since_report += len(items)
        decode = self.message_from_bytes
        return [decode(frame[F_DATA]) for frame in items]

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        item = self._recv(False)
        if item is None:
            raise StopIteration()
        message = self._consume([item])[0]
        self._check_queue_status()
        return message

    def recv(self, block: bool | float = True) -> Any:
        """Return the next message.

        ``block`` False returns at once, True waits until a message arrives,
        a number waits that many seconds. Without a message (or when the
        channel is closed) the empty message is returned ("" for text).
        """
        queue = self._q_in
        try:
            item = queue._items.popleft()  # PackageQueue.pop's fast path, inlined
        except IndexError:
            try:
                item = queue._pop_waiting(block)
            except Empty:
                if self._sync:
                    self._check_queue_status()
                return self.message_from_bytes(b"")
        if queue._watched:
            queue._consumed()
        plain = self._plain_type
        if plain is BinaryMessageType:
            return item[5]  # F_DATA; received payloads are exact bytes already
        if plain is TextMessageType:
            return str(item[5], "utf-8", "replace")
        if self._sync:
            message = self._consume([item])[0]
            self._check_queue_status()
            return message
        # Through the type: a method lookup the interpreter caches.
        return self._message_type_instance.message_from_bytes(item[5])

    def recv_all(self) -> list:
        """Return all pending messages (possibly none)."""
        messages = self._consume(self._q_in.pop_all())
        self._check_queue_status()
        return messages

    def recv_selected(self) -> list:
        """After select_sub_channel(): the messages older than any pending
        message of the other channels given to it."""
        queue = self._q_in
        selected = []
        for _ in range(queue.count_arrived_by(self._ref_seq)):
            try:
                selected.append(queue.pop(False))
            except Empty:
                break  # another thread took them
        messages = self._consume(selected)
        self._check_queue_status()
        return messages

    def set_sync_mode(self, value: bool) -> None:
        """In sync mode, publishers wait while this channel's queue is too long."""
        value = bool(value)
        if not value and self._reported_full:
            self._report(False)
        self._sync = value
        self._plain_type = None if value else self._builtin_type
        if value:
            self._report(False)

    # -- sync mode ---------------------------------------------------------------

    def _recv_frames(self, frames: list, runs: list) -> None:
        """Called by the context (routing lock held) with frames for this slot."""
        self._q_in.push_runs(frames, runs)
        self._notify_received()
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
        elif self._since_report >= SYNC_REPORT_EVERY or (
            self._since_report and not size
        ):
            self._report(False)
        elif time.monotonic() > self._report_time:
            self._report(self._reported_full)

    def _report(self, full: bool) -> None:
        self._reported_full = full
        self._report_time = time.monotonic() + SYNC_RENEW_SECONDS
        if self._closed:
            return
        self._since_report = 0
        if full:
            data = _MSG_FULL
        else:
            consumed = " ".join(f"{k:016x}={v}" for k, v in self._consumed.items())
            data = _MSG_SYNC + consumed.encode()
        self._context._send_frame(self._slot_out_h, data, block=False)

    def _pending_range(self) -> tuple[int, int]:
        # (recv_seq of the oldest pending message, recv_seq of the newest + 1)
        queue = self._q_in
        try:
            return queue.arrival(0), queue.arrival(-1) + 1
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
