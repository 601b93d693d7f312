"""Unit tests of the kernel's jedi-based introspection functions."""

from __future__ import annotations

import json
import os

import pytest

from kernel import introspection

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ns():
    def greet(name, punctuation="!"):
        """Say hello."""
        return f"hello {name}{punctuation}"

    class Thing:
        @property
        def size(self):
            return 3

        def method(self):
            return 1

    return {
        "os": os,
        "greet": greet,
        "thing": Thing(),
        "items": [1, 2],
        "__name__": "__main__",
    }


def test_complete_module_attribute(ns):
    result = introspection.complete(ns, "os.pa")
    assert {"path", "pardir"} <= set(result["names"])
    assert result["prefix_length"] == 2
    assert json.loads(json.dumps(result)) == result


def test_complete_live_object_and_position(ns):
    assert "method" in introspection.complete(ns, "thing.me")["names"]
    src = "x = 1\nitems.ap\ny = 2"
    result = introspection.complete(ns, src, line=2, column=8)
    assert "append" in result["names"]


def test_complete_broken_source_and_bad_positions(ns):
    for src in ["def f(:\n  x = ", ")))(((", "\x00\xff", "", "import "]:
        result = introspection.complete(ns, src)
        assert set(result) == {"names", "prefix_length"}
    result = introspection.complete(ns, "os.pa", line=99, column=-5)
    assert isinstance(result["names"], list)
    with pytest.raises(TypeError):
        introspection.complete(ns, b"os.pa")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        introspection.complete(ns, "os.pa", line="1")  # type: ignore[arg-type]


def test_signature(ns):
    sig = introspection.signature(ns, "greet('bob', ")
    assert sig["name"] == "greet"
    assert sig["index"] == 1
    assert "punctuation" in sig["signatures"][0]
    assert introspection.signature(ns, "x = 1") is None


def test_doc(ns):
    d = introspection.doc(ns, "greet")
    assert d["name"] == "greet"
    assert "Say hello." in d["doc"]
    assert "path" in introspection.doc(ns, "os")["doc"].lower()
    assert introspection.doc(ns, "for")["type"] == "keyword"
    assert introspection.doc(ns, "no_such_name_here") is None


def test_dir(ns):
    assert "size" in introspection.dir_(ns, "thing")
    assert "join" in introspection.dir_(ns, "os.path")
    assert "append" in introspection.dir_(ns, "items")
    assert "upper" in introspection.dir_(ns, "'abc'")
    assert "items" in introspection.dir_(ns, "")
    assert introspection.dir_(ns, "no_such_name") == []
    assert "__call__" in introspection.dir_(ns, "len")  # builtins resolve too
