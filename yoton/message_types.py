"""Message types: how a channel turns messages into bytes and back.

A channel is agnostic of what it carries; a :class:`MessageType` converts each
message. Three are built in: :data:`TEXT` (``"txt"``), :data:`BINARY` (``"bin"``)
and :data:`OBJECT` (``"obj"``). The name ends up in the slot name, so only
channels with the same message type name connect to each other.

Object codec (``"obj"``), byte-compatible with yoton 2.2. A value is one type
byte followed by its body; all numbers are little-endian:

====  ==========  ========================================================
code  type        body
====  ==========  ========================================================
n     None        nothing
b     bool        one byte, 0 or 1
i     int         signed 64-bit (``<q``)
f     float       IEEE 754 double (``<d``)
s     str         length, then that many bytes of UTF-8
l     list        count, then count values
t     tuple       count, then count values
d     dict        count, then count (key, value) pairs of values
y     bytes       length, then that many raw bytes (extension, see below)
====  ==========  ========================================================

A length or count is one byte if it is below 255, otherwise the byte 255 followed
by an unsigned 64-bit integer (``<Q``). An empty message decodes to None.

Extension: ``y`` carries bytes (bytearray and memoryview are sent as bytes too).
yoton 2.2 has no such code and rejects it, so do not send bytes to a 2.2 peer.

Decoding only builds data; nothing is imported, looked up or executed. Any input
gives either a value or :class:`~yoton.errors.DecodeError`: lengths are checked
against the bytes left before anything is allocated, nesting is limited to
:data:`MAX_DEPTH` containers, and trailing bytes are an error.
"""

from __future__ import annotations

import struct
from typing import Any

from yoton.errors import DecodeError, EncodeError

__all__ = [
    "MAX_DEPTH",
    "MessageType",
    "TextMessageType",
    "BinaryMessageType",
    "ObjectMessageType",
    "TEXT",
    "BINARY",
    "OBJECT",
    "encode_object",
    "decode_object",
]

#: Maximum number of containers (list, tuple, dict) nested inside each other.
MAX_DEPTH = 100


class MessageType:
    """Base class for message types; subclass it to send your own kind of message.

    Override all three methods. The name returned by ``message_type_name`` becomes
    part of the slot, so channels only connect to channels of the same type name.
    """

    def message_to_bytes(self, message: Any) -> bytes:
        """Convert a message to the bytes that are sent."""
        raise NotImplementedError()

    def message_from_bytes(self, bb: bytes) -> Any:
        """Convert received bytes back to a message."""
        raise NotImplementedError()

    def message_type_name(self) -> str:
        """Short name of this type (e.g. ``"txt"``), used in slot names."""
        raise NotImplementedError()

    def __repr__(self) -> str:
        try:
            name = self.message_type_name()
        except NotImplementedError:
            name = "?"
        return f"<{type(self).__name__} {name!r}>"


class TextMessageType(MessageType):
    """Unicode text messages, sent as UTF-8. Available as :data:`TEXT`."""

    def message_type_name(self) -> str:
        """Return ``"txt"``."""
        return "txt"

    def message_to_bytes(self, message: Any) -> bytes:
        """Encode a str as UTF-8; bytes are taken as UTF-8 text (else their repr)."""
        if isinstance(message, str):
            try:
                return message.encode("utf-8")
            except UnicodeEncodeError as err:
                raise EncodeError(
                    f"text message cannot be encoded as UTF-8: {err}"
                ) from None
        if isinstance(message, (bytes, bytearray, memoryview)):
            raw = bytes(message)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return repr(raw).encode("utf-8")
            return raw
        raise EncodeError(
            f"a text channel sends str messages, not {type(message).__name__}"
        )

    def message_from_bytes(self, bb: bytes | bytearray | memoryview) -> str:
        """Decode UTF-8 bytes to str; invalid bytes become U+FFFD, so a peer's
        garbage never makes ``recv()`` raise."""
        return str(bb, "utf-8", "replace")


class BinaryMessageType(MessageType):
    """Raw binary messages (bytes). Available as :data:`BINARY`."""

    def message_type_name(self) -> str:
        """Return ``"bin"``."""
        return "bin"

    def message_to_bytes(self, message: Any) -> bytes:
        """Return the message as bytes (bytearray and memoryview are copied)."""
        if type(message) is bytes:
            return message
        if isinstance(message, (bytes, bytearray, memoryview)):
            return bytes(message)
        raise EncodeError(
            "a binary channel sends bytes, bytearray or memoryview messages, "
            f"not {type(message).__name__}"
        )

    def message_from_bytes(self, bb: bytes | bytearray | memoryview) -> bytes:
        """Return the received data as bytes."""
        if type(bb) is bytes:
            return bb
        return bytes(bb)


