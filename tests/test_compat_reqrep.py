"""Wire compatibility of req/rep (and pub/sub, state) with the reference yoton 2.2.

The reference is Pyzo's yoton (site-packages/pyzo/yoton). It is importable as
top-level ``yoton`` only with the pyzo directory first on sys.path, which would
hide ours, so the 2.2 side always runs in a subprocess. Links are unauthenticated
localhost connections with ports chosen by the OS.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_until

import yoton

pytestmark = pytest.mark.timeout(60)

T = 10.0  # generous limit for anything we wait for; never a speed assertion

_SPEC = importlib.util.find_spec("pyzo")
PYZO_DIR = os.path.dirname(_SPEC.origin) if _SPEC and _SPEC.origin else None
if PYZO_DIR is None or not os.path.isdir(os.path.join(PYZO_DIR, "yoton")):
    pytest.skip("pyzo (reference yoton 2.2) is not installed", allow_module_level=True)

PREAMBLE = r"""
import os, sys, time
sys.path.insert(0, PYZO_DIR)
import yoton
where = os.path.dirname(yoton.__file__)
assert where == os.path.join(PYZO_DIR, "yoton"), where

def link(ctx, how, port):
    # "bind": we host and print our port; "connect": to the parent's port.
    if how == "bind":
        conn = ctx.bind("localhost:0")
        print("PORT", conn.port1, flush=True)
    else:
        ctx.connect("localhost:" + port, timeout=5)

how, port, slot = sys.argv[1:4]
""".replace("PYZO_DIR", repr(PYZO_DIR))

REF_REPLIER = (
    PREAMBLE
    + r"""
class Rep(yoton.RepChannel):
    def add(self, a, b):
        return a + b
    def ident(self, *args, **kwargs):
        return args, kwargs
    def fail(self, message):
        raise ValueError(message)
    def slow(self, seconds):
        time.sleep(seconds)
        return seconds

ctx = yoton.Context()
rep = Rep(ctx, slot)
rep.set_mode("thread")
link(ctx, how, port)
print("READY", flush=True)
sys.stdin.read()
"""
)

REF_REQUESTER = (
    PREAMBLE
    + r"""
ctx = yoton.Context()
req = yoton.ReqChannel(ctx, slot)
link(ctx, how, port)
print("READY", flush=True)
sys.stdin.readline()  # the parent says go
calls = [
    ("add", (3, 4), {}),
    ("add", ("ab",), {"b": "cd"}),
    ("ident", (None, True, 1, 2.5, "s", [1, [2]], (3, 4), {"k": (5,)}), {"x": {}}),
    ("fail", ("boom",), {}),
    ("nope", (), {}),
    ("close", (), {}),
    ("echo", ("hi",), {}),
]
for name, args, kwargs in calls:
    try:
        # 2.2's way to call any name (req.close is the local method).
        value = req._handle_request(name, *args, **kwargs).result(10)
        print("RESULT", repr(value), flush=True)
    except Exception as err:
        print("ERROR", repr(str(err).splitlines()[0]), flush=True)
for i in range(8):
    print("MANY", repr(req.echo(i).result(10)), flush=True)
print("DONE", flush=True)
sys.stdin.read()
"""
)

REF_PUBSUB_STATE = (
    PREAMBLE
    + r"""
ctx = yoton.Context()
role = sys.argv[4]
if role == "sub":
    sub = yoton.SubChannel(ctx, slot)
    state = yoton.StateChannel(ctx, slot + "-state")
    link(ctx, how, port)
    print("READY", flush=True)
    while True:
        message = sub.recv(10.0)
        print("GOT", repr(message), flush=True)
        if message in ("END", ""):
            break
    deadline = time.time() + 10
    while state.recv() != "parent state" and time.time() < deadline:
        time.sleep(0.01)
    print("STATE", repr(state.recv()), flush=True)
else:
    pub = yoton.PubChannel(ctx, slot)
    state = yoton.StateChannel(ctx, slot + "-state")
    link(ctx, how, port)
    print("READY", flush=True)
    sys.stdin.readline()  # the parent's channels exist
    for i in range(5):
        pub.send("msg %i" % i)
    pub.send("END")
    state.send("child state")
    print("SENT", flush=True)
