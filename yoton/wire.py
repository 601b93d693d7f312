"""The yoton wire format as pure functions and small state machines (no sockets).

A connection starts with a text greeting (one CRLF-terminated line each way,
optionally followed by an HMAC challenge-response), then carries frames: a
56-byte header of seven little-endian u64 (control word, slot, source id,
source sequence, destination id, destination sequence, payload length) and the
payload. protocol.md is the normative description; this module implements it.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import struct
from typing import NamedTuple

from .errors import AuthenticationError, MessageTooLargeError, RemoteProtocolError

HEADER = struct.Struct("<7Q")
HEADER_SIZE = HEADER.size  # 56
#: The first u64 of every header: b"YOTON   " read as a little-endian integer.
CONTROL_WORD: int = struct.unpack("<Q", b"YOTON".ljust(8))[0]

#: Connection-level packages (heartbeat, close) use this slot and carry no payload.
SLOT_DUMMY = 1
#: Context-level packages of yoton 2.2 ("NEW_CONNECTION", "CLOSE_CONNECTION").
SLOT_CONTEXT = 2
#: Context-level packages of our extension; 2.2 peers route but never deposit them.
SLOT_CONTEXT_EXT = 4

SIGNAL_HEARTBEAT = 0
SIGNAL_CLOSE = 1

#: Default limit on one payload; a header announcing more closes the connection.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 30
#: Longest greeting line accepted, CRLF included.
MAX_GREETING_LINE = 512
#: Seconds a peer has to complete the greeting.
HANDSHAKE_TIMEOUT = 5.0


class Package:
    """One routed unit: a payload addressed at a slot, with its origin and reply-to."""

    __slots__ = (
        "data",
        "slot",
        "source_id",
        "source_seq",
        "dest_id",
        "dest_seq",
        "recv_seq",
        "_keep",  # a tracked frame (see LargeMessageWindow), kept alive
    )

    def __init__(
        self,
        data: bytes,
        slot: int,
        source_id: int = 0,
        source_seq: int = 0,
        dest_id: int = 0,
        dest_seq: int = 0,
        recv_seq: int = 0,
    ) -> None:
        self.data = data
        self.slot = slot
        self.source_id = source_id
        self.source_seq = source_seq
        self.dest_id = dest_id
        self.dest_seq = dest_seq
        self.recv_seq = recv_seq

    def header(self) -> bytes:
        """Return the 56-byte header of this package."""
        return HEADER.pack(
            CONTROL_WORD,
            self.slot,
            self.source_id,
            self.source_seq,
            self.dest_id,
            self.dest_seq,
            len(self.data),
        )

    def __repr__(self) -> str:
        return (
            f"<Package slot={self.slot} from={self.source_id:016x}:{self.source_seq} "
            f"to={self.dest_id:016x}:{self.dest_seq} {len(self.data)} bytes>"
        )


def encode_header(
    slot: int, source_id: int, source_seq: int, dest_id: int, dest_seq: int, size: int
) -> bytes:
    """Return the 56-byte frame header for the given fields."""
    return HEADER.pack(
        CONTROL_WORD, slot, source_id, source_seq, dest_id, dest_seq, size
    )


def encode_header_head(slot: int, source_id: int) -> bytes:
    """Return the first 24 bytes of a header (control word, slot, source id):
    the same for every package one context sends on one slot."""
    return HEADER_HEAD.pack(CONTROL_WORD, slot, source_id)


#: The 24 bytes of :func:`encode_header_head`, unpacked.
HEADER_HEAD = struct.Struct("<3Q")
#: The last 32 bytes of a header without destination: (source seq, size),
#: with destination id and sequence 0. Appended to a head, a whole header.
HEADER_TAIL_UNADDRESSED = struct.Struct("<Q16xQ")

HEARTBEAT_FRAME = encode_header(SLOT_DUMMY, 0, SIGNAL_HEARTBEAT, 0, 0, 0)
CLOSE_FRAME = encode_header(SLOT_DUMMY, 0, SIGNAL_CLOSE, 0, 0, 0)


class ParseResult(NamedTuple):
    """What :func:`parse_frames` found in a buffer."""

    packages: list  # complete packages, in order (connection-level ones included)
    consumed: int  # offset just after the last complete frame
    pending_size: int  # total size of the incomplete frame at ``consumed`` (0: unknown)


# A received frame is the tuple one struct unpack of the whole frame gives:
# (head, source seq, dest id, dest seq, size, payload), where head is the raw
# 24 bytes of control word, slot and source id (the same for every frame one
# context sends on one slot; routing decodes it only when it changes). One
# tuple, one bytes head, one int and the payload: the fewest objects a frame
# can cost; the router turns frames into Packages only for channels that want
# Packages.
F_HEAD = 0
F_SOURCE_SEQ = 1
F_DEST_ID = 2
F_DEST_SEQ = 3
F_DATA = 5
HEAD_SIZE = HEADER_HEAD.size  # 24
#: The last 32 bytes of a header (source seq, dest id, dest seq, size).
HEADER_REST = struct.Struct("<4Q")
_CONTROL_AND_SIZE = struct.Struct("<Q40xQ").unpack_from
#: (unpack_from, iter_unpack) of whole frames by payload size (sizes repeat:
#: a stream's messages are alike).
_frame_structs: dict[int, tuple] = {}
_MAX_FRAME_STRUCTS = 512
#: A run of this many alike frames (same size, head and destination) makes
#: the parser unpack the next ones in bulk, twice as many each time it was right.
BULK_MIN = 8
_heads_of = operator.itemgetter(F_HEAD)
_dests_of = operator.itemgetter(F_DEST_ID)
_sizes_of = operator.itemgetter(4)


def _frame_struct(size: int) -> tuple:
    """Return (unpack_from, iter_unpack) of a frame with a ``size``-byte payload."""
    methods = _frame_structs.get(size)
    if methods is None:
        frame_struct = struct.Struct(f"<{HEAD_SIZE}s4Q{size}s")
        if len(_frame_structs) >= _MAX_FRAME_STRUCTS:
            _frame_structs.clear()
        methods = _frame_structs[size] = (
            frame_struct.unpack_from,
            frame_struct.iter_unpack,
        )
    return methods


#: Heads seen lately -> (slot, source id). Frames of one stream share their
#: head, so the parser checks a head (and the router splits it) once, with a
#: dict lookup after that. Bounded: cleared when full.
known_heads: dict[bytes, tuple[int, int]] = {}
_MAX_KNOWN_HEADS = 4096


def split_head(head: bytes) -> tuple[int, int]:
    """Return (slot, source id) of a frame's head; RemoteProtocolError if its
    control word is wrong."""
    known = known_heads.get(head)
    if known is None:
        control, slot, source_id = HEADER_HEAD.unpack(head)
        if control != CONTROL_WORD:
            raise _bad_control_word(control)
        if len(known_heads) >= _MAX_KNOWN_HEADS:
            known_heads.clear()
        known = known_heads[head] = (slot, source_id)
    return known


def _bad_control_word(control: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"Bad frame header (control word {control:#018x}); lost track of the stream."
    )


def frame_source_id(frame: tuple) -> int:
    """Return the source id of a received frame."""
    return split_head(frame[F_HEAD])[1]


def frame_header(frame: tuple) -> bytes:
    """Return the 56-byte header of a received frame (to forward it)."""
    return frame[F_HEAD] + HEADER_REST.pack(*frame[1:5])


def received_frame(
    data: bytes,
    slot: int,
    source_id: int = 0,
    source_seq: int = 0,
    dest_id: int = 0,
    dest_seq: int = 0,
) -> tuple:
    """Return the received frame of a package made here (as if received)."""
    head = encode_header_head(slot, source_id)
    return head, source_seq, dest_id, dest_seq, len(data), data


def package_from_frame(frame: tuple, recv_seq: int = 0) -> Package:
    """Return the :class:`Package` of a received frame."""
    head, sseq, did, dseq, _, data = frame
    slot, sid = split_head(head)
    package = Package(data, slot, sid, sseq, did, dseq, recv_seq)
    if type(frame) is not tuple:  # tracked: it lives as long as the package
        package._keep = frame
    return package


def parse_frames(
    buffer: bytes | bytearray | memoryview,
    start: int,
    end: int,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> ParseResult:
    """Parse every complete frame in ``buffer[start:end]``.

    Returns the packages (payloads copied out as bytes) and where parsing
    stopped. ``pending_size`` is the full size (header + payload) of a frame whose
    header is complete but whose payload is not, so the caller can read the
    rest directly. Raises RemoteProtocolError on a bad control word and
    MessageTooLargeError on a payload above ``max_message_size``; nothing is
    allocated for a forged length.
    """
    frames, _, consumed, pending, _ = parse_frame_runs(
        buffer, start, end, max_message_size
    )
    packages = [package_from_frame(frame) for frame in frames]
    return ParseResult(packages, consumed, pending)


def lone_frame(
    buffer: bytes | bytearray | memoryview,
    start: int,
    end: int,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple | None:
    """The frame ``buffer[start:end]`` holds if it holds exactly one valid
    frame (the usual case for a call or a reply), else None."""
    if end - start < HEADER_SIZE:
        return None
    control, size = _CONTROL_AND_SIZE(buffer, start)
    if (
        end - start != HEADER_SIZE + size
        or control != CONTROL_WORD
        or size > max_message_size
    ):
        return None
    return (_frame_structs.get(size) or _frame_struct(size))[0](buffer, start)


def parse_frame_runs(
    buffer: bytes | bytearray | memoryview,
    start: int,
    end: int,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[list, list, int, int, int]:
    """:func:`parse_frames` as received frames (see F_HEAD), in runs.

    Returns (frames, runs, consumed, pending_size, signals): ``runs`` are the
    indexes in ``frames`` where a run starts (frames in a run share their head
    and destination, so the router treats them as one); ``signals`` is 0 if
    no connection-level frame (slot 1) is among them.
    """
    frame = lone_frame(buffer, start, end, max_message_size)
    if frame is not None:
        head = frame[0]
        dummy = (known_heads.get(head) or split_head(head))[0] == SLOT_DUMMY
        return [frame], [0], end, 0, 1 if dummy else 0
    frames = []
    append = frames.append
    runs = []
    signals = 0
    pos = start
    size = -1
    frame_len = 0
    unpack = iter_unpack = None
    head = dest = None
    alike = False  # the last two frames had the same size: guess it again
    streak = 0  # alike frames in a row
    bulk = BULK_MIN
    heads = known_heads
    while end - pos >= HEADER_SIZE:
        frame = None
        if alike:
            count = min((end - pos) // frame_len, bulk)
            if streak >= BULK_MIN and count >= BULK_MIN:
                # More like them likely follow: unpack many in one call and keep
                # those alike (same size, head and destination, checked in C).
                with memoryview(buffer) as view:
                    chunk = list(iter_unpack(view[pos : pos + count * frame_len]))
                if (
                    list(map(_sizes_of, chunk)).count(size) == count
                    and list(map(_heads_of, chunk)).count(head) == count
                    and list(map(_dests_of, chunk)).count(dest) == count
                ):
                    frames += chunk
                    pos += count * frame_len
                    bulk *= 2
                    continue
                for count, frame in enumerate(chunk):  # noqa: B007
                    if frame[4] != size or frame[0] != head or frame[2] != dest:
                        break
                frames += chunk[:count]
                pos += count * frame_len
                chunk = frame = None  # that one is read again, header first
                bulk = BULK_MIN
            elif end - pos >= frame_len:
                frame = unpack(buffer, pos)
                if frame[4] != size:
                    frame = None  # not alike after all: read its header
            if frame is None:
                alike = False
                streak = 0
                continue
            streak += 1
        else:
            control, new_size = _CONTROL_AND_SIZE(buffer, pos)
            if control != CONTROL_WORD:
                raise _bad_control_word(control)
            if new_size > max_message_size:
                raise MessageTooLargeError(
                    f"Peer announced a {new_size}-byte message; the limit is "
                    f"{max_message_size} bytes (raise max_message_size if this is "
                    "wanted)."
                )
            if end - pos < HEADER_SIZE + new_size:
                return frames, runs, pos, HEADER_SIZE + new_size, signals
            if new_size == size:
                alike = True
            else:
                size = new_size
                frame_len = HEADER_SIZE + size
                unpack, iter_unpack = _frame_structs.get(size) or _frame_struct(size)
            frame = unpack(buffer, pos)
        if frame[0] != head or frame[2] != dest:
            runs.append(len(frames))
            dest = frame[2]
            if frame[0] != head:
                head = frame[0]
                if (heads.get(head) or split_head(head))[0] == SLOT_DUMMY:
                    signals += 1
        append(frame)
        pos += frame_len
    return frames, runs, pos, 0, signals


def decode_header(header: bytes | bytearray | memoryview) -> Package:
    """Decode one 56-byte header into a payload-less Package (for tests, tools)."""
    result = parse_frames(header, 0, HEADER_SIZE)
    if result.packages:
        return result.packages[0]
    control, slot, sid, sseq, did, dseq, _size = HEADER.unpack_from(header, 0)
    return Package(b"", slot, sid, sseq, did, dseq)


# -- greeting -----------------------------------------------------------------------

GREETING_PREFIX = "YOTON!"
AUTH_PREFIX = "YOTON+HMAC!"
PROOF_PREFIX = "YOTON+PROOF!"
AUTH_OK = "YOTON+OK"
ERROR_PREFIX = "ERROR: "
NONCE_SIZE = 16


def format_greeting(context_id: int, pid: int) -> bytes:
    """Return the plain yoton 2.2 greeting line: ``YOTON!<16 hex id>.<pid>\\r\\n``."""
    return f"{GREETING_PREFIX}{context_id:016x}.{pid}\r\n".encode("ascii")


def parse_id_pid(text: str) -> tuple[int, int]:
    """Parse ``<hex id>.<decimal pid>`` as found after a greeting prefix."""
    id_text, sep, pid_text = text.partition(".")
    if not sep or not id_text or len(id_text) > 16 or not pid_text.isdigit():
        raise RemoteProtocolError(f"Malformed greeting fields {text[:64]!r}.")
    try:
        context_id = int(id_text, 16)
    except ValueError:
        raise RemoteProtocolError(f"Malformed context id {id_text[:64]!r}.") from None
    if len(pid_text) > 10:
        raise RemoteProtocolError("Malformed pid in greeting.")
    return context_id, int(pid_text)


def _mac(
    key: bytes, role: bytes, nonce_c: bytes, nonce_h: bytes, id_c: int, id_h: int
) -> str:
    message = b"yoton-auth-v1|" + role + b"|" + nonce_c + nonce_h
    message += struct.pack("<QQ", id_c, id_h)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class HandshakeError(RemoteProtocolError):
    """The greeting failed; ``reply`` holds the bytes to send before closing."""

    def __init__(self, reason: str, reply: bytes = b"", auth: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
        self.auth = auth


class AuthHandshakeError(HandshakeError, AuthenticationError):
    """The greeting failed because of a wrong, missing or unexpected key."""


class _LineBuffer:
    """Collects bytes until a CRLF line is complete; bounded by MAX_GREETING_LINE."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> tuple[str | None, bytes]:
        self._data += data
        index = self._data.find(b"\r\n")
        if index < 0:
            if len(self._data) > MAX_GREETING_LINE:
                raise HandshakeError(
                    f"Greeting over {MAX_GREETING_LINE} bytes; not a yoton peer?",
                    _error_line("greeting too long"),
                )
            return None, b""
        if index > MAX_GREETING_LINE:
            raise HandshakeError(
                f"Greeting over {MAX_GREETING_LINE} bytes; not a yoton peer?",
                _error_line("greeting too long"),
            )
        line = bytes(self._data[:index])
        rest = bytes(self._data[index + 2 :])
        self._data.clear()
        try:
            return line.decode("ascii"), rest
        except UnicodeDecodeError:
            raise HandshakeError(
                "Greeting is not ASCII text; not a yoton peer?",
                _error_line("this is yoton"),
            ) from None