class ObjectMessageType(MessageType):
    """Messages made of None, bool, int, float, str, bytes, list, tuple and dict.

    Available as :data:`OBJECT`; see the module docstring for the format.
    """

    def message_type_name(self) -> str:
        """Return ``"obj"``."""
        return "obj"

    def message_to_bytes(self, message: Any) -> bytes:
        """Encode with :func:`encode_object`."""
        return encode_object(message)

    def message_from_bytes(self, bb: bytes | bytearray | memoryview) -> Any:
        """Decode with :func:`decode_object` (empty bytes give None)."""
        return decode_object(bb)


# --- object codec: encoding ------------------------------------------------------

_NONE = ord("n")
_BOOL = ord("b")
_INT = ord("i")
_FLOAT = ord("f")
_STR = ord("s")
_LIST = ord("l")
_TUPLE = ord("t")
_DICT = ord("d")
_BYTES = ord("y")

_TYPE_LEN = struct.Struct("<BB").pack  # type byte + short length
_TYPE_LONGLEN = struct.Struct("<BBQ").pack  # type byte + 255 + long length
_PACK_INT = struct.Struct("<Bq").pack
_PACK_FLOAT = struct.Struct("<Bd").pack
_B_NONE = bytes([_NONE])
_B_TRUE = bytes([_BOOL, 1])
_B_FALSE = bytes([_BOOL, 0])

_SUPPORTED = "None, bool, int, float, str, bytes, list, tuple, dict"