sys.stdin.read()
"""
)


class Ref:
    """A yoton 2.2 child process; a thread collects its stdout lines."""

    def __init__(self, script: str, *args) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def expect(self, prefix: str, timeout: float = T) -> str:
        """Wait for a line starting with prefix; return the rest of it."""

        def find():
            return next((x for x in self.lines if x.startswith(prefix)), None)

        with self._cond:
            self._cond.wait_for(lambda: self._eof or find() is not None, timeout)
            line = find()
        if line is None:
            raise AssertionError(f"no {prefix!r} from the 2.2 child: {self.lines}")
        return line[len(prefix) :].strip()

    def values(self, prefix: str) -> list:
        with self._cond:
            return [
                ast.literal_eval(x[len(prefix) :].strip())
                for x in self.lines
                if x.startswith(prefix)
            ]

    def send_line(self, text: str = "go") -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(T)
        self._reader.join(T)
        self.proc.stdout.close()
        self.proc.stdin.close()


@pytest.fixture
def spawn():
    started: list[Ref] = []
    contexts: list[yoton.Context] = []

    def start(script: str, how: str, slot: str, *extra):
        """Start a 2.2 child linked to a new context of ours; return both."""
        ctx = yoton.Context()
        contexts.append(ctx)
        if how == "connect":  # the child connects to us
            conn = ctx.bind("localhost:0")
            child = Ref(script, "connect", conn.port1, slot, *extra)
            started.append(child)
        else:  # the child binds, we connect
            child = Ref(script, "bind", 0, slot, *extra)
            started.append(child)
            ctx.connect(f"localhost:{child.expect('PORT')}", timeout=T)
        child.expect("READY")
        assert wait_until(lambda: ctx.connection_count == 1)
        return ctx, child

    try:
        yield start
    finally:
        for child in started:
            child.kill()
        for ctx in contexts:
            ctx.close()


class Ours(yoton.RepChannel):
    def add(self, a, b):
        return a + b

    def ident(self, *args, **kwargs):
        return args, kwargs

    def fail(self, message):
        raise ValueError(message)


# -- our ReqChannel calls a 2.2 RepChannel ------------------------------------------


@pytest.mark.parametrize("how", ["bind", "connect"])
def test_our_requester_calls_reference_replier(spawn, how):
    ctx, child = spawn(REF_REPLIER, how, "calc")
    req = yoton.ReqChannel(ctx, "calc")
    assert req.add(3, 4).result(T) == 7
    # Later calls may use our direct fast path; 2.2 handles them as well.
    assert [req.add(i, 1).result(T) for i in range(5)] == [1, 2, 3, 4, 5]
    args = (None, True, -5, 2.5, "tekst", [1, [2]], (3, 4), {"k": (5,)})
    assert req.ident(*args, x={}).result(T) == (args, {"x": {}})
    value, context_id = req.echo("hi").result(T)
    assert value == "hi" and int(context_id, 16) == ctx.connections[0].id2
    # 2.2 error replies are (ERROR_OBJECT, text): a RemoteError here.
    err = req.fail("boom").exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert err.message == "boom"  # 2.2 sends no type name (nor, for ValueError, a line)
    err = req.nope().exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert err.message == "Method 'nope' not implemented."
    assert err.remote_traceback.startswith("line ")  # where 2.2 says it failed
    err = req.add(1).exception(T)
    assert isinstance(err, yoton.RemoteError) and "missing" in str(err)
    # Concurrent requests are all answered (the 2.2 replier queues them).
    futures = [req.add(i, i) for i in range(10)]
    assert [f.result(T) for f in futures] == [2 * i for i in range(10)]


def test_reference_replier_killed_mid_request(spawn):
    ctx, child = spawn(REF_REPLIER, "connect", "calc")
    req = yoton.ReqChannel(ctx, "calc")
    future = req.slow(30)
    assert wait_until(future.running)
    time.sleep(0.1)  # let the call reach the child (not needed for correctness)
    child.kill()
    assert isinstance(future.exception(T), yoton.ReplierLostError)


def test_our_requester_balances_reference_and_our_replier(spawn):
    ctx, child = spawn(REF_REPLIER, "bind", "calc")
    rep_ctx = yoton.Context()
    try:
        conn = rep_ctx.bind("localhost:0")
        ctx.connect(f"localhost:{conn.port1}")
        ours = Ours(rep_ctx, "calc")
        ours.set_mode("thread")
        req = yoton.ReqChannel(ctx, "calc")
        futures = [req.echo(i) for i in range(10)]
        results = [f.result(T) for f in futures]
        assert [value for value, _ in results] == list(range(10))
        assert {ident for _, ident in results} <= {
            hex(rep_ctx.id),
            hex(ctx.connections[0].id2),
        }
    finally:
        rep_ctx.close()


# -- a 2.2 ReqChannel calls our RepChannel ------------------------------------------


@pytest.mark.parametrize("how", ["bind", "connect"])
def test_reference_requester_calls_our_replier(spawn, how):
    ctx, child = spawn(REF_REQUESTER, how, "calc")
    rep = Ours(ctx, "calc")
    rep.set_mode("thread")
    child.send_line()
    child.expect("DONE", timeout=30)
    results = child.values("RESULT")
    errors = child.values("ERROR")
    args = (None, True, 1, 2.5, "s", [1, [2]], (3, 4), {"k": (5,)})
    assert results == [7, "abcd", (args, {"x": {}}), ("hi", hex(ctx.id))]
    # Our error replies reach 2.2 as exceptions with our text.
    assert errors[0].startswith("ValueError: boom")
    assert "nope" in errors[1] and "AttributeError" in errors[1]
    assert "close" in errors[2] and "AttributeError" in errors[2]  # refused
    assert child.values("MANY") == [(i, hex(ctx.id)) for i in range(8)]
    assert not rep.closed
    assert len(ctx.connections) == 1


def test_reference_requester_with_two_of_our_repliers(spawn):
    ctx, child = spawn(REF_REQUESTER, "connect", "calc")
    other = yoton.Context()
    try:
        conn = other.bind("localhost:0")
        ctx.connect(f"localhost:{conn.port1}")
        assert wait_until(lambda: other.connection_count == 1)
        for context in (ctx, other):
            Ours(context, "calc").set_mode("thread")
        child.send_line()
        child.expect("DONE", timeout=30)
        many = child.values("MANY")
        assert [value for value, _ in many] == list(range(8))
        assert {ident for _, ident in many} <= {hex(ctx.id), hex(other.id)}
        assert child.values("RESULT")[0] == 7
    finally:
        other.close()


# -- pub/sub and state with 2.2 ------------------------------------------------------


@pytest.mark.parametrize("how", ["bind", "connect"])
def test_our_pub_and_state_to_reference(spawn, how):
    ctx, child = spawn(REF_PUBSUB_STATE, how, "news", "sub")
    pub = yoton.PubChannel(ctx, "news")
    state = yoton.StateChannel(ctx, "news-state")
    state.send("parent state")
    for i in range(5):
        pub.send(f"msg {i}")
    pub.send("END")
    assert child.expect("STATE") == repr("parent state")
    assert child.values("GOT") == [f"msg {i}" for i in range(5)] + ["END"]


@pytest.mark.parametrize("how", ["bind", "connect"])
def test_reference_pub_and_state_to_ours(spawn, how):
    ctx, child = spawn(REF_PUBSUB_STATE, how, "news", "pub")
    sub = yoton.SubChannel(ctx, "news")
    state = yoton.StateChannel(ctx, "news-state")
    child.send_line()
    got = []
    while not got or got[-1] != "END":
        message = sub.recv(T)
        assert message, got  # "" would mean nothing arrived in time
        got.append(message)
    assert got == [f"msg {i}" for i in range(5)] + ["END"]
    assert wait_until(lambda: state.recv() == "child state")
