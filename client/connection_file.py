"""Connection files and key files: where a broker is and the key to prove we may talk.

A connection file is JSON with at least ``"address"`` (``"host:port"``) and
``"key"`` (a string; the key bytes are its UTF-8 encoding). Other fields (the
broker's pid, a kernel name, ...) are kept in :attr:`ConnectionInfo.extra`.
Pure functions over text and paths; nothing here opens a socket.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ConnectionFileError",
    "ConnectionInfo",
    "parse_address",
    "parse_connection_info",
    "read_connection_file",
    "read_key_file",
]


class ConnectionFileError(ValueError):
    """A connection file, key file or address cannot be used (the message says why)."""


@dataclass(frozen=True)
class ConnectionInfo:
    """Where a broker listens and the key it expects (None: unauthenticated)."""

    address: str
    key: bytes | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def host(self) -> str:
        """The host part of the address."""
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        """The port part of the address."""
        return parse_address(self.address)[1]


def parse_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6]:port"``, or a bare port) into (host, port)."""
    if not isinstance(address, str) or not address.strip():
        raise ConnectionFileError(f"Not an address: {address!r} (expected host:port).")
    text = address.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConnectionFileError(
                f"Not an address: {address!r} (expected host:port)."
            )
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConnectionFileError(
            f"Bad port in address {address!r}: {port_text!r} is not a number."
        ) from None
    if not 0 < port < 65536:
        raise ConnectionFileError(f"Bad port in address {address!r}: out of range.")
    return host, port


def _key_bytes(key: Any, where: str) -> bytes | None:
    if key is None or key == "":
        return None
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise ConnectionFileError(f"{where}: the key must be a string.")


def parse_connection_info(text: str, path: str | None = None) -> ConnectionInfo:
    """Parse the JSON text of a connection file."""
    where = path or "connection file"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConnectionFileError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConnectionFileError(f"{where}: expected a JSON object.")
    address = data.get("address")
    if not isinstance(address, str):
        raise ConnectionFileError(f'{where}: no "address" ("host:port") in it.')
    parse_address(address)
    key = _key_bytes(data.get("key"), where)
    extra = {k: v for k, v in data.items() if k not in ("address", "key")}
    return ConnectionInfo(address.strip(), key, path, extra)


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file written by the broker."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConnectionFileError(f"No such connection file: {name}") from None
    except OSError as err:
        raise ConnectionFileError(
            f"Cannot read connection file {name}: {err.strerror}"
        ) from None
    return parse_connection_info(text, name)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file: the key is its text, surrounding whitespace removed.

    A JSON connection file is accepted too (its ``"key"`` is used).
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as err:
        raise ConnectionFileError(
            f"Cannot read key file {name}: {err.strerror}"
        ) from None
    stripped = text.strip()
    if stripped.startswith("{"):
        key = parse_connection_info(stripped, name).key
    else:
        key = _key_bytes(stripped, name)
    if not key:
        raise ConnectionFileError(f"Key file {name} is empty.")
    return key
