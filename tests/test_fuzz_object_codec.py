"""Property tests for the object codec: any bytes decode to a value or DecodeError."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton.errors import DecodeError
from yoton.message_types import (
    MAX_DEPTH,
    decode_object,
    decode_request,
    encode_object,
    encode_request,
)

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

FUZZ_VALUES = settings(FUZZ, max_examples=200)

ints64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints64,
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
keys = st.recursive(
    st.one_of(st.none(), st.booleans(), ints64, st.text(), st.binary()),
    lambda children: st.lists(children, max_size=3).map(tuple),
    max_leaves=5,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=40,
)


def decode_or_error(data: bytes | bytearray | memoryview) -> None:
    """Decoding must give a value or DecodeError, nothing else."""
    try:
        value = decode_object(data)
    except DecodeError:
        return
    # Whatever decodes re-encodes (it is plain data of supported types).
    encode_object(value)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data):
    decode_or_error(data)
    decode_or_error(memoryview(data))


# Byte chunks that look like the format, so fuzzing reaches deep into the decoder.
tokens = st.sampled_from(
    [
        b"n",
        b"b\x00",
        b"b\x01",
        b"b\x07",
        b"i" + b"\x01" * 8,
        b"f" + struct.pack("<d", 1.5),
        b"s\x00",
        b"s\x03abc",
        b"s\x02\xc3\xa9",
        b"s\x01\xff",
        b"y\x02\x00\xff",
        b"l\x00",
        b"l\x01",
        b"l\x03",
        b"t\x02",
        b"d\x01",
        b"d\x02",
        b"\xff",
        b"\xff" + struct.pack("<Q", 2**60),
        b"\xff" + struct.pack("<Q", 3),
        b"\x00",
        b"z",
    ]
)


@FUZZ
@given(st.lists(tokens, max_size=40).map(b"".join))
def test_structured_random_bytes(data):
    decode_or_error(data)


@FUZZ_VALUES
@given(values)
def test_valid_values_round_trip(value):
    data = encode_object(value)
    decoded = decode_object(data)
    assert decoded == value
    assert encode_object(decoded) == data
    assert decode_object(memoryview(bytearray(data))) == value


@FUZZ
@given(st.floats(allow_nan=True))
def test_floats_round_trip_bitwise(value):
    data = encode_object(value)
    decoded = decode_object(data)
    assert encode_object(decoded) == data
    assert math.isnan(decoded) if math.isnan(value) else decoded == value


@st.composite
def mutated_encodings(draw):
    data = bytearray(encode_object(draw(values)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "insert" or not data:
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
            continue
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFE, 0xFF]))
        elif op == "delete":
            del data[pos]
        else:
            del data[pos:]
    return bytes(data)


@FUZZ_VALUES
@given(mutated_encodings())
def test_mutated_encodings(data):
    decode_or_error(data)


@pytest.mark.parametrize("code", [b"l", b"t", b"d", b"s", b"y"])
@pytest.mark.parametrize("prefix_depth", [0, 1, MAX_DEPTH - 1])
def test_huge_length_rejected_fast(code, prefix_depth):
    data = b"l\x01" * prefix_depth + code + b"\xff" + struct.pack("<Q", 2**60)
    with pytest.raises(DecodeError, match="declares"):
        decode_object(data + b"n" * 16)


@FUZZ
@given(st.integers(0, 2**64 - 1), st.sampled_from(b"ltdsy"), st.binary(max_size=64))
def test_any_long_length_is_safe(n, code, rest):
    decode_or_error(bytes([code]) + b"\xff" + struct.pack("<Q", n) + rest)


# -- the RPC request shortcuts: the same bytes and values as the general codec ------

requests = st.tuples(
    st.text(),
    st.lists(values, max_size=4).map(tuple),
    st.dictionaries(st.text(), values, max_size=3),
)


def same_decoding(data: bytes) -> None:
    """decode_request gives what decode_object gives (value or DecodeError)."""
    try:
        expected = decode_object(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_request(data)
        return
    # Compared by their encodings: a mutated float may be a NaN, never equal
    # to itself, and its bits are what must match.
    assert encode_object(decode_request(data)) == encode_object(expected)


@FUZZ_VALUES
@given(requests)
def test_request_encoding_is_the_object_encoding(request):
    data = encode_request(*request)
    assert data == encode_object(request)
    assert decode_request(data) == request


@FUZZ
@given(
    st.sampled_from(
        [
            b"t\x03s\x04echo",
            b"t\x03s\x01x",
            b"t\x03",
            b"t\x03s\xff",
            b"t\x03s\x04echot\x02",  # the argument tuple, decoded inline
            b"t\x03s\x01xt\x01s",
        ]
    ),
    st.lists(tokens, max_size=20).map(b"".join),
)
def test_request_decoding_of_random_bytes(head, rest):
    same_decoding(head + rest)


@FUZZ_VALUES
@given(mutated_encodings())
def test_request_decoding_of_mutated_encodings(data):
    same_decoding(data)