class _PathError(Exception):
    """Internal: an encoding failure travelling up, collecting its path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str] = []


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."


def _header(code: int, n: int) -> bytes:
    if n < 255:
        return _TYPE_LEN(code, n)
    return _TYPE_LONGLEN(code, 255, n)


def _encode(obj: Any, out: list[bytes], depth: int) -> None:
    """Append the encoding of obj to out; raise _PathError on failure."""
    tp = type(obj)
    # Exact types first (fast path), then subclasses in 2.2's order.
    if obj is None:
        out.append(_B_NONE)
    elif tp is str:
        _encode_str(obj, out)
    elif tp is int:
        try:
            out.append(_PACK_INT(_INT, obj))
        except struct.error:
            raise _PathError(f"int {obj} does not fit in signed 64 bits") from None
    elif tp is float:
        out.append(_PACK_FLOAT(_FLOAT, obj))
    elif tp is bool:
        out.append(_B_TRUE if obj else _B_FALSE)
    elif tp is list or tp is tuple or tp is dict:
        _encode_container(obj, out, depth)
    elif isinstance(obj, bool):
        out.append(_B_TRUE if obj else _B_FALSE)
    elif isinstance(obj, int):
        try:
            out.append(_PACK_INT(_INT, obj))
        except struct.error:
            raise _PathError(f"int {obj} does not fit in signed 64 bits") from None
    elif isinstance(obj, float):
        out.append(_PACK_FLOAT(_FLOAT, obj))
    elif isinstance(obj, str):
        _encode_str(obj, out)
    elif isinstance(obj, (list, tuple, dict)):
        _encode_container(obj, out, depth)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        bb = obj if tp is bytes else bytes(obj)
        out.append(_header(_BYTES, len(bb)))
        out.append(bb)
    else:
        name = tp.__qualname__
        if tp.__module__ != "builtins":
            name = f"{tp.__module__}.{name}"
        raise _PathError(f"unsupported type {name} (supported: {_SUPPORTED})")


def _encode_str(obj: str, out: list[bytes]) -> None:
    try:
        bb = str.encode(obj, "utf-8")
    except UnicodeEncodeError as err:
        raise _PathError(f"str is not encodable as UTF-8 ({err.reason})") from None
    out.append(_header(_STR, len(bb)))
    out.append(bb)


def _encode_container(obj: Any, out: list[bytes], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _PathError(
            f"containers nested more than {MAX_DEPTH} deep (cyclic structure?)"
        )
    depth += 1
    if isinstance(obj, dict):
        out.append(_header(_DICT, len(obj)))
        for i, (key, value) in enumerate(obj.items()):
            try:
                _encode(key, out, depth)
            except _PathError as err:
                err.segments.append(f"<key #{i}>")
                raise
            try:
                _encode(value, out, depth)
            except _PathError as err:
                err.segments.append(f"[{_short_repr(key)}]")
                raise
        return
    n = len(obj)
    code = _LIST if isinstance(obj, list) else _TUPLE
    out.append(_TYPE_LEN(code, n) if n < 255 else _TYPE_LONGLEN(code, 255, n))
    _encode_items(obj, out, depth)


def _encode_items(obj: list | tuple, out: list[bytes], depth: int) -> None:
    """Append the encodings of the items of a list or tuple (at ``depth``)."""
    append = out.append
    i = 0
    try:
        # Scalars inline (this loop runs for every RPC call); the rest recurses.
        for i, item in enumerate(obj):  # noqa: B007 - i is used on error
            tp = type(item)
            if tp is str:
                bb = str.encode(item, "utf-8")
                size = len(bb)
                append(
                    _TYPE_LEN(_STR, size)
                    if size < 255
                    else _TYPE_LONGLEN(_STR, 255, size)
                )
                append(bb)
            elif tp is int:
                append(_PACK_INT(_INT, item))
            elif tp is float:
                append(_PACK_FLOAT(_FLOAT, item))
            elif item is None:
                append(_B_NONE)
            else:
                _encode(item, out, depth)
    except _PathError as err:
        err.segments.append(f"[{i}]")
        raise
    except (UnicodeEncodeError, struct.error):
        err = _PathError("")
        try:
            _encode(obj[i], [], depth)  # the slow path names the problem
        except _PathError as found:
            err = found
        err.segments.append(f"[{i}]")
        raise err from None


def encode_object(obj: Any) -> bytes:
    """Encode a value (None, bool, int, float, str, bytes, list, tuple, dict).

    Raises EncodeError naming the offending type and where it sits in the value.
    """
    tp = type(obj)
    if tp is str:  # a scalar reply, the usual RPC result: written directly
        try:
            raw = str.encode(obj, "utf-8")
        except UnicodeEncodeError:
            raw = None  # the general way names the problem
        if raw is not None and len(raw) < 255:
            return _TYPE_LEN(_STR, len(raw)) + raw
    elif tp is int and -(2**63) <= obj < 2**63:
        return _PACK_INT(_INT, obj)
    elif obj is None:
        return _B_NONE
    out: list[bytes] = []
    try:
        _encode(obj, out, 0)
    except _PathError as err:
        path = "value" + "".join(reversed(err.segments))
        if len(path) > 200:
            path = path[:100] + "..." + path[-97:]
        raise EncodeError(f"cannot encode {path}: {err.reason}") from None
    except RecursionError:
        raise EncodeError("cannot encode value: nested too deeply") from None
    return b"".join(out)


_REQUEST_HEAD = _TYPE_LEN(_TUPLE, 3)
_EMPTY_DICT = bytes([_DICT, 0])
#: The type byte and short length of a str of each short size, and of a tuple
#: of each short count (made once: packing them costs more than indexing).
_STR_HEADS = [_TYPE_LEN(_STR, n) for n in range(255)]
_TUPLE_HEADS = [_TYPE_LEN(_TUPLE, n) for n in range(255)]
#: Encoded "tuple of 3, then this name" prefixes of requests, by name.
_request_prefixes: dict[str, bytes] = {}
_MAX_PREFIXES = 1024


def _request_prefix(name: str) -> bytes:
    raw = str.encode(name, "utf-8")  # UnicodeEncodeError: the caller's problem
    if len(raw) >= 255:
        raise _PathError("")  # long: the general way
    if len(_request_prefixes) >= _MAX_PREFIXES:
        _request_prefixes.clear()
    prefix = _request_prefixes[name] = _REQUEST_HEAD + _STR_HEADS[len(raw)] + raw
    return prefix


def encode_request(name: str, args: tuple, kwargs: dict) -> bytes:
    """``encode_object((name, args, kwargs))``, the shape of every RPC call,
    with the name, short strings and ints among the arguments and an empty
    kwargs written directly (anything else goes the general way)."""
    if type(name) is str and type(args) is tuple and type(kwargs) is dict:
        try:
            parts = [_request_prefixes.get(name) or _request_prefix(name)]
            parts.append(_TUPLE_HEADS[len(args)])  # IndexError: a long tuple
            for item in args:
                tp = type(item)
                if tp is str:
                    raw = item.encode()  # an exact str: its own (UTF-8) encode
                    parts.append(_STR_HEADS[len(raw)])  # IndexError: a long str
                    parts.append(raw)
                elif tp is int:
                    parts.append(_PACK_INT(_INT, item))
                elif item is None:
                    parts.append(_B_NONE)
                else:
                    _encode(item, parts, 2)
            if kwargs:
                _encode_container(kwargs, parts, 1)
            else:
                parts.append(_EMPTY_DICT)
            return b"".join(parts)
        except (_PathError, UnicodeEncodeError, IndexError, struct.error):
            pass
    return encode_object((name, args, kwargs))  # raises, naming the path


# --- object codec: decoding ------------------------------------------------------

_unpack_q = struct.Struct("<q").unpack_from
_unpack_d = struct.Struct("<d").unpack_from
_unpack_Q = struct.Struct("<Q").unpack_from


def _read_len(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Read a length/count at pos; return (n, new_pos)."""
    if pos >= end:
        raise DecodeError(f"truncated data: length expected at byte {pos}")
    n = buf[pos]
    pos += 1
    if n == 255:
        if pos + 8 > end:
            raise DecodeError(f"truncated data: 64-bit length expected at byte {pos}")
        n = _unpack_Q(buf, pos)[0]
        pos += 8
    return n, pos


