"""A thread waiting for a reply (or a replier waiting for a request) reads the
connection itself when its context has a single connection.

Contexts talk over real sockets on 127.0.0.1; the replier runs in this process
so the tests can see which thread completed a future.
"""

from __future__ import annotations

import dis
import random
import signal
import sys
import threading
import time

import pytest
from conftest import wait_for

import yoton
import yoton.receiver

pytestmark = pytest.mark.timeout(60)

T = 10.0  # generous limit for anything we wait for; never a speed assertion


class Echo(yoton.RepChannel):
    def echo(self, value, sleep=0.0):
        if sleep:
            time.sleep(sleep)
        return value


@pytest.fixture
def served(pair):
    """(server context, client context, ReqChannel) with an Echo replier serving."""
    server, client = pair
    rep = Echo(server, "svc")
    rep.set_mode("thread")
    req = yoton.ReqChannel(client, "svc")
    assert req.echo("warm-up").result(T) == "warm-up"
    yield server, client, req
    rep.close()


def connect_pubsub(pub, sub) -> None:
    """Wait until ``sub`` hears ``pub``, then drain the probes."""
    wait_for(lambda: pub.send("probe") or sub.recv(False) == "probe")
    pub.send("synced")
    while sub.recv(T) != "synced":
        pass


def test_waiting_caller_reads_its_reply_in_its_own_thread(served):
    _server, client, req = served
    connection = client.connections[0]
    completed_in = []
    for i in range(200):
        future = req.echo(i)
        future.add_done_callback(lambda _f: completed_in.append(threading.get_ident()))
        assert future.result(T) == i
    # Done-callbacks run in the thread that completes the future: once the
    # receiving thread lends its reader, that is the caller itself.
    assert completed_in.count(threading.get_ident()) > 100
    assert connection._borrows > 100


def test_without_signal_masks_the_main_thread_leaves_reading_to_the_receiver(
    served, monkeypatch
):
    """Where signals cannot be masked (Windows), a Ctrl-C could land in the
    middle of routing what the main thread read: it never borrows the reader
    there, and its replies come through the receiving thread."""
    _server, client, req = served
    connection = client.connections[0]
    monkeypatch.setattr(yoton.connection, "_CAN_MASK", False)
    before = connection._borrows
    for i in range(50):
        assert req.echo(i).result(T) == i
    assert connection._borrows == before
    # Other threads still read for themselves.
    results = []
    thread = threading.Thread(
        target=lambda: results.extend(req.echo(i).result(T) for i in range(50))
    )
    thread.start()
    thread.join(T)
    assert results == list(range(50))
    assert connection._borrows > before


def test_replier_thread_reads_requests_itself(served):
    server, _client, req = served
    connection = server.connections[0]
    before = connection._borrows
    for i in range(100):
        assert req.echo(i).result(T) == i
    assert connection._borrows - before > 50


def test_other_channels_keep_flowing_while_callers_read(served):
    server, client, req = served
    pub = yoton.PubChannel(server, "news")
    sub = yoton.SubChannel(client, "news")
    connect_pubsub(pub, sub)
    published = threading.Event()

    def publish():
        for i in range(2000):
            pub.send(f"m{i}")
        published.set()

    thread = threading.Thread(target=publish)
    thread.start()
    for i in range(300):
        assert req.echo(i).result(T) == i
    thread.join(T)
    assert published.is_set()
    received = [sub.recv(T) for _ in range(2000)]
    assert received == [f"m{i}" for i in range(2000)]


def test_receiving_thread_reads_again_when_callers_stop(served):
    server, client, req = served
    for i in range(50):
        assert req.echo(i).result(T) == i
    # Nobody waits in result() now: the reply to a future that is only
    # watched by a callback, and a published message, arrive all the same.
    got = threading.Event()
    req.echo("watched").add_done_callback(lambda f: got.set())
    assert got.wait(T)
    pub = yoton.PubChannel(server, "later")
    sub = yoton.SubChannel(client, "later")
    wait_for(lambda: pub.send("hello") or sub.recv(False) == "hello")


def test_future_completed_by_another_thread_ends_a_reading_wait(served):
    _server, _client, req = served
    future = req.echo("slow", 2.0)
    timer = threading.Timer(0.05, future.set_result, ("early",))
    timer.start()
    try:
        assert future.result(T) == "early"
    finally:
        timer.cancel()


def test_peer_closing_while_a_caller_reads_fails_the_call(make_context):
    server = make_context()
    client = make_context()
    conn = server.bind("localhost:0")
    client.connect(f"localhost:{conn.port1}", timeout=5)
    rep = Echo(server, "svc")
    rep.set_mode("thread")
    req = yoton.ReqChannel(client, "svc")
    for i in range(20):
        assert req.echo(i).result(T) == i
    future = req.echo("never", 1.0)
    threading.Timer(0.02, server.close).start()
    with pytest.raises(yoton.ReplierLostError):
        future.result(T)
    assert not client.connections


