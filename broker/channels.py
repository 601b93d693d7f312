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

    def _send(
        self, data: bytes, dest_id: int = 0, dest_seq: int = 0, block: bool = True
    ) -> wire.Package | None:
        return super()._send(data, dest_id, dest_seq, False)

    def send_to(self, message: Any, dest_id: int) -> None:
        """Send a message that only the context ``dest_id`` deposits."""
        self._send(self.message_to_bytes(message), dest_id)


class BrokerStateChannel(yoton.StateChannel):
    """A StateChannel that sends without blocking and never resends by itself.

    The context calls ``send_last`` whenever any context joins the network,
    the kernel included; the broker instead sends its state to each new
    client only (:meth:`send_current_to`), so a kernel never sees broker-made
    states. ``on_received(source_id, message)`` is called from the event loop for
    every received state.
    """

    def __init__(
        self,
        context: yoton.Context,
        slot_base: str,
        message_type: Any = None,
        on_received: Callable[[int, Any], None] | None = None,
    ) -> None:
        super().__init__(context, slot_base, message_type)
        self._on_received = on_received

    def _send(
        self, data: bytes, dest_id: int = 0, dest_seq: int = 0, block: bool = True
    ) -> wire.Package | None:
        return super()._send(data, dest_id, dest_seq, False)

    def send(self, message: Any) -> None:
        """Set the state and send it to everyone; unchanged states are not sent."""
        # Unlike StateChannel.send, the state lock is not held while sending: the
        # context calls _recv_packages with its routing lock held, and that takes
        # the state lock, so holding both the other way round can deadlock.
        data = self.message_to_bytes(message)
        if not data:
            return
        with self._state_lock:
            if self._has_state and data == self._current_data:
                return
            self._current_data = data
            self._current_message = self.message_from_bytes(data)
            self._has_state = True
        self._send(data)

    def send_last(self) -> None:
        """Do nothing: see the class docstring."""

    @property
    def has_state(self) -> bool:
        """Whether a state was sent or received."""
        return self._has_state

    def send_to(self, message: Any, dest_ids: Iterable[int]) -> None:
        """Set the state and send it addressed to each of ``dest_ids``."""
        data = self.message_to_bytes(message)
        if not data:
            return
        with self._state_lock:
            self._current_data = data
            self._current_message = self.message_from_bytes(data)
            self._has_state = True
        for dest_id in dest_ids:
            self._send(data, dest_id)

    def send_current_to(self, dest_id: int) -> None:
        """Send the current state, if any, addressed to one context."""
        with self._state_lock:
            data = self._current_data if self._has_state else b""
        if data:
            self._send(data, dest_id)

    def _recv_packages(self, packages: list) -> None:
        super()._recv_packages(packages)
        if self._on_received is not None:
            for package in packages:
                message = self.message_from_bytes(package.data)
                yoton.call_later(self._on_received, 0, package.source_id, message)


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
            package = wire.Package(data, self._slot, self.source_id, self._seq)
            self._context._recv_packages([package], via)
