"""Tests of req/rep (ReqChannel, RepChannel, Future) between contexts in one process.

Every context talks over real sockets on 127.0.0.1 (ports chosen by the OS).
Tests that need a process to die are in test_reqrep_process.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter

import pytest
from conftest import wait_until

import yoton

pytestmark = pytest.mark.timeout(60)

T = 10.0  # generous limit for anything we wait for; never a speed assertion


class Calc(yoton.RepChannel):
    """The replier used by most tests."""

    data = 5  # a class attribute: not callable remotely

    def __init__(self, context, slot="calc", name="calc", gate=None):
        super().__init__(context, slot)
        self.name = name
        self.handled: list = []
        self.gated = False
        self.gate_entered = gate[0] if gate else threading.Event()
        self.gate_release = gate[1] if gate else threading.Event()

    def add(self, a, b):
        return a + b

    def ident(self, *args, **kwargs):
        return args, kwargs

    def fail(self, message):
        raise ValueError(message)

    def bad_reply(self):
        return {1, 2, 3}  # a set cannot be encoded as an OBJECT

    def work(self, i, sleep=0.0):
        self.handled.append(i)
        if sleep:
            time.sleep(sleep)
        return i, self.name

    def gate(self, value=None):
        """Block until the test releases the gate (a slow request)."""
        self.gated = True
        self.gate_entered.set()
        self.gate_release.wait(T)
        return value, self.name

    def _private(self):
        return "secret"


class Closing(Calc):
    """A subclass that overrides channel internals: still not callable remotely."""

    def close(self):
        super().close()

    def set_mode(self, mode):
        super().set_mode(mode)


@pytest.fixture
def net():
    """A hub context listening on a free port; ``net.join()`` adds contexts to it."""

    class Net:
        def __init__(self):
            self.contexts: list[yoton.Context] = []
            self.hub = self.new()
            self.listener = self.hub.listen("localhost:0")

        def new(self, **kwargs) -> yoton.Context:
            context = yoton.Context(**kwargs)
            self.contexts.append(context)
            return context

        def join(self, **kwargs) -> yoton.Context:
            context = self.new(**kwargs)
            context.connect(f"localhost:{self.listener.port}")
            hub = self.hub
            assert wait_until(lambda: any(c.id2 == context.id for c in hub.connections))
            return context

    network = Net()
    try:
        yield network
    finally:
        for context in network.contexts:
            context.close()


@pytest.fixture
def pair():
    """Two contexts, one bound and one connected: (replier ctx, requester ctx)."""
    c1, c2 = yoton.Context(), yoton.Context()
    try:
        conn = c1.bind("localhost:0")
        c2.connect(f"localhost:{conn.port1}")
        assert wait_until(lambda: c1.connection_count == 1)
        yield c1, c2
    finally:
        c1.close()
        c2.close()


@pytest.fixture
def calc(pair):
    """(replier, requester, replier context) on the pair, replier in thread mode."""
    rep = Calc(pair[0])
    rep.set_mode("thread")
    req = yoton.ReqChannel(pair[1], "calc")
    yield rep, req, pair[0]
    rep.gate_release.set()


@pytest.fixture
def clean_events():
    yoton.embed_event_loop(None)
    yoton.process_events()
    yield
    yoton.stop_event_loop()
    yoton.embed_event_loop(None)
    yoton.process_events()


# -- basic calls ---------------------------------------------------------------------


def test_add_documented_example(calc):
    rep, req, _ = calc
    assert req.add(3, 4).result(2.0) == 7
    assert req.add(3, 4).result(2.0) == 7  # second call (may take the fast path)
    assert req.add(a=1.5, b=2).result(T) == 3.5
    assert req.add("ab", "cd").result(T) == "abcd"


def test_object_values_round_trip(calc):
    _, req, _ = calc
    args = (None, True, False, -(2**62), 2.5, "tekst é", b"\x00\xff", [1, [2]], (3,))
    kwargs = {"d": {"k": [1, (2, None)], "n": {}}, "empty": ()}
    assert req.ident(*args, **kwargs).result(T) == (args, kwargs)
    assert req.ident().result(T) == ((), {})


def test_many_sequential_calls(calc):
    _, req, _ = calc
    for i in range(200):
        assert req.add(i, 1).result(T) == i + 1


def test_echo_returns_arg_and_hex_context_id(calc):
    _, req, rep_ctx = calc
    assert req.echo("hi").result(T) == ("hi", hex(rep_ctx.id))
    assert req.echo([1, 2], sleep=0.01).result(T) == ([1, 2], hex(rep_ctx.id))


def test_req_channel_attributes_stay_local(calc):
    _, req, _ = calc
    assert req.closed is False
    assert req.pending == 0
    assert isinstance(req.received, yoton.Signal)
    with pytest.raises(AttributeError):
        req._no_such_private_name  # noqa: B018
    assert isinstance(req.anything, type(lambda: None))  # a remote-call proxy


# -- modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["thread", 2, "THREAD", "thread-driven"])
def test_thread_mode_forms(pair, mode):
    rep = Calc(pair[0])
    rep.set_mode(mode)
    req = yoton.ReqChannel(pair[1], "calc")
    assert req.add(1, 2).result(T) == 3


@pytest.mark.parametrize("off", ["off", 0, "OFF"])
def test_off_mode_does_not_serve_until_switched_on(pair, off):
    rep = Calc(pair[0])
    rep.set_mode(off)
    req = yoton.ReqChannel(pair[1], "calc")
    future = req.add(1, 2)
    with pytest.raises(yoton.TimeoutError):
        future.result(0.3)
    assert not future.done()
    rep.set_mode("thread")
    assert future.result(T) == 3
    # Off again: new requests wait (and are auto-cancelled in the end).
    rep.set_mode(off)
    late = req.add(2, 3)
    late.set_auto_cancel_timeout(0.5)
    with pytest.raises(yoton.CancelledError):
        late.result(T)


def test_invalid_mode(pair):
    rep = Calc(pair[0])
    for mode in ["fast", 3, -1, None, 1.5]:
        with pytest.raises(ValueError):
            rep.set_mode(mode)


@pytest.mark.parametrize("mode", ["event", 1, "event-driven"])
def test_event_mode_with_process_events(pair, clean_events, mode):
    rep = Calc(pair[0])
    rep.set_mode(mode)
    req = yoton.ReqChannel(pair[1], "calc")
    futures = [req.add(i, i) for i in range(20)]
    deadline = time.monotonic() + T
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        yoton.process_events(0.05)
    assert [f.result(0) for f in futures] == [2 * i for i in range(20)]


def test_event_mode_not_served_without_event_processing(pair, clean_events):
    rep = Calc(pair[0])
    rep.set_mode("event")
    req = yoton.ReqChannel(pair[1], "calc")
    future = req.add(1, 1)
    with pytest.raises(yoton.TimeoutError):
        future.result(0.3)  # nobody processes yoton events
    deadline = time.monotonic() + T
    while not future.done() and time.monotonic() < deadline:
        yoton.process_events(0.05)
    assert future.result(0) == 2


def test_event_mode_with_event_loop_thread(pair, clean_events):
    rep = Calc(pair[0])
    rep.set_mode("event")
    req = yoton.ReqChannel(pair[1], "calc")
    loop = threading.Thread(target=yoton.start_event_loop, daemon=True)
    loop.start()
    try:
        assert [req.add(i, 1).result(T) for i in range(20)] == list(range(1, 21))
        # Done-callbacks run in the event loop thread while it runs.
        called = []
        done = threading.Event()

        def callback(future):
            called.append((future.result(0), threading.current_thread()))
            done.set()

        req.add(5, 5).add_done_callback(callback)
        assert done.wait(T)
        assert called == [(10, loop)]
    finally:
        yoton.stop_event_loop()
        loop.join(T)
    assert not loop.is_alive()


def test_switch_from_event_to_thread_mode(pair, clean_events):
    rep = Calc(pair[0])
    rep.set_mode("event")
    rep.set_mode("thread")
    req = yoton.ReqChannel(pair[1], "calc")
    assert req.add(2, 2).result(T) == 4


# -- what may be called remotely ---------------------------------------------------


REFUSED = [
    "_private",
    "__init__",
    "__class__",
    "__dict__",
    "_context",
    "_send",
    "_handle",
    "_q_in",
    "close",
    "set_mode",
    "closed",
    "pending",
    "dropped",
    "received",
    "slot_incoming",
    "message_to_bytes",
    "message_from_bytes",
    "data",  # class attribute, not a method
    "name",  # instance attribute
    "handled",
    "gate_release",
    "no_such_method",
    "",
]


@pytest.mark.parametrize("cls", [Calc, Closing])
def test_only_public_subclass_methods_are_callable(pair, cls):
    rep = cls(pair[0])
    rep.set_mode("thread")
    req = yoton.ReqChannel(pair[1], "calc")
    futures = {name: req._request(name, (), {}) for name in REFUSED}
    for name, future in futures.items():
        err = future.exception(T)
        assert isinstance(err, yoton.RemoteError), name
        assert err.type_name == "AttributeError", (name, err)
        assert repr(name) in err.message, (name, err.message)
    # Non-string names are refused too.
    for name in [5, None, ["add"]]:
        err = req._request(name, (1, 2), {}).exception(T)
        assert isinstance(err, yoton.RemoteError)
    # Nothing was executed: the channel is open, in thread mode, and serving.
    assert not rep.closed and rep.handled == []
    assert req.add(1, 2).result(T) == 3
    assert req.echo(1).result(T)[0] == 1


def test_malformed_requests_get_errors(calc):
    _, req, _ = calc
    err = req._request("add", "ab", {}).exception(T)  # args not a tuple
    assert isinstance(err, yoton.RemoteError) and err.type_name == "TypeError"
    err = req._request("add", (1, 2), [1]).exception(T)  # kwargs not a dict
    assert isinstance(err, yoton.RemoteError) and err.type_name == "TypeError"
    # A request that is not (name, args, kwargs) at all.
    future = req._request("add", (1, 2), {})
    assert future.result(T) == 3
    raw = yoton.OBJECT.message_to_bytes("just a string")
    with req._lock:
        req._counter += 1
        future = yoton.Future(req, req._counter)
        future._request_data = raw
        req._futures[req._counter] = future
    req._ask(future)
    err = future.exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert req.add(1, 1).result(T) == 2


# -- errors --------------------------------------------------------------------------


def test_remote_exception_becomes_remote_error(calc):
    _, req, _ = calc
    future = req.fail("boom")
    err = future.exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert isinstance(err, yoton.YotonError)
    assert err.type_name == "ValueError"
    assert err.message == "boom"
    assert "Traceback" in err.remote_traceback
    assert "in fail" in err.remote_traceback
    assert "ValueError: boom" in err.remote_traceback
    assert "ValueError: boom" in str(err) and "in fail" in str(err)
    with pytest.raises(yoton.RemoteError) as info:
        future.result(0)
    assert info.value is err
    assert future.done() and not future.cancelled()


def test_wrong_arguments_and_unknown_method(calc):
    _, req, _ = calc
    for future in [req.add(1), req.add(1, 2, 3), req.add(1, c=2)]:
        err = future.exception(T)
        assert isinstance(err, yoton.RemoteError)
        assert err.type_name == "TypeError"
        assert "add()" in err.message
    err = req.does_not_exist(1).exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert err.type_name == "AttributeError"
    assert "does_not_exist" in err.message
    assert req.add(1, 2).result(T) == 3  # still serving


def test_unencodable_reply_fails_on_caller_side(calc):
    _, req, _ = calc
    err = req.bad_reply().exception(T)
    assert isinstance(err, yoton.RemoteError)
    assert err.type_name == "EncodeError"
    assert req.add(1, 2).result(T) == 3


def test_unencodable_arguments_raise_at_call_time(calc):
    _, req, _ = calc
    for args, kwargs in [(({1, 2},), {}), ((object(),), {}), ((), {"x": {3}})]:
        with pytest.raises(yoton.EncodeError):
            req.ident(*args, **kwargs)
    assert req._futures == {}  # nothing was sent or left behind
    assert req.add(1, 2).result(T) == 3


def test_request_on_closed_channel(calc):
    _, req, _ = calc
    req.close()
    with pytest.raises(yoton.ConnectionClosedError):
        req.add(1, 2)
    with pytest.raises(OSError):
        req.add(1, 2)


# -- the Future API on real requests ------------------------------------------------


def test_timeout_running_and_cancel_refused(calc):
    rep, req, _ = calc
    future = req.gate("x")
    assert rep.gate_entered.wait(T)
    with pytest.raises(yoton.TimeoutError) as info:
        future.result(0.05)
    assert isinstance(info.value, TimeoutError)  # the builtin too
    with pytest.raises(TimeoutError):
        future.exception(0.01)
    assert future.running() and not future.done() and not future.cancelled()
    assert future.cancel() is False  # a replier handles it
    assert future.running()
    rep.gate_release.set()
    assert future.result(T) == ("x", "calc")
    assert future.exception(0) is None
    assert future.done() and not future.running() and not future.cancelled()
    assert future.cancel() is False  # finished: not cancelled


def test_cancel_pending_request(pair):
    # No replier on this slot: the request stays pending.
    req = yoton.ReqChannel(pair[1], "nobody")
    future = req.add(1, 2)
    calls = []
    future.add_done_callback(calls.append)
    assert not future.running() and not future.done()
    assert future.cancel() is True
    assert future.cancelled() and future.done() and not future.running()
    assert future.cancel() is True  # still cancelled
    assert calls == [future]
    with pytest.raises(yoton.CancelledError):
        future.result(0)
    with pytest.raises(yoton.CancelledError):
        future.exception(0)
    assert future.result_or_cancel(0.01) is None
    assert req._futures == {}


def test_cancelled_request_is_never_executed(calc):
    rep, req, _ = calc
    blocker = req.gate("a")
    assert rep.gate_entered.wait(T)
    queued = req.work(1)  # waits: the only replier is busy
    assert queued.cancel() is True
    rep.gate_release.set()
    assert blocker.result(T) == ("a", "calc")
    assert req.work(2).result(T) == (2, "calc")
    assert rep.handled == [2]


def test_result_or_cancel(calc, pair):
    _, req, _ = calc
    assert req.add(1, 2).result_or_cancel(T) == 3
    nobody = yoton.ReqChannel(pair[1], "nobody")
    future = nobody.add(1, 2)
    assert future.result_or_cancel(0.05) is None
    assert future.cancelled()


def test_done_callbacks(calc):
    _, req, _ = calc
    order = []
    done = threading.Event()
    future = req.add(1, 2)
    future.add_done_callback(lambda f: order.append(("a", f.result(0))))
    future.add_done_callback(lambda f: 1 / 0)  # logged and ignored
    future.add_done_callback(lambda f: (order.append(("b", f.result(0))), done.set()))
    assert done.wait(T)
    assert order == [("a", 3), ("b", 3)]
    # Already done: called at once, exactly once.
    late = []
    future.add_done_callback(late.append)
    assert late == [future]
    time.sleep(0.05)
    assert late == [future] and order == [("a", 3), ("b", 3)]
    with pytest.raises(ValueError):
        future.add_done_callback("not callable")


def test_done_callback_logs_exceptions(calc, caplog):
    _, req, _ = calc
    future = req.add(1, 2)
    future.result(T)
    with caplog.at_level(logging.ERROR, logger="yoton"):
        future.add_done_callback(lambda f: 1 / 0)
    assert "ZeroDivisionError" in caplog.text


def test_done_callback_on_error_and_cancel(calc, pair):
    _, req, _ = calc
    got = concurrent.futures.Future()
    req.fail("x").add_done_callback(got.set_result)
    assert isinstance(got.result(T).exception(0), yoton.RemoteError)
    nobody = yoton.ReqChannel(pair[1], "nobody")
    future = nobody.add(1, 2)
    calls = []
    future.add_done_callback(calls.append)
    future.cancel()
    future.cancel()
    assert calls == [future]


def test_auto_cancel_timeout(pair):
    req = yoton.ReqChannel(pair[1], "nobody")
    future = req.add(1, 2)
    calls = []
    future.add_done_callback(calls.append)
    future.set_auto_cancel_timeout(0.3)
    with pytest.raises(yoton.CancelledError):
        future.result(T)
    assert future.cancelled()
    assert wait_until(lambda: calls)  # run by the thread that cancelled it
    assert calls == [future]
    for bad in [0, -1]:
        with pytest.raises(ValueError):
            future.set_auto_cancel_timeout(bad)
    # The channel's default, and None (no limit).
    quick = yoton.ReqChannel(pair[1], "nobody2", default_future_timeout=0.2)
    with pytest.raises(yoton.CancelledError):
        quick.add(1, 2).result(T)
    forever = quick.add(1, 2)
    forever.set_auto_cancel_timeout(None)
    with pytest.raises(yoton.TimeoutError):
        forever.result(0.5)
    assert not forever.done()
    forever.cancel()


def test_late_replier_gets_pending_request(pair):
    # Requests made before any replier exists are served once one appears.
    req = yoton.ReqChannel(pair[1], "calc")
    future = req.add(20, 22)
    with pytest.raises(yoton.TimeoutError):
        future.result(0.1)
    rep = Calc(pair[0])
    rep.set_mode("thread")
    assert future.result(T) == 42


def test_close_requester_cancels_pending(calc, pair):
    rep, req, _ = calc
    running = req.gate(1)
    assert rep.gate_entered.wait(T)
    nobody = yoton.ReqChannel(pair[1], "nobody")
    pending = nobody.add(1, 2)
    nobody.close()
    with pytest.raises(yoton.CancelledError):
        pending.result(T)
    req.close()
    with pytest.raises(yoton.CancelledError):
        running.result(T)


def test_closed_requester_does_not_stall_replier(net):
    # A requester closes its channel while its request waits for the busy
    # replier: the replier must not wait for that request afterwards.
    rep = Calc(net.join())
    rep.set_mode("thread")
    req = yoton.ReqChannel(net.join(), "calc")
    leaving = yoton.ReqChannel(net.join(), "calc")
    try:
        blocker = req.gate("b")
        assert rep.gate_entered.wait(T)
        abandoned = leaving.add(1, 1)
        assert wait_until(lambda: rep._pre_requests)  # the replier heard it
        waiting = req.add(2, 3)
        leaving.close()
        assert abandoned.cancelled()
    finally:
        rep.gate_release.set()
    assert blocker.result(T)[0] == "b"
    assert waiting.result(T) == 5


def test_stale_ack_does_not_stall_replier(calc, pair):
    # A replier may offer to take a request the requester no longer waits for
    # (a resent "req?" crossing the "req-"). The requester must release it.
    rep, req, _ = calc
    assert req.add(1, 1).result(T) == 2
    with rep._lock:
        rep._pre_requests[(pair[1].id, 12345)] = None  # never made (or long done)
    rep._acknowledge_next()
    assert wait_until(lambda: rep._acked is None)
    futures = [req.add(i, 1) for i in range(3)]
    assert [f.result(T) for f in futures] == [1, 2, 3]


def test_mode_switches_while_thread_waits(pair, clean_events):
    rep = Calc(pair[0])
    req = yoton.ReqChannel(pair[1], "calc")
    rep.set_mode("thread")
    assert req.add(1, 1).result(T) == 2
    rep.set_mode("off")
    rep.set_mode("thread")  # at once back on: one thread serves
    assert [req.add(i, 1).result(T) for i in range(5)] == [1, 2, 3, 4, 5]
    serving = [t for t in threading.enumerate() if t.name == "yoton-rep"]
    assert rep._thread in serving
    # Off: even a direct call to this (known, idle) replier is not executed.
    rep.set_mode("off")
    future = req.work(1)
    with pytest.raises(yoton.TimeoutError):
        future.result(0.3)
    assert rep.handled == []
    # Event mode: the old thread leaves the call to the event loop.
    rep.set_mode("event")
    deadline = time.monotonic() + T
    while not future.done() and time.monotonic() < deadline:
        yoton.process_events(0.05)
    assert future.result(0) == (1, "calc")
    assert rep.handled == [1]


class Exiting(Calc):
    def leave(self):
        raise SystemExit("replier method called sys.exit()")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_thread_mode_restarts_after_thread_died(pair):
    rep = Exiting(pair[0])
    rep.set_mode("thread")
    req = yoton.ReqChannel(pair[1], "calc")
    future = req.leave()
    assert wait_until(lambda: not rep._thread.is_alive())
    assert future.running()  # no reply will come
    rep.set_mode("thread")
    assert req.add(1, 2).result(T) == 3


# -- the bare Future (executor / unit-test API) -------------------------------------


def test_bare_future_set_result():
    future = yoton.Future()
    calls = []
    future.add_done_callback(calls.append)
    assert not future.running() and not future.done()
    with pytest.raises(yoton.TimeoutError):
        future.result(0.01)
    assert future.set_running_or_notify_cancel() is True
    assert future.running() and future.cancel() is False
    with pytest.raises(RuntimeError):
        future.set_running_or_notify_cancel()
    future.set_result([1, 2])
    assert future.done() and future.result(0) == [1, 2] and calls == [future]
    assert future.exception(0) is None
    with pytest.raises(RuntimeError):
        future.set_running_or_notify_cancel()


def test_bare_future_set_exception():
    future = yoton.Future()
    assert future.set_running_or_notify_cancel()
    error = KeyError("k")
    future.set_exception(error)
    assert future.exception(0) is error
    with pytest.raises(KeyError):
        future.result(0)
    text = yoton.Future()
    text.set_running_or_notify_cancel()
    text.set_exception("went wrong")
    assert isinstance(text.exception(0), Exception)
    assert str(text.exception(0)) == "went wrong"
    with pytest.raises(ValueError):
        yoton.Future().set_exception(42)


def test_bare_future_cancel_then_notify():
    future = yoton.Future()
    assert future.cancel() is True
    assert future.set_running_or_notify_cancel() is False
    assert future.cancelled() and future.done()
    with pytest.raises(yoton.CancelledError):
        future.result(0)


def test_bare_future_result_from_other_thread_wakes_waiter():
    future = yoton.Future()
    future.set_running_or_notify_cancel()
    calls = []
    threading.Timer(0.05, future.set_result, args=("late",)).start()
    future.add_done_callback(lambda f: calls.append(threading.current_thread()))
    assert future.result(T) == "late"
    assert wait_until(lambda: calls)
    assert calls[0] is not threading.current_thread()  # no event loop needed


# -- asyncio -------------------------------------------------------------------------


def test_await_futures(calc):
    rep, req, _ = calc

    async def main():
        assert await req.add(3, 4) == 7
        assert await asyncio.wait_for(req.add(1, 2), T) == 3
        results = await asyncio.gather(*(req.add(i, i) for i in range(10)))
        assert results == [2 * i for i in range(10)]
        with pytest.raises(yoton.RemoteError) as info:
            await req.fail("async boom")
        assert info.value.message == "async boom"
        done = req.add(1, 1)
        done.result(T)
        assert await done == 2  # already done
        # A slow request does not block the asyncio loop.
        slow = req.gate("s")
        ticks = 0
        while not rep.gate_entered.is_set():
            await asyncio.sleep(0.01)
        while ticks < 3:
            await asyncio.sleep(0.01)
            ticks += 1
        rep.gate_release.set()
        assert await slow == ("s", "calc")
        return True

    assert asyncio.run(main())


def test_await_cancelled_future(pair):
    req = yoton.ReqChannel(pair[1], "nobody")

    async def main():
        future = req.add(1, 2)
        future.set_auto_cancel_timeout(0.2)
        with pytest.raises(asyncio.CancelledError):
            await future
        return future.cancelled()

    assert asyncio.run(main())


def test_wait_for_timeout_then_loop_closed(calc):
    # The reply comes after asyncio gave up waiting and its loop is closed:
    # the connection must survive and the future still gets its result.
    rep, req, _ = calc
    future = req.gate("late")

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(future, 0.1)

    asyncio.run(main())
    assert rep.gate_entered.wait(T)
    rep.gate_release.set()
    assert future.result(T) == ("late", "calc")
    assert req.add(1, 2).result(T) == 3
    assert len(req._context.connections) == 1


def test_done_callbacks_without_event_loop(calc, clean_events):
    _, req, _ = calc
    assert not yoton.events.loop_active()
    got = concurrent.futures.Future()
    req.add(2, 3).add_done_callback(lambda f: got.set_result(f.result(0)))
    assert got.result(T) == 5


# -- load balancing ------------------------------------------------------------------


def test_each_request_handled_by_exactly_one_replier(net):
    repliers = []
    for k in range(3):
        rep = Calc(net.join(), name=f"r{k}")
        rep.set_mode("thread")
        repliers.append(rep)
    req = yoton.ReqChannel(net.join(), "calc")
    # Concurrent requests that take a moment: several repliers share them.
    futures = [req.work(i, sleep=0.01) for i in range(60)]
    results = [f.result(T) for f in futures]
    assert [i for i, _ in results] == list(range(60))
    handled = Counter()
    for rep in repliers:
        handled.update(rep.handled)
    assert handled == Counter(range(60))  # each exactly once
    per_replier = Counter(name for _, name in results)
    for rep in repliers:
        assert per_replier[rep.name] == len(rep.handled)
    assert len([n for n in per_replier.values() if n]) > 1
    # Sequential requests too.
    for i in range(60, 90):
        assert req.work(i).result(T)[0] == i
    assert sum(len(rep.handled) for rep in repliers) == 90


def test_busy_replier_does_not_delay_others(net):
    gate = (threading.Event(), threading.Event())
    repliers = []
    for k in range(2):
        rep = Calc(net.join(), name=f"r{k}", gate=gate)
        rep.set_mode("thread")
        repliers.append(rep)
    req = yoton.ReqChannel(net.join(), "calc")
    try:
        # Warm up so the requester knows both repliers (fast path).
        for i in range(4):
            req.work(i).result(T)
        slow = req.gate("slow")
        assert gate[0].wait(T)
        quick = [req.work(100 + i) for i in range(5)]
        results = [f.result(T) for f in quick]  # while the slow one is blocked
        assert not slow.done()
        [busy] = [r.name for r in repliers if r.gated]
        assert all(name != busy for _, name in results)
    finally:
        gate[1].set()
    assert slow.result(T)[0] == "slow"


def test_busy_replier_does_not_delay_others_without_warm_up(net):
    gate = (threading.Event(), threading.Event())
    for k in range(2):
        Calc(net.join(), name=f"r{k}", gate=gate).set_mode("thread")
    req = yoton.ReqChannel(net.join(), "calc")
    try:
        slow = req.gate("slow")
        assert gate[0].wait(T)
        assert req.add(1, 2).result(T) == 3
        assert not slow.done()
    finally:
        gate[1].set()
    assert slow.result(T)[0] == "slow"


def test_fast_path_recovers_after_bounce(net):
    # Two requesters share one replier. When a direct call finds the replier
    # busy it is bounced and negotiated; afterwards the replier is known idle again.
    gate = (threading.Event(), threading.Event())
    rep = Calc(net.join(), gate=gate)
    rep.set_mode("thread")
    req1 = yoton.ReqChannel(net.join(), "calc")
    req2 = yoton.ReqChannel(net.join(), "calc")
    try:
        assert req1.add(1, 1).result(T) == 2
        assert req2.add(1, 1).result(T) == 2
        blocker = req1.gate("b")
        assert gate[0].wait(T)
        bounced = req2.add(2, 2)  # direct call to a busy replier
        assert wait_until(lambda: not bounced._direct)
    finally:
        gate[1].set()
    assert blocker.result(T)[0] == "b"
    assert bounced.result(T) == 4
    for i in range(5):
        future = req2.add(i, 1)
        assert future.result(T) == i + 1
    assert future._direct  # the replier is used directly again


def test_many_requesters_at_once(net):
    for k in range(2):
        Calc(net.join(), name=f"r{k}").set_mode("thread")
    contexts = [net.join() for _ in range(4)]
    shared = yoton.ReqChannel(net.join(), "calc")
    errors = []

    def own_channel(k):
        try:
            req = yoton.ReqChannel(contexts[k], "calc")
            futures = [req.add(i, 1000 * k) for i in range(30)]
            assert [f.result(T) for f in futures] == [i + 1000 * k for i in range(30)]
            for i in range(10):
                assert req.ident(k, i).result(T) == ((k, i), {})
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def shared_channel(k):
        try:
            for i in range(20):
                assert shared.ident(k, i).result(T) == ((k, i), {})
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=own_channel, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=shared_channel, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(T * 3)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


# -- replier lost --------------------------------------------------------------------


def test_replier_context_closed_mid_request(calc):
    rep, req, rep_ctx = calc
    future = req.gate("x")
    assert rep.gate_entered.wait(T)
    rep_ctx.close()
    err = future.exception(T)
    assert isinstance(err, yoton.ReplierLostError)
    with pytest.raises(yoton.ReplierLostError):
        future.result(0)


def test_replier_lost_through_relay(net):
    # requester - hub (relay) - replier: the hub forwards a LOST message.
    rep_ctx = net.join()
    rep = Calc(rep_ctx)
    rep.set_mode("thread")
    req = yoton.ReqChannel(net.join(), "calc")
    try:
        assert req.add(1, 2).result(T) == 3
        future = req.gate("x")
        assert rep.gate_entered.wait(T)
        rep_ctx.close()
        assert isinstance(future.exception(T), yoton.ReplierLostError)
    finally:
        rep.gate_release.set()


def test_other_replier_serves_after_one_is_lost(net):
    gate = (threading.Event(), threading.Event())
    lost_ctx = net.join()
    lost = Calc(lost_ctx, name="lost", gate=gate)
    lost.set_mode("thread")
    req = yoton.ReqChannel(net.join(), "calc")
    try:
        future = req.gate("x")
        assert gate[0].wait(T)
        other = Calc(net.join(), name="other")
        other.set_mode("thread")
        lost_ctx.close()
        assert isinstance(future.exception(T), yoton.ReplierLostError)
        assert req.work(1).result(T) == (1, "other")
    finally:
        gate[1].set()


def test_listener_peer_gets_reply_to_its_first_request(monkeypatch):
    rep_ctx, other, req_ctx = yoton.Context(), yoton.Context(), yoton.Context()
    try:
        listener = rep_ctx.listen("localhost:0")
        other.connect(f"localhost:{listener.port}")  # the replier has a peer
        assert wait_until(lambda: rep_ctx.connection_count == 1)
        rep = Calc(rep_ctx)
        rep.set_mode("thread")
        real_adopt = yoton.Context._adopt

        def slow_adopt(self, connection):
            if self is rep_ctx:
                time.sleep(0.3)  # widen the window between start and adopt
            real_adopt(self, connection)

        monkeypatch.setattr(yoton.Context, "_adopt", slow_adopt)
        req = yoton.ReqChannel(req_ctx, "calc")
        req_ctx.connect(f"localhost:{listener.port}")
        future = req.add(1, 2)  # at once, as a client would
        assert future.result(3) == 3  # the bug stalls it for ACK_EXPIRY (10 s)
    finally:
        for context in (req_ctx, other, rep_ctx):
            context.close()


# -- floods --------------------------------------------------------------------------


def test_flood_larger_than_replier_queue(pair):
    # The replier's context keeps only 50 packages per channel queue.
    rep_ctx = yoton.Context(queue_params=(50, "old"))
    try:
        conn = rep_ctx.bind("localhost:0")
        req_ctx = pair[1]
        req_ctx.connect(f"localhost:{conn.port1}")
        rep = Calc(rep_ctx, slot="flood")
        rep.set_mode("thread")
        req = yoton.ReqChannel(req_ctx, "flood", default_future_timeout=30)
        futures = [req.add(i, 1) for i in range(500)]
        outcomes = Counter()
        for i, future in enumerate(futures):
            try:
                assert future.result(T * 2) == i + 1
                outcomes["ok"] += 1
            except (yoton.RemoteError, yoton.CancelledError) as err:
                outcomes[type(err).__name__] += 1
        assert all(f.done() for f in futures)
        assert sum(outcomes.values()) == 500
        assert outcomes["ok"] > 0
        assert req.add(1, 1).result(T) == 2  # still serving
    finally:
        rep_ctx.close()


def test_burst_of_calls_to_one_replier_starves_none(pair):
    # Every pending call is re-asked twice a second; the replier must still
    # serve them all, oldest first (each ask once cost it O(pending) work, and
    # a re-ask sent the call to the back of the line: some never got served).
    rep_ctx, req_ctx = pair
    Calc(rep_ctx, slot="burst").set_mode("thread")
    req = yoton.ReqChannel(req_ctx, "burst", default_future_timeout=30)
    assert req.add(0, 0).result(T) == 0
    futures = [req.add(i, 1) for i in range(4000)]
    assert [future.result(30) for future in futures] == list(range(1, 4001))


def test_flood_with_small_requester_queue(net):
    for k in range(3):
        Calc(net.join(), slot="flood", name=f"r{k}").set_mode("thread")
    req = yoton.ReqChannel(net.join(queue_params=(20, "old")), "flood")
    req._default_timeout = 30
    futures = [req.add(i, 1) for i in range(300)]
    done = 0
    for future in futures:
        try:
            future.result(T * 2)
        except (yoton.RemoteError, yoton.CancelledError):
            pass
        done += future.done()
    assert done == 300
    assert req.add(1, 1).result(T) == 2
