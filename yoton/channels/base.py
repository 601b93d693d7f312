"""BaseChannel: what every channel shares (slots, queue, received signal, closing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .. import events, wire
from ..addresses import full_slot_name, slot_hash
from ..context import Context
from ..errors import ConnectionClosedError
from ..message_types import TEXT, BinaryMessageType, MessageType, TextMessageType
from ..queues import Empty, PackageQueue

logger = logging.getLogger("yoton")


class BaseChannel:
    """Abstract base of all channels: a context, a slot and a message type.

    The slot is ``slot_base`` plus the message type name and the messaging
    pattern, lower-cased, so channels of different types or patterns never talk.
    """

    def __init__(
        self, context: Context, slot_base: str, message_type: Any = None
    ) -> None:
        if not isinstance(context, Context):
            raise ValueError("A channel needs a yoton.Context as first argument.")
        if message_type is None:
            message_type = TEXT
        if isinstance(message_type, type) and issubclass(message_type, MessageType):
            message_type = message_type()
        if not isinstance(message_type, MessageType):
            raise ValueError("message_type must be a yoton.MessageType instance.")
        if not isinstance(slot_base, str):
            raise ValueError("slot_base must be a string.")
        self._context = context
        self._message_type_instance = message_type
        # TextMessageType or BinaryMessageType when the channel uses exactly
        # one of those (their coding is then done inline on hot paths).
        kind = type(message_type)
        self._builtin_type = (
            kind if kind in (TextMessageType, BinaryMessageType) else None
        )
        self.message_to_bytes = message_type.message_to_bytes
        self.message_from_bytes = message_type.message_from_bytes
        self._q_in = self._queue_class(*context._queue_params, name=slot_base)
        self._closed = False
        self._received_signal = events.Signal()
        self._received_posted = False
        type_name = message_type.message_type_name()
        out_pattern, in_pattern = self._messaging_patterns()
        self._slot_out = (
            f"{slot_base}.{type_name}.{out_pattern}" if out_pattern else None
        )
        self._slot_in = f"{slot_base}.{type_name}.{in_pattern}" if in_pattern else None
        self._slot_out_h = (
            slot_hash(full_slot_name(slot_base, type_name, out_pattern))
            if out_pattern
            else 0
        )
        self._slot_in_h = (
            slot_hash(full_slot_name(slot_base, type_name, in_pattern))
            if in_pattern
            else 0
        )
        context._register_channel(
            self, self._slot_out_h, self._slot_in_h, (self._slot_out, self._slot_in)
        )

    def _messaging_patterns(self) -> tuple[str, str]:
        """Return the (outgoing, incoming) pattern names of this channel."""
        raise NotImplementedError()

    # -- documented API ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the channel is closed."""
        return self._closed

    @property
    def pending(self) -> int:
        """The number of received messages waiting to be read."""
        return len(self._q_in)

    @property
    def dropped(self) -> int:
        """Messages discarded because the receive queue was full."""
        return self._q_in.dropped

    @property
    def received(self) -> events.Signal:
        """Signal emitted (with the channel) when messages arrive; needs the event
        loop. Several arrivals may give one emit."""
        return self._received_signal

    @property
    def slot_outgoing(self) -> str | None:
        """The outgoing slot name."""
        return self._slot_out

    @property
    def slot_incoming(self) -> str | None:
        """The incoming slot name."""
        return self._slot_in

    def close(self) -> None:
        """Unregister from the context: sends raise IOError, queued messages stay."""
        if self._closed:
            return
        self._closed = True
        self._context._unregister_channel(self)
        self._q_in.close()

    def __repr__(self) -> str:
        slot = self._slot_out or self._slot_in
        return f"<{type(self).__name__} {slot!r}{' closed' if self._closed else ''}>"

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError(
                f"Cannot send on closed {type(self).__name__} "
                f"({self._slot_out or self._slot_in})."
            )

    def _send(
        self, data: bytes, dest_id: int = 0, dest_seq: int = 0, block: bool = True
    ) -> int:
        """Send encoded bytes into the network; return the source sequence number
        (0 for an empty message, which is not sent)."""
        if self._closed:
            self._check_open()
        if not data:
            return 0
        return self._context._send_frame(
            self._slot_out_h, data, dest_id, dest_seq, block
        )

    def _recv(self, block: bool | float) -> wire.Package | None:
        """Pop the next received package, or None."""
        try:
            return self._q_in.pop(block)
        except Empty:
            return None

    #: The queue of received packages (or frames).
    _queue_class = PackageQueue

    #: Whether the context deposits received frames (see
    #: wire.parse_frame_runs) with ``_recv_frames`` rather than Packages.
    _receives_items = False

    #: Whether a local send waits while a connection has too much queued
    #: (backpressure); a channel that must never block sets it to False.
    _send_blocks = True

    #: A channel that handles its packages itself sets this to a method the
    #: context calls after depositing (outside the routing lock).
    _after_deposit: Callable[[], None] | None = None

    #: Such a channel may also set this to a method that handles one received
    #: frame, called instead of depositing it when a frame arrives alone
    #: (outside the routing lock too).
    _take_frame: Callable[[tuple], None] | None = None

    def _take_reply(self, frame: tuple, source_id: int, seq: int, seen: dict) -> bool:
        """Take a lone reply in the main thread without a signal mask (see
        Context._take_reply); a requester does, other channels say False."""
        return False

    def _recv_packages(self, packages: list) -> None:
        """Called by the context (routing lock held) with packages for this slot."""
        self._q_in.push_many(packages)
        self._notify_received()

    def _notify_received(self) -> None:
        # One pending "received" event at a time, and none without handlers.
        if self._received_posted or not self._received_signal._handlers:
            return
        self._received_posted = True
        events.post_event(self._emit_received)

    def _emit_received(self) -> None:
        self._received_posted = False
        self._received_signal.emit_now(self)