def _error_line(text: str) -> bytes:
    return f"{ERROR_PREFIX}{text}\r\n".encode("ascii", "replace")


class Handshake:
    """Sans-IO greeting for one side of a connection.

    Call :meth:`initiate` once and send what it returns, then feed every received
    chunk to :meth:`receive_data` and send what it returns, until ``done``.
    Bytes that arrived after the greeting are in ``leftover``: they are frames.
    On failure a :class:`HandshakeError` is raised whose ``reply`` should be sent
    before closing.
    """

    def __init__(
        self,
        is_host: bool,
        context_id: int,
        pid: int,
        key: bytes | None = None,
        nonce: bytes | None = None,
    ) -> None:
        self.is_host = is_host
        self.context_id = context_id
        self.pid = pid
        self.key = key
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self.peer_id = 0
        self.peer_pid = 0
        self.authenticated = False
        self.done = False
        self.leftover = b""
        self._lines = _LineBuffer()
        self._peer_nonce = b""
        self._state = "start"

    # -- driving -----------------------------------------------------------------

    def initiate(self) -> bytes:
        """Return the bytes this side sends first (empty for the host)."""
        if self.is_host:
            self._state = "host-wait-greeting"
            return b""
        self._state = "client-wait-greeting"
        if self.key is None:
            return format_greeting(self.context_id, self.pid)
        return (
            f"{AUTH_PREFIX}{self.context_id:016x}.{self.pid}.{self.nonce.hex()}\r\n"
        ).encode("ascii")

    def receive_data(self, data: bytes) -> bytes:
        """Feed received bytes; return the bytes to send in answer."""
        out = []
        while data and not self.done:
            line, data = self._lines.feed(data)
            if line is None:
                break
            out.append(self._handle_line(line))
        if self.done:
            self.leftover = data
        return b"".join(out)

    # -- states ------------------------------------------------------------------

    def _fail(self, reason: str, reply_text: str | None = None, auth: bool = False):
        reply = _error_line(reply_text) if reply_text else b""
        raise (AuthHandshakeError if auth else HandshakeError)(reason, reply, auth)

    def _check_self(self) -> None:
        if self.peer_id == self.context_id:
            self._fail("Handshake failed: a context cannot connect to itself.", "self")

    def _handle_line(self, line: str) -> bytes:
        handler = getattr(self, "_on_" + self._state.replace("-", "_"))
        return handler(line)

    def _on_host_wait_greeting(self, line: str) -> bytes:
        if line.startswith(GREETING_PREFIX):
            if self.key is not None:
                self._fail(
                    "Refused a peer without a key: this endpoint requires "
                    "authentication (give the same key on both sides).",
                    "this yoton endpoint requires a key (authentication)",
                    auth=True,
                )
            self.peer_id, self.peer_pid = parse_id_pid(line[len(GREETING_PREFIX) :])
            self._check_self()
            self.done = True
            return format_greeting(self.context_id, self.pid)
        if line.startswith(AUTH_PREFIX):
            if self.key is None:
                self._fail(
                    "Refused a peer that offers a key: this endpoint has none.",
                    "this yoton endpoint does not use a key",
                    auth=True,
                )
            fields = line[len(AUTH_PREFIX) :]
            head, _, nonce_hex = fields.rpartition(".")
            self.peer_id, self.peer_pid = parse_id_pid(head)
            self._peer_nonce = _parse_nonce(nonce_hex)
            self._check_self()
            mac = _mac(
                self.key,
                b"host",
                self._peer_nonce,
                self.nonce,
                self.peer_id,
                self.context_id,
            )
            self._state = "host-wait-proof"
            return (
                f"{AUTH_PREFIX}{self.context_id:016x}.{self.pid}.{self.nonce.hex()}.{mac}\r\n"
            ).encode("ascii")
        if line.startswith(ERROR_PREFIX):
            self._fail(f"Peer refused the connection: {line[len(ERROR_PREFIX) :]}")
        self._fail(
            "Handshake failed: the peer is not a yoton context.", "this is yoton"
        )

    def _on_host_wait_proof(self, line: str) -> bytes:
        if line.startswith(ERROR_PREFIX):
            self._fail(
                f"Peer refused the connection: {line[len(ERROR_PREFIX) :]}", auth=True
            )
        if not line.startswith(PROOF_PREFIX):
            self._fail("Handshake failed: expected the key proof.", "expected proof")
        expected = _mac(
            self.key,
            b"client",
            self._peer_nonce,
            self.nonce,
            self.peer_id,
            self.context_id,
        )
        if not hmac.compare_digest(expected, line[len(PROOF_PREFIX) :]):
            self._fail(
                "Refused a peer with a wrong key.",
                "authentication failed: wrong key",
                auth=True,
            )
        self.authenticated = True
        self.done = True
        return f"{AUTH_OK}\r\n".encode("ascii")

    def _on_client_wait_greeting(self, line: str) -> bytes:
        if line.startswith(ERROR_PREFIX):
            reason = line[len(ERROR_PREFIX) :]
            self._fail(
                f"The other end refused the connection: {reason}",
                auth="key" in reason or "authentication" in reason,
            )
        if self.key is None:
            if line.startswith(AUTH_PREFIX):
                self._fail("The other end requires a key.", auth=True)
            if not line.startswith(GREETING_PREFIX):
                self._fail("Handshake failed: the other end is not a yoton context.")
            self.peer_id, self.peer_pid = parse_id_pid(line[len(GREETING_PREFIX) :])
            self._check_self()
            self.done = True
            return b""
        if not line.startswith(AUTH_PREFIX):
            self._fail(
                "The other end does not support authentication (an old yoton?); "
                "connect without a key, on localhost only.",
                auth=True,
            )
        fields = line[len(AUTH_PREFIX) :]
        head, _, mac = fields.rpartition(".")
        head, _, nonce_hex = head.rpartition(".")
        self.peer_id, self.peer_pid = parse_id_pid(head)
        self._peer_nonce = _parse_nonce(nonce_hex)
        self._check_self()
        expected = _mac(
            self.key,
            b"host",
            self.nonce,
            self._peer_nonce,
            self.context_id,
            self.peer_id,
        )
        if not hmac.compare_digest(expected, mac):
            self._fail(
                "Authentication failed: the other end does not know the key "
                "(wrong key, or not the server you meant).",
                "authentication failed: wrong key",
                auth=True,
            )
        proof = _mac(
            self.key,
            b"client",
            self.nonce,
            self._peer_nonce,
            self.context_id,
            self.peer_id,
        )
        self._state = "client-wait-ok"
        return f"{PROOF_PREFIX}{proof}\r\n".encode("ascii")

    def _on_client_wait_ok(self, line: str) -> bytes:
        if line == AUTH_OK:
            self.authenticated = True
            self.done = True
            return b""
        if line.startswith(ERROR_PREFIX):
            self._fail(
                f"The other end refused the connection: {line[len(ERROR_PREFIX) :]}",
                auth=True,
            )
        self._fail("Handshake failed: unexpected answer to the key proof.")


def _parse_nonce(text: str) -> bytes:
    if len(text) != 2 * NONCE_SIZE:
        raise HandshakeError("Malformed nonce in greeting.", _error_line("bad nonce"))
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise HandshakeError(
            "Malformed nonce in greeting.", _error_line("bad nonce")
        ) from None
