"""Tests for yoton.message_types: TEXT, BINARY, OBJECT and the object codec.

The compatibility tests run yoton 2.2's codec (shipped in the pyzo package) in a
subprocess, because 2.2 is importable as a top-level ``yoton`` package only, which
clashes with ours in this process.
"""

from __future__ import annotations

import ast
import enum
import importlib.util
import json
import math
import os
import random
import struct
import subprocess
import sys

import pytest

from yoton.errors import DecodeError, EncodeError, YotonError
from yoton.message_types import (
    BINARY,
    MAX_DEPTH,
    OBJECT,
    TEXT,
    BinaryMessageType,
    MessageType,
    ObjectMessageType,
    TextMessageType,
    decode_object,
    encode_object,
)

# (value, hex encoding, meaning). All but the last are identical in yoton 2.2.
GOLDEN = [
    (None, "6e", "None"),
    (True, "6201", "True"),
    (False, "6200", "False"),
    (1, "690100000000000000", "int 1, <q"),
    (-2, "69feffffffffffffff", "int -2, <q"),
    (2**63 - 1, "69ffffffffffffff7f", "largest int"),
    (1.5, "66000000000000f83f", "float 1.5, <d"),
    ("", "7300", "empty str"),
    ("h\u00e9", "730368c3a9", "str 'hé': length 3, UTF-8"),
    ([1, "a"], "6c02690100000000000000730161", "list [1, 'a']"),
    ((None, False), "74026e6200", "tuple (None, False)"),
    ({"k": []}, "640173016b6c00", "dict {'k': []}"),
    ("x" * 255, "73ffff00000000000000" + "78" * 255, "str of 255: long length"),
    (b"\x00\xff", "790200ff", "bytes b'\\x00\\xff' (extension 'y')"),
]

# Values yoton 2.2 can encode (no bytes), for the compatibility tests.
COMPAT_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    254,
    255,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1e300,
    -2.5e-308,
    "",
    "hello",
    "\u00e9\u4e2d\U0001f600",
    "y" * 254,
    "z" * 255,
    "w" * 70000,
    [],
    (),
    {},
    [None, True, 3, 4.5, "s", [], (), {}],
    (1, (2, (3, (4,)))),
    {"a": 1, 2: "b", (3, "c"): [4, {"d": None}], None: (), 1.5: False},
    list(range(300)),
    {str(i): i for i in range(260)},
]


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- the reference implementation in a subprocess ------------------------------

_REF_SCRIPT = r"""
import ast, json, sys
sys.path.insert(0, sys.argv[1])
from yoton.channels.message_types import OBJECT
req = json.load(sys.stdin)
out = {"encoded": [], "decoded": []}
for text in req["reprs"]:
    out["encoded"].append(OBJECT.message_to_bytes(ast.literal_eval(text)).hex())
for hexdata in req["hexes"]:
    value = OBJECT.message_from_bytes(bytes.fromhex(hexdata))
    out["decoded"].append([repr(value), OBJECT.message_to_bytes(value).hex()])
json.dump(out, sys.stdout)
"""


def _pyzo_dir() -> str | None:
    try:
        spec = importlib.util.find_spec("pyzo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if os.path.isfile(
            os.path.join(location, "yoton", "channels", "message_types.py")
        ):
            return location
    return None


