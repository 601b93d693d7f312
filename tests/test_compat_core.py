"""Wire compatibility with yoton 2.2 (from the pyzo package), run as a subprocess."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

import yoton

pytestmark = pytest.mark.timeout(60)

_spec = importlib.util.find_spec("pyzo")
PYZO_DIR = os.path.dirname(_spec.origin) if _spec and _spec.origin else None
needs_pyzo = pytest.mark.skipif(
    PYZO_DIR is None, reason="pyzo (yoton 2.2) not installed"
)

PRELUDE = """
import sys, time
sys.path.insert(0, {pyzo_dir!r})
import yoton
assert yoton.__version__ == "2.2", yoton.__version__
"""


def run_reference(code, **fmt):
    """Start a 2.2 process running ``code``; it prints lines we read."""
    source = PRELUDE.format(pyzo_dir=PYZO_DIR) + textwrap.dedent(code).format(**fmt)
    return subprocess.Popen(
        [sys.executable, "-c", source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


@pytest.fixture
def reference():
    procs = []

    def start(code, **fmt):
        proc = run_reference(code, **fmt)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)


@needs_pyzo
def test_reference_publishes_to_us_and_shares_state(make_context, reference):
    ctx = make_context()
    conn = ctx.bind("localhost:0")
    sub = yoton.SubChannel(ctx, "chat")
    state = yoton.StateChannel(ctx, "status")
    reply = yoton.PubChannel(ctx, "back")
    proc = reference(
        """
        ct = yoton.Context()
        pub = yoton.PubChannel(ct, "chat")
        st = yoton.StateChannel(ct, "status")
        sub = yoton.SubChannel(ct, "back")
        ct.connect("localhost:{port}", timeout=5)
        for i in range(100):
            pub.send("message %i" % i)
        st.send("Ready")
        print(sub.recv(10.0), flush=True)
        time.sleep(0.5)
        print(st.recv(), flush=True)
        """,
        port=conn.port1,
    )
    assert [sub.recv(10) for _ in range(100)] == [f"message {i}" for i in range(100)]
    deadline = 50
    while state.recv() != "Ready" and deadline:
        sub.recv(0.1)
        deadline -= 1
    assert state.recv() == "Ready"
    reply.send("thanks")
    state.send("Busy")
    assert proc.stdout.readline().strip() == "thanks"
    assert proc.stdout.readline().strip() == "Busy"


@needs_pyzo
def test_we_publish_to_reference_binder(make_context, reference):
    proc = reference(
        """
        ct = yoton.Context()
        conn = ct.bind("localhost:0")
        print(conn.port1, flush=True)
        sub = yoton.SubChannel(ct, "data", yoton.OBJECT)
        got = [sub.recv(10.0) for i in range(50)]
        print(repr(got[-1]), len(got), flush=True)
        """
    )
    port = int(proc.stdout.readline())
    ctx = make_context()
    ctx.connect(f"localhost:{port}", timeout=5)
    pub = yoton.PubChannel(ctx, "data", yoton.OBJECT)
    for i in range(50):
        pub.send({"i": i, "list": [1.5, None, True, ("t", "u")]})
    assert proc.stdout.readline().strip() == (
        "{'i': 49, 'list': [1.5, None, True, ('t', 'u')]} 50"
    )


@needs_pyzo
def test_authenticated_endpoint_refuses_reference_peer_cleanly(make_context, reference):
    ctx = make_context()
    listener = ctx.listen("localhost:0", key="secret")
    proc = reference(
        """
        ct = yoton.Context()
        try:
            ct.connect("localhost:{port}", timeout=2)
            print("connected", flush=True)
        except Exception as err:
            print("refused", type(err).__name__, flush=True)
        """,
        port=listener.port,
    )
    assert proc.stdout.readline().startswith("refused")
    assert proc.wait(10) == 0
    assert listener.refused_count == 1