def _decode(buf: bytes | memoryview, pos: int, end: int, depth: int) -> tuple[Any, int]:
    """Decode one value starting at pos; return (value, new_pos)."""
    if pos >= end:
        raise DecodeError(f"truncated data: value expected at byte {pos}")
    code = buf[pos]
    start = pos
    pos += 1
    if code == _STR:
        n = buf[pos] if pos < end else 255  # a short length inline, else the slow way
        if n == 255:
            n, pos = _read_len(buf, pos, end)
        else:
            pos += 1
        if n > end - pos:
            raise DecodeError(
                f"str at byte {start} declares {n} bytes, only {end - pos} left"
            )
        try:
            return str(buf[pos : pos + n], "utf-8"), pos + n
        except UnicodeDecodeError as err:
            raise DecodeError(
                f"str at byte {start} is not valid UTF-8: {err}"
            ) from None
    if code == _INT:
        if pos + 8 > end:
            raise DecodeError(f"truncated int at byte {start}")
        return _unpack_q(buf, pos)[0], pos + 8
    if code == _FLOAT:
        if pos + 8 > end:
            raise DecodeError(f"truncated float at byte {start}")
        return _unpack_d(buf, pos)[0], pos + 8
    if code == _NONE:
        return None, pos
    if code == _BOOL:
        if pos >= end:
            raise DecodeError(f"truncated bool at byte {start}")
        b = buf[pos]
        if b > 1:
            raise DecodeError(f"bool at byte {start} has invalid value {b}")
        return b == 1, pos + 1
    if code == _LIST or code == _TUPLE or code == _DICT:
        if depth >= MAX_DEPTH:
            raise DecodeError(
                f"containers nested more than {MAX_DEPTH} deep at byte {start}"
            )
        depth += 1
        n = buf[pos] if pos < end else 255  # a short count inline, else the slow way
        if n == 255:
            n, pos = _read_len(buf, pos, end)
        else:
            pos += 1
        # Every value takes at least one byte: refuse counts the data cannot hold.
        need = 2 * n if code == _DICT else n
        if need > end - pos:
            raise DecodeError(
                f"container at byte {start} declares {n} items, "
                f"only {end - pos} bytes left"
            )
        if code == _DICT:
            result: dict[Any, Any] = {}
            for _ in range(n):
                kpos = pos
                key, pos = _decode(buf, pos, end, depth)
                value, pos = _decode(buf, pos, end, depth)
                try:
                    result[key] = value
                except TypeError:
                    raise DecodeError(
                        f"dict key at byte {kpos} is unhashable ({type(key).__name__})"
                    ) from None
            return result, pos
        items, pos = _decode_items(buf, pos, end, n, depth)
        return (items if code == _LIST else tuple(items)), pos
    if code == _BYTES:
        n, pos = _read_len(buf, pos, end)
        if n > end - pos:
            raise DecodeError(
                f"bytes at byte {start} declares {n} bytes, only {end - pos} left"
            )
        return bytes(buf[pos : pos + n]), pos + n
    raise DecodeError(f"unknown type code 0x{code:02x} at byte {start}")