@pytest.fixture(scope="module")
def reference():
    """Call reference(reprs, hexes) -> (encodings, [(repr, reencoding)]) in 2.2."""
    pyzo_dir = _pyzo_dir()
    if pyzo_dir is None:
        pytest.skip("pyzo (with yoton 2.2) is not installed: no reference codec")

    def run(reprs: list[str], hexes: list[str]):
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _REF_SCRIPT, pyzo_dir],
            input=json.dumps({"reprs": reprs, "hexes": hexes}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        return out["encoded"], out["decoded"]

    return run


def test_reference_compat_encoding_equal(reference):
    values = COMPAT_VALUES + [v for v, _, _ in GOLDEN if not isinstance(v, bytes)]
    reprs = [repr(v) for v in values]
    assert [ast.literal_eval(r) == v for r, v in zip(reprs, values)] == [True] * len(
        values
    )
    encoded, _ = reference(reprs, [])
    for value, ref_hex in zip(values, encoded):
        assert encode_object(value).hex() == ref_hex, value


def test_reference_compat_decodes_ours(reference):
    values = COMPAT_VALUES + [math.nan, math.inf, -math.inf]
    hexes = [encode_object(v).hex() for v in values]
    _, decoded = reference([], hexes)
    for value, hexdata, (ref_repr, ref_hex) in zip(values, hexes, decoded):
        assert ref_repr == repr(value)
        assert ref_hex == hexdata


def test_reference_compat_random_values(reference):
    rng = random.Random(1234)

    def scalar():
        kind = rng.randrange(6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.randint(-(2**63), 2**63 - 1)
        if kind == 3:
            return rng.uniform(-1e9, 1e9)
        if kind == 4:
            n = rng.choice([0, 1, 10, 254, 255, 300])
            return "".join(
                chr(rng.choice([97, 233, 0x4E2D, 0x1F600])) for _ in range(n)
            )
        return rng.randint(0, 300)

    def value(depth=0):
        kind = rng.randrange(6 if depth < 4 else 1)
        if kind <= 2:
            return scalar()
        n = rng.randrange(5)
        if kind == 3:
            return [value(depth + 1) for _ in range(n)]
        if kind == 4:
            return tuple(value(depth + 1) for _ in range(n))
        return {scalar(): value(depth + 1) for _ in range(n)}

    values = [value() for _ in range(300)]
    hexes = [encode_object(v).hex() for v in values]
    encoded, decoded = reference([repr(v) for v in values], hexes)
    assert encoded == hexes
    assert [h for _, h in decoded] == hexes
    assert [r for r, _ in decoded] == [repr(v) for v in values]


def test_reference_rejects_bytes_extension(reference):
    # Documented: 2.2 does not know 'y'; its decoder fails (in its own way).
    with pytest.raises(AssertionError, match="Unsupported type"):
        reference([], [encode_object(b"abc").hex()])


# --- golden vectors and round trips --------------------------------------------


@pytest.mark.parametrize("value, hexdata, meaning", GOLDEN, ids=[g[2] for g in GOLDEN])
def test_golden_vectors(value, hexdata, meaning):
    assert encode_object(value).hex() == hexdata
    decoded = decode_object(bytes.fromhex(hexdata))
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize(
    "value", COMPAT_VALUES + [b"", b"\x00" * 300, bytes(range(256))]
)
def test_round_trip(value):
    data = encode_object(value)
    assert type(data) is bytes
    for form in (data, bytearray(data), memoryview(data)):
        decoded = decode_object(form)
        assert decoded == value
        assert encode_object(decoded) == data  # same types, same order


def test_round_trip_special_floats():
    for value in (math.inf, -math.inf, -0.0, 5e-324):
        assert encode_object(decode_object(encode_object(value))) == encode_object(
            value
        )
    assert math.isnan(decode_object(encode_object(math.nan)))
    assert math.copysign(1, decode_object(encode_object(-0.0))) == -1


def test_int_limits():
    assert decode_object(encode_object(-(2**63))) == -(2**63)
    for bad in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(EncodeError, match="64"):
            encode_object(bad)


def test_subclasses_encode_as_base_types():
    class Color(enum.IntEnum):
        RED = 3

    class MyStr(str):
        def __str__(self):
            return "wrong"

    class MyList(list):
        pass

    assert encode_object(Color.RED) == encode_object(3)
    assert encode_object(MyStr("ab")) == encode_object("ab")
    assert decode_object(encode_object(MyList([1]))) == [1]
    assert decode_object(encode_object(bytearray(b"ab"))) == b"ab"
    assert decode_object(encode_object(memoryview(b"ab"))) == b"ab"


def test_empty_data_decodes_to_none():
    assert decode_object(b"") is None
    assert OBJECT.message_from_bytes(b"") is None


def test_decode_strided_memoryview():
    data = encode_object([1, "x"])
    doubled = bytes(b for byte in data for b in (byte, 0))
    assert decode_object(memoryview(doubled)[::2]) == [1, "x"]


def test_decode_rejects_non_buffer():
    with pytest.raises(DecodeError):
        decode_object("not bytes")  # type: ignore[arg-type]


# --- encode errors ---------------------------------------------------------------


def test_encode_error_names_type_and_path():
    with pytest.raises(EncodeError) as info:
        encode_object([0, 1, {"k": {1, 2}}])
    message = str(info.value)
    assert "set" in message and "value[2]['k']" in message

    with pytest.raises(EncodeError, match=r"value\[0\]\[1\].*object"):
        encode_object(((None, object()),))

    with pytest.raises(EncodeError, match=r"<key #0>.*frozenset"):
        encode_object({frozenset(): 1})

    # Scalars inside lists and tuples are encoded inline; errors keep the path.
    with pytest.raises(EncodeError, match=r"value\[1\]\[2\].*UTF-8"):
        encode_object(["a", ("b", "c", "\udc80")])
    with pytest.raises(EncodeError, match=r"value\[0\]\[1\].*64 bits"):
        encode_object(([1, 1 << 70],))


def test_encode_error_types():
    assert issubclass(EncodeError, YotonError) and issubclass(EncodeError, ValueError)
    assert issubclass(DecodeError, YotonError) and issubclass(DecodeError, ValueError)
    for bad in ({1}, object(), 1j, "\udc80", [1, 2, 3.0, {"a": [type]}]):
        with pytest.raises(EncodeError):
            encode_object(bad)


def test_encode_depth_limit():
    assert decode_object(encode_object(nested_list(MAX_DEPTH))) == nested_list(
        MAX_DEPTH
    )
    with pytest.raises(EncodeError, match="nested"):
        encode_object(nested_list(MAX_DEPTH + 1))


def test_encode_cyclic_structures_fail():
    cyclic: list = [1]
    cyclic.append(cyclic)
    with pytest.raises(EncodeError):
        encode_object(cyclic)
    d: dict = {}
    d["self"] = d
    with pytest.raises(EncodeError):
        encode_object(d)


# --- decode errors ---------------------------------------------------------------


def long_len(n: int) -> bytes:
    return b"\xff" + struct.pack("<Q", n)


@pytest.mark.parametrize(
    "data",
    [
        b"z",  # unknown type code
        b"n\x00",  # trailing byte
        b"6e",  # hex text, not data
        b"i\x00\x00",  # truncated int
        b"f\x00",  # truncated float
        b"b",  # truncated bool
        b"b\x02",  # bool out of range
        b"s\x05abc",  # str shorter than declared
        b"s\x02\xff\xfe",  # invalid UTF-8
        b"s\xff\x01",  # truncated long length
        b"l\x02n",  # list shorter than declared
        b"d\x01n",  # dict missing its value
        b"d\x01l\x00n",  # unhashable key (list)
        b"d\x01t\x01l\x00n",  # unhashable key (tuple holding a list)
        b"l" + long_len(2**60),  # huge count
        b"d" + long_len(2**63),
        b"s" + long_len(2**64 - 1),
        b"y" + long_len(2**60) + b"abc",
        b"l\x01" * (MAX_DEPTH + 1) + b"n",  # too deep
        b"t\x01" * 100000 + b"n",  # far too deep
    ],
)
def test_decode_errors(data):
    with pytest.raises(DecodeError):
        decode_object(data)
    with pytest.raises(DecodeError):
        OBJECT.message_from_bytes(memoryview(data))


def test_decode_max_depth_ok():
    expected = None
    for _ in range(MAX_DEPTH):
        expected = [expected]
    assert decode_object(b"l\x01" * MAX_DEPTH + b"n") == expected


def test_decode_accepts_non_canonical_long_length():
    assert decode_object(b"s" + long_len(2) + b"ab") == "ab"
    # 255 bytes follow the marker here, as they would after a short length of
    # 255: the short-str shortcut must not take the marker for one.
    text = "q" * 247
    assert decode_object(b"s" + long_len(247) + text.encode()) == text


@pytest.mark.parametrize("size", [0, 1, 254, 255, 256])
def test_str_around_the_short_length_limit(size):
    text = "z" * size
    data = encode_object(text)
    assert decode_object(data) == text
    assert data[1] == (size if size < 255 else 255)


# --- TEXT and BINARY -------------------------------------------------------------


def test_message_type_names():
    assert TEXT.message_type_name() == "txt"
    assert BINARY.message_type_name() == "bin"
    assert OBJECT.message_type_name() == "obj"
    assert isinstance(TEXT, TextMessageType) and isinstance(TEXT, MessageType)
    assert isinstance(BINARY, BinaryMessageType)
    assert isinstance(OBJECT, ObjectMessageType)
    assert "txt" in repr(TEXT)


def test_text():
    assert TEXT.message_to_bytes("h\u00e9") == b"h\xc3\xa9"
    assert TEXT.message_from_bytes(b"h\xc3\xa9") == "h\u00e9"
    assert TEXT.message_from_bytes(memoryview(b"abc")) == "abc"
    assert TEXT.message_from_bytes(b"") == ""
    assert TEXT.message_to_bytes("") == b""
    assert TEXT.message_to_bytes(b"h\xc3\xa9") == b"h\xc3\xa9"
    assert TEXT.message_to_bytes(bytearray(b"ab")) == b"ab"
    assert TEXT.message_to_bytes(b"\xff") == b"b'\\xff'"  # not UTF-8: its repr


@pytest.mark.parametrize("bad", [1, None, ["a"], 2.0])
def test_text_rejects_non_str(bad):
    with pytest.raises(EncodeError, match=type(bad).__name__):
        TEXT.message_to_bytes(bad)


def test_text_errors():
    with pytest.raises(EncodeError):
        TEXT.message_to_bytes("\udc80")
    # A peer's invalid UTF-8 is replaced, never raised from recv().
    assert TEXT.message_from_bytes(b"a\xff\xfe") == "a\ufffd\ufffd"


def test_binary():
    assert BINARY.message_to_bytes(b"\x00\x01") == b"\x00\x01"
    out = BINARY.message_to_bytes(bytearray(b"ab"))
    assert out == b"ab" and type(out) is bytes
    assert BINARY.message_to_bytes(memoryview(b"xyz")[1:]) == b"yz"
    back = BINARY.message_from_bytes(memoryview(b"abc"))
    assert back == b"abc" and type(back) is bytes
    with pytest.raises(EncodeError):
        BINARY.message_to_bytes("text")


def test_object_message_type():
    value = {"a": [1, 2.5, None, (True, "x")], "b": b"raw"}
    assert OBJECT.message_from_bytes(OBJECT.message_to_bytes(value)) == value
    with pytest.raises(EncodeError):
        OBJECT.message_to_bytes({1, 2})


def test_base_message_type_is_abstract_and_subclassable():
    base = MessageType()
    with pytest.raises(NotImplementedError):
        base.message_to_bytes("x")
    with pytest.raises(NotImplementedError):
        base.message_from_bytes(b"x")
    with pytest.raises(NotImplementedError):
        base.message_type_name()
    assert "?" in repr(base)

    class Upper(MessageType):
        def message_type_name(self):
            return "upper"

        def message_to_bytes(self, message):
            return message.upper().encode()

        def message_from_bytes(self, bb):
            return bytes(bb).decode()

    upper = Upper()
    assert upper.message_from_bytes(upper.message_to_bytes("abc")) == "ABC"
