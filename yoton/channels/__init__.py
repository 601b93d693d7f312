"""The channel classes: pub/sub, req/rep and state."""

from .base import BaseChannel
from .pubsub import PubChannel, SubChannel, select_sub_channel
from .reqrep import Future, RepChannel, ReqChannel
from .state import StateChannel

__all__ = [
    "BaseChannel",
    "PubChannel",
    "SubChannel",
    "StateChannel",
    "Future",
    "RepChannel",
    "ReqChannel",
    "select_sub_channel",
]