def decode_object(data: bytes | bytearray | memoryview) -> Any:
    """Decode bytes made by :func:`encode_object` (or yoton 2.2) into a value.

    Only data is built; any malformed input raises DecodeError.
    """
    if type(data) is bytes:  # the usual case: index and slice it directly
        if len(data) >= 2 and data[0] == _STR and data[1] == len(data) - 2 < 255:
            try:  # a short str alone, the usual RPC result
                return data[2:].decode()
            except UnicodeDecodeError:
                pass  # the general way raises the DecodeError
        return _decode_all(data)
    try:
        mv = memoryview(data)
    except TypeError:
        raise DecodeError(
            f"cannot decode {type(data).__name__}, expected bytes"
        ) from None
    with mv:
        if not mv.c_contiguous:  # e.g. a strided slice: copy it
            view = memoryview(mv.tobytes())
        elif mv.ndim != 1 or mv.format != "B":
            view = mv.cast("B")
        else:
            view = mv
        with view:
            return _decode_all(view)


def decode_request(data: bytes | bytearray | memoryview) -> Any:
    """``decode_object(data)``, faster for what :func:`encode_request` makes
    (anything else, or anything malformed, takes the general way)."""
    if type(data) is bytes and data[:3] == _REQUEST_NAME:
        try:
            pos = 4 + data[3]
            name = data[4:pos].decode()  # bytes.decode: half the cost of str()
            count = data[pos + 1]
            end = len(data)
            if data[3] < 255 and data[pos] == _TUPLE and count <= end - pos - 2:
                args, pos = _decode_items(data, pos + 2, end, count, 2)
                if pos == end - 2 and data[pos:] == _EMPTY_DICT:
                    return name, tuple(args), {}
                if pos < end - 2:
                    kwargs, stop = _decode(data, pos, end, 1)
                    if stop == end and type(kwargs) is dict:
                        return name, tuple(args), kwargs
        except (IndexError, UnicodeDecodeError, DecodeError, RecursionError):
            pass
    return decode_object(data)  # says what is wrong, if anything


_REQUEST_NAME = _REQUEST_HEAD + bytes([_STR])


_bytes_decode = bytes.decode  # (looking it up on bytes costs a generic lookup a call)


def _utf8_text(raw: memoryview) -> str:
    return str(raw, "utf-8")


def _decode_items(
    buf: bytes | memoryview, pos: int, end: int, n: int, depth: int
) -> tuple[list, int]:
    """Decode the ``n`` items of a list or tuple from ``pos`` (at ``depth``);
    the caller checked that ``n`` fits the data."""
    items = []  # (items.append: a bound method costs more for the few of a call)
    text = _bytes_decode if type(buf) is bytes else _utf8_text
    while n:  # (cheaper than a range loop for the few items of a call)
        n -= 1
        # Short strings and ints inline (every RPC call has some); anything
        # else, and every irregular case, goes through _decode.
        item_code = buf[pos] if pos < end else -1
        if item_code == _STR and pos + 2 <= end:
            size = buf[pos + 1]
            stop = pos + 2 + size
            if size < 255 and stop <= end:
                try:
                    items.append(text(buf[pos + 2 : stop]))
                    pos = stop
                    continue
                except UnicodeDecodeError:
                    pass  # _decode raises the DecodeError
        elif item_code == _INT and pos + 9 <= end:
            items.append(_unpack_q(buf, pos + 1)[0])
            pos += 9
            continue
        value, pos = _decode(buf, pos, end, depth)
        items.append(value)
    return items, pos


def _decode_all(buf: bytes | memoryview) -> Any:
    end = len(buf)
    if end == 0:
        return None
    try:
        value, pos = _decode(buf, 0, end, 0)
    except RecursionError:
        raise DecodeError("data nested too deeply") from None
    if pos != end:
        raise DecodeError(f"{end - pos} trailing bytes after the value (at byte {pos})")
    return value


#: Unicode text messages (``"txt"``).
TEXT = TextMessageType()
#: Binary messages (``"bin"``).
BINARY = BinaryMessageType()
#: Python data messages (``"obj"``).
OBJECT = ObjectMessageType()
