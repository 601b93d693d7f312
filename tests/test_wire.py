"""The pure wire layer: header, frame parser, greeting and authentication."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yoton import wire
from yoton.addresses import port_hash, slot_hash, split_address
from yoton.errors import AuthenticationError, MessageTooLargeError, RemoteProtocolError

pytestmark = pytest.mark.timeout(60)

# Golden vectors (also in protocol.md).
GOLDEN_HEADER = bytes.fromhex(
    "594f544f4e202020"  # control word "YOTON   "
    "0900000000000000"  # slot 9
    "efcdab8967452301"  # source id 0x0123456789abcdef
    "0500000000000000"  # source sequence 5
    "0000000000000000"  # destination id 0
    "0000000000000000"  # destination sequence 0
    "0300000000000000"  # payload length 3
)


def test_golden_header():
    assert wire.encode_header(9, 0x0123456789ABCDEF, 5, 0, 0, 3) == GOLDEN_HEADER
    package = wire.Package(b"abc", 9, 0x0123456789ABCDEF, 5)
    assert package.header() == GOLDEN_HEADER
    assert wire.HEADER_SIZE == 56


def test_golden_connection_frames():
    assert wire.HEARTBEAT_FRAME == wire.encode_header(1, 0, 0, 0, 0, 0)
    assert wire.CLOSE_FRAME[24:32] == struct.pack("<Q", 1)


def test_golden_greeting():
    assert wire.format_greeting(0x0123456789ABCDEF, 4242) == (
        b"YOTON!0123456789abcdef.4242\r\n"
    )


def test_hashes_match_reference_values():
    # Values computed with yoton 2.2's functions.
    assert port_hash("PYZO") == 50369
    assert split_address("localhost:PYZO") == ("127.0.0.1", 50369)
    assert slot_hash("chat.txt.pub-sub") == slot_hash("chat.txt.pub-sub")
    assert 8 <= slot_hash("x") < 2**64


def test_split_address_forms():
    assert split_address("localhost:1234") == ("127.0.0.1", 1234)
    assert split_address("tcp://127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_address("localhost:PYZO+2")[1] == 50371
    for bad in ["nocolon", "localhost:70000", "localhost:x+y", "udp://a:1", 5]:
        with pytest.raises(ValueError):
            split_address(bad)


def _frames(*packages):
    return b"".join(p.header() + p.data for p in packages)


def test_parse_many_frames_and_partial():
    data = _frames(
        wire.Package(b"one", 10, 1, 1), wire.Package(b"", 1), wire.Package(b"three", 11)
    )
    result = wire.parse_frames(data, 0, len(data))
    assert [p.data for p in result.packages] == [b"one", b"", b"three"]
    assert result.consumed == len(data) and result.pending_size == 0
    # Cut inside the last payload: two frames come out, the third is pending.
    cut = len(data) - 2
    result = wire.parse_frames(data, 0, cut)
    assert len(result.packages) == 2
    assert result.pending_size == wire.HEADER_SIZE + 5
    # Cut inside a header: nothing known about the next frame yet.
    result = wire.parse_frames(data, 0, 30)
    assert result.packages == [] and result.consumed == 0 and result.pending_size == 0


def test_parse_bad_control_word():
    data = bytearray(_frames(wire.Package(b"x", 10)))
    data[0:1] = b"Z"
    with pytest.raises(RemoteProtocolError, match="control word"):
        wire.parse_frames(data, 0, len(data))


def test_parse_forged_length_is_rejected_without_allocation():
    header = wire.encode_header(10, 1, 1, 0, 0, 2**63)
    with pytest.raises(MessageTooLargeError, match="limit"):
        wire.parse_frames(header, 0, len(header), max_message_size=1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse_any_bytes(data):
    try:
        result = wire.parse_frames(data, 0, len(data), max_message_size=1 << 16)
    except RemoteProtocolError:
        return
    assert result.consumed <= len(data)
    assert result.pending_size <= (1 << 16) + wire.HEADER_SIZE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(8, 2**64 - 1), st.binary(max_size=50))))
def test_fuzz_frames_round_trip(items):
    packages = [wire.Package(d, s, 7, i + 1) for i, (s, d) in enumerate(items)]
    data = _frames(*packages)
    result = wire.parse_frames(data, 0, len(data))
    assert [(p.slot, p.data, p.source_seq) for p in result.packages] == [
        (p.slot, p.data, p.source_seq) for p in packages
    ]


def test_received_frames_carry_every_header_field():
    data = _frames(wire.Package(b"abc", 10, 0x0123456789ABCDEF, 5, 77, 2**63 + 1))
    frames, runs, consumed, pending, signals = wire.parse_frame_runs(data, 0, len(data))
    assert (runs, consumed, pending, signals) == ([0], len(data), 0, 0)
    (frame,) = frames
    assert wire.split_head(frame[wire.F_HEAD]) == (10, 0x0123456789ABCDEF)
    assert frame[wire.F_SOURCE_SEQ] == 5 and frame[wire.F_DEST_ID] == 77
    assert frame[wire.F_DEST_SEQ] == 2**63 + 1 and frame[wire.F_DATA] == b"abc"
    assert wire.frame_source_id(frame) == 0x0123456789ABCDEF
    assert wire.frame_header(frame) == data[: wire.HEADER_SIZE]


def test_parse_bad_control_word_inside_a_run_of_alike_frames():
    """The parser guesses that a frame is like the two before it; a frame that
    has their size but a broken control word is still refused."""
    data = bytearray(_frames(*(wire.Package(b"xy", 10, 1, i + 1) for i in range(4))))
    data[3 * (wire.HEADER_SIZE + 2)] ^= 1
    with pytest.raises(RemoteProtocolError, match="control word"):
        wire.parse_frames(data, 0, len(data))


def test_heartbeats_are_counted_after_a_run_of_alike_frames():
    packages = [wire.Package(b"", 10, 1, i + 1) for i in range(3)]
    data = _frames(*packages) + wire.HEARTBEAT_FRAME
    frames, runs, _, _, signals = wire.parse_frame_runs(data, 0, len(data))
    assert len(frames) == 4 and signals and runs == [0, 3]


@pytest.mark.parametrize("change", ["dest", "slot", "source"])
def test_a_run_ends_where_head_or_destination_changes_even_in_bulk(change):
    """Long streaks of alike frames are unpacked in bulk; a frame of the same
    size with another head or destination still starts a run of its own."""
    first = [wire.Package(b"ab", 8, 5, i + 1, 0, 0) for i in range(30)]
    fields = {"dest": (8, 5, 7), "slot": (9, 5, 0), "source": (8, 6, 0)}[change]
    slot, source, dest = fields
    second = [wire.Package(b"cd", slot, source, i + 31, dest, 0) for i in range(30)]
    data = _frames(*first, *second)
    frames, runs, consumed, _, _ = wire.parse_frame_runs(data, 0, len(data))
    assert runs == [0, 30] and consumed == len(data)
    assert [f[5] for f in frames] == [b"ab"] * 30 + [b"cd"] * 30


def _reference_parse(buffer: bytes, end: int, max_size: int):
    """What parse_frame_runs must find, one header at a time (no guessing)."""
    frames, runs, pos, previous = [], [], 0, None
    while end - pos >= wire.HEADER_SIZE:
        control, _, _, seq, dest, dest_seq, size = wire.HEADER.unpack_from(buffer, pos)
        if control != wire.CONTROL_WORD:
            raise RemoteProtocolError("control word")
        if size > max_size:
            raise MessageTooLargeError("limit")
        if end - pos < wire.HEADER_SIZE + size:
            return frames, runs, pos, wire.HEADER_SIZE + size
        head = bytes(buffer[pos : pos + wire.HEAD_SIZE])
        if (head, dest) != previous:
            runs.append(len(frames))
            previous = (head, dest)
        data = bytes(buffer[pos + wire.HEADER_SIZE : pos + wire.HEADER_SIZE + size])
        frames.append((head, seq, dest, dest_seq, size, data))
        pos += wire.HEADER_SIZE + size
    return frames, runs, pos, 0


def _outcome(parse):
    try:
        return parse()
    except (RemoteProtocolError, MessageTooLargeError) as err:
        return type(err)


# Streaks of alike frames (the parser unpacks those in bulk) of a few sizes,
# heads and destinations, cut anywhere, maybe with one byte changed anywhere.
_STREAKS = st.lists(
    st.tuples(
        st.integers(1, 40),
        st.sampled_from([8, 9]),
        st.sampled_from([5, 6]),
        st.sampled_from([0, 7]),
        st.sampled_from([0, 1, 3]),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(_STREAKS, st.data())
def test_fuzz_parse_runs_against_a_header_by_header_parser(streaks, data):
    packages = []
    for repeat, slot, source, dest, size in streaks:
        for _ in range(repeat):
            n = len(packages)
            packages.append(wire.Package(b"z" * size, slot, source, n + 1, dest, n))
    raw = bytearray(_frames(*packages))
    if raw and data.draw(st.booleans()):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    limit = 1 << 16
    expected = _outcome(lambda: _reference_parse(bytes(raw), cut, limit))
    got = _outcome(lambda: wire.parse_frame_runs(raw, 0, cut, limit)[:4])
    assert got == expected


# -- greeting state machine --------------------------------------------------


def _run(client: wire.Handshake, host: wire.Handshake):
    """Drive both sides in memory until done; return the bytes each side sent."""
    to_host = client.initiate()
    host.initiate()
    to_client = b""
    for _ in range(5):
        if to_host:
            to_client = host.receive_data(to_host)
            to_host = b""
        if to_client:
            to_host = client.receive_data(to_client)
            to_client = b""
        if client.done and host.done:
            return
    raise AssertionError("handshake did not finish")


def test_plain_greeting():
    client = wire.Handshake(False, 1, 11)
    host = wire.Handshake(True, 2, 22)
    _run(client, host)
    assert (client.peer_id, client.peer_pid) == (2, 22)
    assert (host.peer_id, host.peer_pid) == (1, 11)
    assert not client.authenticated


def test_authenticated_greeting_never_sends_key():
    key = b"sekrit-key-123"
    client = wire.Handshake(False, 1, 11, key)
    host = wire.Handshake(True, 2, 22, key)
    first = client.initiate()
    assert key not in first
    client = wire.Handshake(False, 1, 11, key)
    _run(client, host)
    assert client.authenticated and host.authenticated


def test_wrong_key_refused_on_both_sides():
    client = wire.Handshake(False, 1, 11, b"right")
    host = wire.Handshake(True, 2, 22, b"wrong")
    hello = client.initiate()
    host.initiate()
    answer = host.receive_data(hello)
    with pytest.raises(AuthenticationError) as info:
        client.receive_data(answer)
    assert b"wrong key" in info.value.reply  # sent to the host before closing
    host_error = wire.Handshake(True, 2, 22, b"wrong")
    host_error.initiate()
    host_error.receive_data(wire.Handshake(False, 1, 11, b"right").initiate())
    with pytest.raises(AuthenticationError):
        host_error.receive_data(b"ERROR: authentication failed: wrong key\r\n")


def test_missing_key_refused_with_reason():
    host = wire.Handshake(True, 2, 22, b"key")
    host.initiate()
    with pytest.raises(AuthenticationError) as info:
        host.receive_data(wire.format_greeting(1, 11))
    assert info.value.reply.startswith(b"ERROR: ")
    client = wire.Handshake(False, 1, 11)
    client.initiate()
    with pytest.raises(AuthenticationError, match="requires"):
        client.receive_data(info.value.reply)


def test_leftover_bytes_after_greeting_are_kept():
    client = wire.Handshake(False, 1, 11)
    client.initiate()
    frame = wire.Package(b"hi", 9).header() + b"hi"
    client.receive_data(wire.format_greeting(2, 22) + frame)
    assert client.done and client.leftover == frame


def test_self_connection_refused():
    host = wire.Handshake(True, 5, 1)
    host.initiate()
    with pytest.raises(wire.HandshakeError, match="itself"):
        host.receive_data(wire.format_greeting(5, 1))


@pytest.mark.parametrize("key", [None, b"k"])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=700))
def test_fuzz_greeting_any_bytes(key, data):
    for is_host in (True, False):
        handshake = wire.Handshake(is_host, 1, 1, key)
        handshake.initiate()
        try:
            handshake.receive_data(data)
        except wire.HandshakeError:
            continue
        assert handshake.done or len(data) <= wire.MAX_GREETING_LINE + 2
