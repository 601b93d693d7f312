"""yoton: connect Python processes into a network and talk over named channels.

Contexts connect over TCP; channels on named slots exchange messages with the
pub/sub, req/rep and state patterns. The public names below follow the
documented yoton 2.2 API; see protocol.md for the wire format.
"""

from . import events
from .channels import (
    BaseChannel,
    Future,
    PubChannel,
    RepChannel,
    ReqChannel,
    StateChannel,
    SubChannel,
    select_sub_channel,
)
from .clientserver import NoServerError, RequestServer, do_request
from .connection import Connection, ConnectionCollection, TcpConnection
from .context import Context
from .errors import (
    AuthenticationError,
    CancelledError,
    ConnectFailedError,
    ConnectionClosedError,
    DecodeError,
    EncodeError,
    LocalProtocolError,
    MessageTooLargeError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    ReplierLostError,
    TimeoutError,
    YotonError,
)
from .events import (
    Signal,
    Timer,
    call_later,
    embed_event_loop,
    process_events,
    start_event_loop,
    stop_event_loop,
)
from .hosting import Listener
from .message_types import (
    BINARY,
    OBJECT,
    TEXT,
    BinaryMessageType,
    MessageType,
    ObjectMessageType,
    TextMessageType,
)
from .wire import Package

__version__ = "3.0.0.dev0"

__all__ = [
    "BINARY",
    "OBJECT",
    "TEXT",
    "AuthenticationError",
    "BaseChannel",
    "BinaryMessageType",
    "CancelledError",
    "ConnectFailedError",
    "Connection",
    "ConnectionClosedError",
    "ConnectionCollection",
    "Context",
    "Future",
    "NoServerError",
    "RepChannel",
    "ReqChannel",
    "RequestServer",
    "do_request",
    "DecodeError",
    "EncodeError",
    "Listener",
    "LocalProtocolError",
    "MessageTooLargeError",
    "MessageType",
    "ObjectMessageType",
    "Package",
    "ProtocolError",
    "PubChannel",
    "RemoteError",
    "RemoteProtocolError",
    "ReplierLostError",
    "Signal",
    "StateChannel",
    "SubChannel",
    "TcpConnection",
    "TextMessageType",
    "Timer",
    "TimeoutError",
    "YotonError",
    "call_later",
    "embed_event_loop",
    "events",
    "process_events",
    "select_sub_channel",
    "start_event_loop",
    "stop_event_loop",
]