class Poke(Exception):
    """Raised by our signal handler in the main thread."""


def _result_through_pokes(future, tracer=None) -> tuple:
    """Return (future.result(T), how many Pokes interrupted it), asking again
    after each; with ``tracer`` set as the trace function while it waits (an
    exception from it switches it off)."""
    pokes = 0
    while True:
        if tracer is not None:
            sys.settrace(tracer)
        try:
            return future.result(T), pokes
        except Poke:
            pokes += 1
        finally:
            if tracer is not None:
                sys.settrace(None)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
@pytest.mark.timeout(60, method="thread")  # a broken reader may hang, not raise
def test_signals_while_the_main_thread_reads_lose_nothing(served):
    """A handler that raises (like Ctrl-C) between reading and delivering would
    lose what was read; signals wait until the read data is delivered.

    The handler raises only while the main thread is inside the reader's step,
    so the test looks at that code alone (an exception raised at any instant
    anywhere, e.g. while a lock is being taken, is not something Python code
    in general survives)."""
    server, client, req = served
    pub = yoton.PubChannel(server, "stream")
    sub = yoton.SubChannel(client, "stream")
    connect_pubsub(pub, sub)

    armed = [True]
    step = yoton.receiver.SocketReader.step.__code__

    def raise_poke(_signum, frame):
        # Raise only while the main thread reads the connection: that is the
        # code that must stay consistent whatever instant a signal lands.
        while armed[0] and frame is not None:
            if frame.f_code is step:
                raise Poke()
            frame = frame.f_back

    previous = signal.signal(signal.SIGUSR1, raise_poke)
    main = threading.get_ident()
    stop = threading.Event()

    def poke():
        while not stop.wait(0.0005):
            signal.pthread_kill(main, signal.SIGUSR1)

    def publish():
        for i in range(3000):
            pub.send(f"s{i}")

    pokes = 0
    results = []
    poker = threading.Thread(target=poke)
    publisher = threading.Thread(target=publish)
    try:
        poker.start()
        publisher.start()
        for i in range(300):
            future = None
            while future is None:
                try:
                    future = req.echo(i)
                except Poke:
                    pokes += 1  # a signal may land before or after sending
            result, poked = _result_through_pokes(future)
            results.append(result)
            pokes += poked
    finally:
        armed[0] = False  # no call here: a pending handler cannot raise first
        stop.set()
        poker.join(T)
        publisher.join(T)
        signal.signal(signal.SIGUSR1, previous)
    assert pokes > 0
    assert results == list(range(300))
    received = [sub.recv(T) for _ in range(3000)]
    assert received == [f"s{i}" for i in range(3000)]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
@pytest.mark.timeout(60, method="thread")
def test_a_signal_interrupts_a_caller_waiting_in_its_receive(served):
    """A handler that raises (like Ctrl-C's) interrupts the main thread while
    it waits in its own receive for a slow reply, long before the reply; the
    reply is not lost: asking again gets it."""
    server, client, req = served
    previous = signal.signal(signal.SIGUSR1, _raise_poke)
    try:
        future = req.echo("late", 3.0)
        timer = threading.Timer(
            0.2, signal.pthread_kill, (threading.get_ident(), signal.SIGUSR1)
        )
        timer.start()
        with pytest.raises(Poke):
            future.result(T)
        assert not future.done()  # interrupted in the wait, not after it
        timer.join(T)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert future.result(T) == "late"
    assert req.echo("next").result(T) == "next"


def _raise_poke(_signum, _frame):
    raise Poke()


def _points_after_calls(code) -> set:
    """Offsets of the instructions that follow a call: where CPython checks for
    pending signals (and so where a handler's exception can appear)."""
    instructions = list(dis.get_instructions(code))
    return {
        following.offset
        for ins, following in zip(instructions, instructions[1:])
        if ins.opname in ("CALL", "CALL_FUNCTION_EX", "BEFORE_WITH")
        or ins.opname.startswith("CALL_")
    }


def _poking_tracer(functions, seed: int, unless=lambda: False):
    """A sys.settrace tracer that raises Poke in ``functions`` right after a call
    returns (5% of such points, at random), except when ``unless()``."""
    points = {f.__code__: _points_after_calls(f.__code__) for f in functions}
    rng = random.Random(seed)

    def local(frame, event, _arg):
        if (
            event == "opcode"
            and frame.f_lasti in points[frame.f_code]
            and rng.random() < 0.05
            and not unless()
        ):
            raise Poke()
        return local

    def tracer(frame, event, _arg):
        if frame.f_code in points:
            frame.f_trace_opcodes = True
            return local
        return None

    return tracer


