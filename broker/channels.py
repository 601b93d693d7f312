"""The broker's channel classes: sends never block, state goes where it is meant to.

A yoton context makes a *local* send wait while any of its connections has more
than its high-water mark queued. On a broker one stopped client would then stop
the event loop and the kernel's output. So every broker channel sends without
blocking; what it sends is small and rare (broker messages, states, one history
per attach), except raw output, which is injected as if forwarded (see
:func:`inject`) and therefore dropped-and-counted for a client that does not keep up,
exactly like the kernel's own output.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import yoton
from yoton import wire


class BrokerPubChannel(yoton.PubChannel):
    """A PubChannel whose sends never block; ``send_to`` addresses one context."""

    _send_blocks = False

    def _send(
        self, data: bytes, dest_id: int = 0, dest_seq: int = 0, block: bool = True
    ) -> wire.Package | None:
        return super()._send(data, dest_id, dest_seq, False)

    def send_to(self, message: Any, dest_id: int) -> None:
        """Send a message that only the context ``dest_id`` deposits."""
        self._send(self.message_to_bytes(message), dest_id)


class BrokerStateChannel(yoton.StateChannel):
    """A StateChannel that sends without blocking and never resends by itself.

    The context calls ``send_last`` whenever any context joins the network, the
    kernel included; the broker instead sends its state to each new client
    (:meth:`send_own_to`), so a kernel never sees broker-made states. The value
    the broker set last is kept apart from what was received, so the broker can
    correct stale states that other contexts resend (:meth:`reassert`).
    ``on_received(items)`` is called from the event loop with the (source id,
    message) pairs received since its previous call.
    """

    def __init__(
        self,
        context: yoton.Context,
        slot_base: str,
        message_type: Any = None,
        on_received: Callable[[list[tuple[int, Any]]], None] | None = None,
    ) -> None:
        super().__init__(context, slot_base, message_type)
        self._on_received = on_received
        self._own_data = b""  # what this broker set last
        self._inbox: list[tuple[int, bytes]] = []
        self._inbox_lock = threading.Lock()

    def _send(
        self, data: bytes, dest_id: int = 0, dest_seq: int = 0, block: bool = True
    ) -> wire.Package | None:
        return super()._send(data, dest_id, dest_seq, False)

    def _set(self, message: Any) -> bytes:
        data = self.message_to_bytes(message)
        if data:
            # The state lock is never held while sending: the context calls
            # _recv_packages with its routing lock held, and that takes the state
            # lock, so taking them the other way round can deadlock.
            with self._state_lock:
                self._current_data = data
                self._current_message = self.message_from_bytes(data)
                self._has_state = True
            self._own_data = data
        return data

    def send(self, message: Any) -> None:
        """Set the state and send it to everyone unless the broker set it already."""
        data = self.message_to_bytes(message)
        if data and data != self._own_data:
            self._send(self._set(message))

    def send_to(self, message: Any, dest_ids: Iterable[int]) -> None:
        """Set the state and send it addressed to each of ``dest_ids``."""
        data = self._set(message)
        if data:
            for dest_id in dest_ids:
                self._send(data, dest_id)

    def send_last(self) -> None:
        """Do nothing: see the class docstring."""

    @property
    def own_message(self) -> Any:
        """The state the broker set last (the empty message if none)."""
        return self.message_from_bytes(self._own_data)

    def send_own_to(self, dest_id: int) -> None:
        """Send the state the broker set, if any, addressed to one context."""
        if self._own_data:
            self._send(self._own_data, dest_id)

    def reassert(self, dest_ids: Iterable[int] | None = None) -> None:
        """Send the broker's state again, to everyone or addressed to dest_ids."""
        if not self._own_data:
            return
        self._set(self.own_message)
        if dest_ids is None:
            self._send(self._own_data)
        else:
            for dest_id in dest_ids:
                self._send(self._own_data, dest_id)

    def _recv_packages(self, packages: list) -> None:
        super()._recv_packages(packages)
        if self._on_received is None:
            return
        with self._inbox_lock:
            post = not self._inbox
            self._inbox.extend((p.source_id, bytes(p.data)) for p in packages)
        if post:
            yoton.call_later(self._deliver_inbox, 0)

    def _deliver_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
        decode = self.message_from_bytes
        self._on_received([(source, decode(data)) for source, data in items])


class Injector:
    """Routes text on a slot as if it had arrived from another context.

    Forwarded packages are queued on each connection up to yoton's forward limit
    and beyond it dropped and counted in ``connection.dropped``, so a stopped
    client costs bounded memory and never blocks the caller. Thread-safe.
    """

    def __init__(self, context: yoton.Context, channel: yoton.PubChannel) -> None:
        self._context = context
        self._slot = channel._slot_out_h
        self._to_bytes = channel.message_to_bytes
        self._lock = threading.Lock()
        self._seq = 0
        self.source_id = int.from_bytes(os.urandom(8), "little") | 1

    def send(self, message: Any, via: yoton.Connection | None = None) -> None:
        """Route a message to every connection except ``via``."""
        data = self._to_bytes(message)
        if not data:
            return
        with self._lock:  # sequence numbers must reach the router in order
            self._seq += 1
            frame = wire.received_frame(data, self._slot, self.source_id, self._seq)
            self._context._recv_packages([frame], via)
