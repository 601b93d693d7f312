"""Address parsing, and the name hashes for ports and slots (compatible with yoton 2.2).

Pure functions: no sockets are opened here (``publichost`` asks the resolver only).
"""

from __future__ import annotations

import ipaddress
import socket

_HASH_FACTOR = 0xD2D84A61
_MASK64 = 2**64 - 1
#: Slots 0-7 are reserved for connection- and context-level packages.
SLOT_OFFSET = 8
#: Port names hash into the IANA dynamic/private range [49152, 65535].
PORT_HASH_BASE = 49152


def _name_hash(name: str) -> int:
    # Accumulates the character codes exactly as yoton 2.2 does (unbounded int).
    value = 0
    for char in name:
        value += (value >> 3) + ord(char) * _HASH_FACTOR
    value += (value >> 3) + len(name) * _HASH_FACTOR
    return value


def slot_hash(name: str) -> int:
    """Return the 64-bit slot id of a full slot name (already lower-cased)."""
    return SLOT_OFFSET + _name_hash(name) % (2**64 - SLOT_OFFSET)


def port_hash(name: str) -> int:
    """Return the port in [49152, 65535] that a port name stands for."""
    return PORT_HASH_BASE + _name_hash(name) % 2**14


def full_slot_name(slot_base: str, type_name: str, pattern: str) -> str:
    """Return the slot name ``base.type.pattern``, stripped and lower-cased."""
    return f"{slot_base}.{type_name}.{pattern}".strip().lower()


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` into an IP/hostname and a port number.

    ``localhost`` becomes 127.0.0.1; ``publichost`` (optionally followed by an
    index) becomes one of this machine's addresses; a port that is not a number
    is hashed with :func:`port_hash`, and ``name+N`` adds an offset.
    A ``tcp://`` prefix is accepted and ignored.
    """
    if not isinstance(address, str):
        raise ValueError("An address must be a string like 'localhost:12345'.")
    protocol, _, rest = address.rpartition("://")
    if protocol and protocol.lower() != "tcp":
        raise ValueError(f"Unsupported protocol {protocol!r} in {address!r}; use tcp.")
    if ":" not in rest:
        raise ValueError(f"Address {address!r} must have the form 'host:port'.")
    host, port_text = rest.split(":", 1)
    host = _resolve_host_alias(host)
    port = parse_port(port_text)
    return host, port


def parse_port(port_text: str) -> int:
    """Return the port for a number, a name (hashed) or ``name+offset``."""
    port_text = port_text.strip()
    try:
        port = int(port_text)
    except ValueError:
        name, plus, offset_text = port_text.partition("+")
        offset = 0
        if plus:
            try:
                offset = int(offset_text)
            except ValueError:
                raise ValueError(f"Invalid port offset in {port_text!r}.") from None
        port = port_hash(name) + offset
    if not 0 <= port < 2**16:
        raise ValueError(f"Port {port} is outside the range [0, 65535].")
    return port


def _resolve_host_alias(host: str) -> str:
    lowered = host.lower()
    if lowered == "localhost":
        return "127.0.0.1"
    if lowered.startswith("publichost"):
        index_text = lowered[len("publichost") :] or "0"
        if index_text.isdigit():
            addresses = socket.gethostbyname_ex(socket.gethostname())[2]
            index = int(index_text)
            if index >= len(addresses):
                raise ValueError(
                    f"publichost{index}: this machine has only {len(addresses)} "
                    "public address(es)."
                )
            return addresses[index]
    return host


def is_loopback(host: str) -> bool:
    """Return whether ``host`` (an IP address or name) is a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False
