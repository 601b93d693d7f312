"""The yoton exception hierarchy: every error yoton raises derives from YotonError.

Like h11, errors say whose fault they are: a ``LocalProtocolError`` means this
process asked for something the protocol does not allow, a ``RemoteProtocolError``
means the peer sent something invalid.
"""

from __future__ import annotations


class YotonError(Exception):
    """Base class of every error raised by yoton."""


class ProtocolError(YotonError):
    """Something on the wire does not follow protocol.md."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (bad greeting, bad header, ...)."""


class LocalProtocolError(ProtocolError):
    """This process tried to send something the protocol cannot carry."""


class MessageTooLargeError(RemoteProtocolError):
    """A frame announced a payload larger than the configured maximum size."""


class AuthenticationError(YotonError):
    """The handshake failed because a key was wrong or missing on one side."""


class ConnectionClosedError(YotonError, OSError):
    """The connection (or channel) is closed; nothing more can be sent on it."""


class EncodeError(YotonError, ValueError):
    """A message cannot be encoded with the channel's message type."""


class DecodeError(YotonError, ValueError):
    """Bytes received could not be decoded into a message."""


class TimeoutError(YotonError, TimeoutError):  # noqa: A001 - mirrors the yoton API
    """A blocking call did not complete within its timeout."""


class CancelledError(YotonError):
    """The result of a Future is unavailable because the request was cancelled."""


class RemoteError(YotonError):
    """An exception raised by the remote side while handling a request.

    ``type_name`` is the remote exception's class name, ``message`` its text and
    ``remote_traceback`` the formatted traceback from the replier's process.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = ""):
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}")

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class ReplierLostError(YotonError):
    """The replier handling a request disconnected before it sent the reply."""


class ConnectFailedError(YotonError, ConnectionError):
    """connect() could not reach a yoton context at the given address."""
