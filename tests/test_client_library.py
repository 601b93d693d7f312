"""The client library against a real broker and kernel (separate processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading

import pytest
from test_client_support import WAIT, broker, home  # noqa: F401

import yoton
from client import CONNECTED, DISCONNECTED, NO_HEARTBEAT, Client, Output

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def clients(broker):  # noqa: F811
    """A factory of clients attached to the broker; all closed afterwards."""
    made: list[Client] = []

    def make(**kwargs) -> Client:
        c = Client.from_connection_file(broker.connection_file, **kwargs)
        made.append(c)
        assert c.wait_for_status("Ready", timeout=WAIT) == "Ready"
        assert c.wait_for_kernel_info(timeout=WAIT)
        return c

    yield make
    for c in made:
        c.close()


def wait_for(iterator, predicate, after_echo=None):
    """Consume output until ``predicate(output)``; return everything seen.

    With ``after_echo``, output before the echo of that line is skipped (a prompt
    of the kernel's start-up can arrive after the Ready status).
    """
    seen = []
    for item in iterator:
        if after_echo is not None:
            if item.stream == "echo" and item.text == after_echo + "\n":
                after_echo = None
            else:
                continue
        seen.append(item)
        if predicate(item):
            return seen
    raise AssertionError(f"not seen; got {seen!r}")


def test_run_returns_output_in_order(clients):
    c = clients()
    code = (
        "import sys\n"
        "for i in range(3):\n"
        "    print('o', i, flush=True); print('e', i, file=sys.stderr, flush=True)"
    )
    assert c.run(code, timeout=WAIT) == "o 0\ne 0\no 1\ne 1\no 2\ne 2\n"
    assert c.run("6 * 7", timeout=WAIT) == "42\n"


def test_streams_merge_in_production_order(clients):
    c = clients()
    code = (
        "import sys\n"
        "for i in range(200):\n"
        "    _ = (sys.stdout, sys.stderr)[i % 2].write(f'{i}\\n')"
    )
    text = c.run(code, timeout=WAIT)
    assert text.split() == [str(i) for i in range(200)]


def test_callbacks_and_iterator_see_every_stream(clients):
    c = clients()
    got: list[Output] = []
    done = threading.Event()

    def on_output(output: Output) -> None:
        got.append(output)
        if output.stream == "prompt" and any(o.stream == "out" for o in got):
            done.set()

    c.add_output_callback(on_output)
    with c.iter_output(timeout=WAIT) as it:
        c.execute("print('hi')")
        seen = wait_for(it, lambda o: o.stream == "prompt", "print('hi')")
    assert done.wait(WAIT)
    streams = [o.stream for o in seen]
    assert streams[0] == "echo" and seen[0].text == "print('hi')\n"
    assert ("out", "hi\n") in [(o.stream, o.text) for o in seen]
    assert streams[-1] == "prompt" and seen[-1].text == ">>> "
    c.remove_callback(on_output)


def test_block_execution_adds_blank_line(clients):
    c = clients()
    c.execute("def double(x):\n    return 2 * x")
    assert c.run("print(double(21))", timeout=WAIT) == "42\n"


def test_two_clients_see_each_others_code_and_output(clients):
    a, b = clients(), clients()
    with b.iter_output(timeout=WAIT) as it:
        a.execute("print('from a')")
        seen = wait_for(it, lambda o: o.stream == "out", "print('from a')")
    assert ("echo", "print('from a')\n") == (seen[0].stream, seen[0].text)
    assert seen[-1].text == "from a\n"


def test_late_client_gets_history(clients):
    a = clients()
    a.run("print('before you came')", timeout=WAIT)
    b = clients()
    texts = [(o.stream, o.text) for o in b.history]
    assert ("out", "before you came\n") in texts
    assert all(o.replay for o in b.history)


def test_input_answered_by_a_client(clients):
    c = clients()
    with c.iter_output(timeout=WAIT) as it:
        c.execute("name = input('Name: ')")
        wait_for(it, lambda o: o.stream == "prompt", "name = input('Name: ')")
    assert c.wait_for_status("Input", timeout=WAIT) == "Input"
    c.send_line("Ada")
    assert c.run("print(name.upper())", timeout=WAIT) == "ADA\n"


def test_introspection(clients):
    c = clients()
    c.run("import os", timeout=WAIT)
    reply = c.complete("os.pa").result(WAIT)
    assert {"path", "pardir"} <= set(reply["names"])
    assert reply["prefix_length"] == 2
    sig = c.signature("len(").result(WAIT)
    assert sig["name"] == "len"
    assert "Return the number" in c.doc("len").result(WAIT)["doc"]
    assert "path" in c.dir("os").result(WAIT)


def test_introspection_is_awaitable(clients):
    c = clients()

    async def ask():
        return await c.complete("impo")

    reply = asyncio.run(asyncio.wait_for(ask(), WAIT))
    assert "import" in reply["names"]


def test_introspection_while_code_runs(clients):
    c = clients()
    c.run("import os, time", timeout=WAIT)
    c.execute("time.sleep(60)")
    assert c.wait_for_status("Busy", timeout=WAIT) == "Busy"
    reply = c.complete("os.pa").result(WAIT)
    assert "path" in reply["names"]
    c.interrupt()
    assert c.wait_for_status("Ready", timeout=WAIT) == "Ready"


def test_request_default_timeout_is_short(clients):
    c = clients(request_timeout=0.5)
    c.complete("x").result(WAIT)  # jedi loads on first use
    request = c.complete("x")
    assert request.timeout == 0.5
    assert isinstance(request.result(), dict)


def test_interrupt_stops_a_loop(clients):
    c = clients()
    with c.iter_output(timeout=WAIT) as it:
        c.execute("while True: pass")
        assert c.wait_for_status("Busy", timeout=WAIT) == "Busy"
        c.interrupt()
        seen = wait_for(it, lambda o: o.stream == "prompt", "")
    err = "".join(o.text for o in seen if o.stream == "err")
    assert "KeyboardInterrupt" in err


def test_kill_and_restart(clients):
    c = clients()
    first_pid = c.kernel_info["pid"]
    infos: list[dict] = []
    got_info = threading.Event()

    def on_info(info: dict) -> None:
        infos.append(info)
        got_info.set()

    c.add_kernel_info_callback(on_info)
    with c.iter_output(timeout=WAIT) as it:
        c.kill()
        assert c.wait_for_status("Dead", timeout=WAIT) == "Dead"
        seen = wait_for(it, lambda o: o.stream == "broker" and "SIGKILL" in o.text)
    assert seen[-1].text.startswith("Kernel")
    c.restart()
    assert c.wait_for_status("Ready", timeout=WAIT) == "Ready"
    assert got_info.wait(WAIT)
    assert infos[-1]["pid"] != first_pid
    assert c.run("print('alive')", timeout=WAIT) == "alive\n"


def test_close_detaches_and_kernel_keeps_running(clients):
    a = clients()
    a.run("kept = 12345", timeout=WAIT)
    pid = a.kernel_info["pid"]
    a.close()
    assert a.closed and a.connection_state == DISCONNECTED
    with pytest.raises(yoton.ConnectionClosedError):
        a.execute("1")
    b = clients()
    assert b.kernel_info["pid"] == pid
    assert b.run("print(kept)", timeout=WAIT) == "12345\n"


def test_wrong_key_is_refused(broker):  # noqa: F811
    with pytest.raises(yoton.AuthenticationError):
        Client(broker.address, "not the key", timeout=WAIT)


def test_nobody_listening(home):  # noqa: F811
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(yoton.ConnectFailedError):
        Client(f"127.0.0.1:{port}", "k", timeout=0.5)


def test_silent_broker_is_noticed_and_loss_reported(broker, clients):  # noqa: F811
    c = clients(heartbeat_timeout=1.0)
    states: list[tuple[str, str]] = []
    changed = threading.Condition()

    def on_connection(state: str, reason: str) -> None:
        with changed:
            states.append((state, reason))
            changed.notify_all()

    def wait_state(state: str) -> None:
        with changed:
            assert changed.wait_for(lambda: any(s == state for s, _ in states), WAIT)

    c.add_connection_callback(on_connection)
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        wait_state(NO_HEARTBEAT)
        assert c.connection_state == NO_HEARTBEAT and c.connected
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    wait_state(CONNECTED)
    other = clients()
    other.shutdown()
    wait_state(DISCONNECTED)
    assert not c.connected and c.close_reason
    with pytest.raises(yoton.ConnectFailedError):
        c.reconnect(timeout=0.5)


def test_reconnect_is_one_call(clients):
    c = clients()
    c.run("mark = 'still here'", timeout=WAIT)
    lost = threading.Event()
    c.add_connection_callback(lambda s, r: s == DISCONNECTED and lost.set())
    c.connection.close("simulated network trouble")
    assert lost.wait(WAIT)
    assert not c.connected
    c.reconnect()
    assert c.connected
    assert c.run("print(mark)", timeout=WAIT) == "still here\n"


def test_clients_joining_never_resend_stale_states(clients):
    first = clients()
    first.kill()
    assert first.wait_for_status("Dead", timeout=WAIT) == "Dead"
    first.restart()  # the new kernel joins while `first` still holds "Dead"
    assert first.wait_for_status("Ready", timeout=WAIT) == "Ready"
    others = [clients() for _ in range(3)]  # each join makes contexts resend
    assert first.run("print('ok')", timeout=WAIT) == "ok\n"
    for c in [first, *others]:
        assert c.wait_for_status("Ready", timeout=WAIT) == "Ready"
    with pytest.raises(yoton.LocalProtocolError):
        first._stat.send("Busy")
