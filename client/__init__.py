"""Attach to a yoton broker from anywhere: the client library and ``yoton-console``.

``Client`` is what an IDE imports; ``client.console.main`` is the terminal.
"""

__version__ = "3.0.0.dev0"

from .client import (  # noqa: E402
    CONNECTED,
    DISCONNECTED,
    NO_HEARTBEAT,
    STREAMS,
    Client,
    Output,
    OutputIterator,
    Request,
)
from .connection_file import (  # noqa: E402
    ConnectionFileError,
    ConnectionInfo,
    read_connection_file,
    read_key_file,
)

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "NO_HEARTBEAT",
    "STREAMS",
    "Client",
    "ConnectionFileError",
    "ConnectionInfo",
    "Output",
    "OutputIterator",
    "Request",
    "read_connection_file",
    "read_key_file",
]