@pytest.mark.timeout(60, method="thread")  # a wedged connection hangs, not raises
def test_an_exception_wherever_a_signal_can_land_in_queue_loses_nothing(served):
    """Like a Ctrl-C handler would, raise in the main thread's writes
    (TcpConnection._send_local, _enqueue, _release_socket) right after a call
    returns (where CPython runs signal handlers), at random such points: the
    connection must neither wedge (the socket left owned by nobody) nor lose
    frames queued before (a batch taken off the queue)."""
    server, client, req = served
    req.close()
    req = yoton.ReqChannel(client, "svc", default_future_timeout=60)
    connection = yoton.connection.TcpConnection
    tracer = _poking_tracer(
        [connection._send_local, connection._enqueue, connection._release_socket],
        seed=1,
    )
    pokes = 0
    futures = []
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        for i in range(3000):
            sys.settrace(tracer)  # an exception from it switches it off
            try:
                futures.append(req.echo(i))
            except Poke:
                pokes += 1  # this call may or may not have gone out
    finally:
        sys.settrace(None)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask  # none left blocked
    assert pokes > 100
    results = [future.result(30) for future in futures]
    assert results == sorted(results)  # every call we got a future for came back
    assert req.echo("after").result(T) == "after"


def _sigint_blocked() -> bool:
    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.mark.timeout(60, method="thread")  # a wedged connection hangs, not raises
def test_an_exception_wherever_a_signal_can_land_in_posting_loses_nothing(pair):
    """Publish in the main thread while a tracer raises, like a Ctrl-C handler,
    after calls in the posting path (PubChannel.send, Context._after_post,
    _frame_posted, their framing and TcpConnection's writes) wherever signals
    are not masked: every message whose send() returned arrives, once and in
    order, none is stranded among the posted payloads, and no signal is left
    blocked."""
    server, client = pair
    sub = yoton.SubChannel(server, "posted")
    pub = yoton.PubChannel(client, "posted")
    connect_pubsub(pub, sub)
    functions = [
        yoton.PubChannel.send,
        yoton.context.Context._after_post,
        yoton.context.Context._frame_posted,
        yoton.context.Context._frame_posted_locked,
        yoton.context.Context._wake_senders,
        yoton.connection.TcpConnection._send_local,
        yoton.connection.TcpConnection._enqueue,
        yoton.connection.TcpConnection._release_socket,
    ]
    # A handler cannot run while signals are masked: no pokes there.
    tracer = _poking_tracer(functions, seed=2, unless=_sigint_blocked)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    sent = []
    pokes = 0
    try:
        for i in range(5000):
            sys.settrace(tracer)  # an exception from it switches it off
            try:
                pub.send(f"m{i}")
                sent.append(i)
            except Poke:
                pokes += 1  # this message may or may not have gone out
    finally:
        sys.settrace(None)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert pokes > 100
    pub.send("end")
    received = []
    while True:
        message = sub.recv(T)
        assert message, "a message was lost (or stranded unsent)"
        if message == "end":
            break
        received.append(int(message[1:]))
    assert received == sorted(set(received))  # once each, in order
    assert set(sent) <= set(received)


@pytest.mark.timeout(60, method="thread")  # a wedged reader hangs, not raises
def test_an_exception_wherever_a_signal_can_land_in_reading_loses_nothing(served):
    """Raise, like a Ctrl-C handler, in the main thread's reads (SocketReader
    .step, _read, _set_wait, and the way a lone reply is taken without a
    signal mask: _take_reply of the reader, the context and the requester)
    right after a call returns wherever signals are not masked, while
    replies and published messages come in: a count
    received just before is taken by the next step and a reply half taken is
    taken again, so every reply and every message arrives once, in order,
    no future or outstanding call is left behind (once the last read is
    done), and no signal is blocked."""
    server, client, req = served
    pub = yoton.PubChannel(server, "stream")
    sub = yoton.SubChannel(client, "stream")
    connect_pubsub(pub, sub)
    reader = yoton.receiver.SocketReader
    requester = yoton.channels.reqrep._Requester
    functions = [
        reader.step,
        reader._read,
        reader._set_wait,
        reader._take_reply,
        yoton.context.Context._take_reply,
        requester._take_reply,
    ]
    tracer = _poking_tracer(functions, seed=3, unless=_sigint_blocked)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pokes = 0
    results = []
    for i in range(1000):
        if i % 3 == 0:
            pub.send(f"s{i}")
        result, poked = _result_through_pokes(req.echo(i), tracer)
        results.append(result)
        pokes += poked
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert pokes > 50
    assert results == list(range(1000))
    expected = [f"s{i}" for i in range(0, 1000, 3)]
    assert [sub.recv(T) for _ in expected] == expected
    # A reply whose taking a poke cut short after its future was done is
    # finished by the next read (here, the receiving thread's, once we stop).
    core = req._core
    wait_for(lambda: not core._futures)
    assert set(core._repliers.values()) == {0}
