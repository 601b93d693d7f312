"""The state pattern: StateChannel shares one current value per slot."""

from __future__ import annotations

import threading
from typing import Any

from .base import BaseChannel


class StateChannel(BaseChannel):
    """Shares a state (the last message sent by any StateChannel on the slot).

    ``recv()`` never blocks and returns the current state; a context that
    joins the network is sent the current state automatically (send_last).
    """

    def __init__(self, context, slot_base: str, message_type: Any = None) -> None:
        super().__init__(context, slot_base, message_type)
        # _state_lock guards the fields and is taken under the routing lock, so it
        # is never held while sending; _send_lock keeps concurrent sends in order.
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._current_message = self.message_from_bytes(b"")
        self._current_data = b""
        self._has_state = False
        self._own_data: bytes | None = None  # the last state this channel set

    def _messaging_patterns(self) -> tuple[str, str]:
        return "state", "state"

    def send(self, message: Any) -> None:
        """Set the state; a state equal to the current one, or empty, is not sent."""
        data = self.message_to_bytes(message)
        if not data:
            return
        with self._send_lock:
            with self._state_lock:
                if self._has_state and data == self._current_data:
                    return
                self._current_data = data
                self._current_message = self.message_from_bytes(data)
                self._has_state = True
                self._own_data = data
            self._send(data)

    def send_last(self) -> None:
        """Send this channel's state again, to every context."""
        self._resend(0)

    def _on_new_context(self, context_id: int) -> None:
        """The context ``context_id`` joined: tell it our state (called by the
        context on NEW_CONNECTION)."""
        if type(self).send_last is not StateChannel.send_last:
            self.send_last()  # a subclass decides
        else:
            self._resend(context_id)

    def _resend(self, dest_id: int) -> None:
        # Only a state this channel set itself and that is still current is
        # resent: a state received from elsewhere is resent by its owner, so
        # a stale copy can never overwrite a newer state. A resend for one
        # newcomer is addressed to it alone.
        with self._send_lock:
            with self._state_lock:
                data = self._own_data
                if data is None or data != self._current_data or self._closed:
                    return
            self._send(data, dest_id, block=False)

    def recv(self, block: bool | float = False) -> Any:
        """Return the current state (never blocks)."""
        return self._current_message

    def _recv_packages(self, packages: list) -> None:
        data = packages[-1].data
        message = self.message_from_bytes(data)
        with self._state_lock:
            self._current_data = bytes(data)
            self._current_message = message
            self._has_state = True
        self._notify_received()
