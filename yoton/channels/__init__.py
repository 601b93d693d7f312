"""The channel classes: pub/sub, req/rep and state."""

from .base import BaseChannel
from .pubsub import PubChannel, SubChannel, select_sub_channel
from .state import StateChannel

__all__ = [
    "BaseChannel",
    "PubChannel",
    "SubChannel",
    "StateChannel",
    "select_sub_channel",
]
