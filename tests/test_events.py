"""Tests for yoton.events: signals, timers, call_later and the event loop."""

from __future__ import annotations

import gc
import logging
import threading
import time

import pytest

from yoton import events
from yoton.events import (
    Signal,
    Timer,
    call_later,
    embed_event_loop,
    post_event,
    process_events,
    start_event_loop,
    stop_event_loop,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # generous upper limit for anything we wait for


def drain() -> None:
    """Run every queued event, including ones queued by handlers."""
    for _ in range(1000):
        if not events._queue._queue:
            return
        process_events()


def run_until(predicate, timeout: float = WAIT) -> bool:
    """Process events (blocking, no polling) until predicate() or timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        process_events(block=remaining)
    return True


@pytest.fixture(autouse=True)
def clean_event_queue():
    embed_event_loop(None)
    drain()
    yield
    embed_event_loop(None)
    stop_event_loop()
    drain()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def handler(self, *args, **kwargs) -> None:
        self.calls.append((args, kwargs))


# --- signals ---------------------------------------------------------------------


def test_emit_queues_until_processed():
    sig = Signal()
    rec = Recorder()
    sig.bind(rec.handler)
    sig.emit(1, x=2)
    assert rec.calls == []
    process_events()
    assert rec.calls == [((1,), {"x": 2})]


def test_type_property():
    assert Signal().type is Signal
    assert Timer().type is Timer


def test_bind_twice_binds_once():
    sig = Signal()
    calls = []

    def handler(v):
        calls.append(v)

    sig.bind(handler)
    sig.bind(handler)
    rec = Recorder()
    sig.bind(rec.handler)
    sig.bind(rec.handler)  # a new bound-method object, same method
    sig.emit(5)
    process_events()
    assert calls == [5]
    assert rec.calls == [((5,), {})]


def test_unbind_one_and_all():
    sig = Signal()
    a, b = [], []
    fa, fb = a.append, b.append
    sig.bind(fa)
    sig.bind(fb)
    sig.unbind(fa)
    sig.emit(1)
    process_events()
    assert a == [] and b == [1]
    sig.unbind(lambda x: None)  # not bound: no error
    sig.unbind()
    sig.emit(2)
    process_events()
    assert b == [1]


def test_bind_not_callable():
    with pytest.raises(TypeError):
        Signal().bind(42)


def test_emit_now_calls_in_calling_thread():
    sig = Signal()
    seen = []
    sig.bind(lambda v: seen.append((v, threading.get_ident())))
    sig.emit_now(3)
    assert seen == [(3, threading.get_ident())]
    assert not events._queue._queue


def test_bound_method_is_weak():
    sig = Signal()
    rec = Recorder()
    calls = rec.calls
    sig.bind(rec.handler)
    del rec
    gc.collect()
    sig.emit(1)
    sig.emit_now(1)
    process_events()
    assert calls == []
    assert len(sig._handlers) == 0


def test_object_collected_between_emit_and_processing():
    sig = Signal()
    rec = Recorder()
    calls = rec.calls
    sig.bind(rec.handler)
    sig.emit(1)
    del rec
    gc.collect()
    process_events()
    assert calls == []


def test_plain_function_is_strong():
    sig = Signal()
    seen = []

    def make():
        return lambda v: seen.append(v)

    sig.bind(make())
    gc.collect()
    sig.emit(7)
    process_events()
    assert seen == [7]


def test_handler_exception_is_logged_and_others_run(caplog):
    sig = Signal()
    seen = []

    def bad(v):
        raise RuntimeError("boom")

    sig.bind(bad)
    sig.bind(seen.append)
    with caplog.at_level(logging.ERROR, logger="yoton.events"):
        sig.emit(1)
        process_events()
        sig.emit_now(2)
    assert seen == [1, 2]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in errors)


def test_emit_from_many_threads_delivers_all():
    sig = Signal()
    seen = []
    sig.bind(seen.append)

    def worker(k):
        for i in range(500):
            sig.emit((k, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    process_events()
    assert len(seen) == 2000
    for k in range(4):
        assert [i for kk, i in seen if kk == k] == list(range(500))


# --- timers ----------------------------------------------------------------------


def test_timer_oneshot_fires_once_without_arguments():
    timer = Timer(0.02)
    rec = Recorder()
    timer.bind(rec.handler)
    assert not timer.running
    timer.start()
    assert timer.running
    assert run_until(lambda: rec.calls)
    assert rec.calls == [((), {})]  # like yoton 2.2: no arguments
    assert not timer.running
    process_events(block=0.2)
    assert len(rec.calls) == 1


def test_timer_repeating_and_stop():
    timer = Timer(0.01, oneshot=False)
    rec = Recorder()
    timer.bind(rec.handler)
    timer.start()
    assert run_until(lambda: len(rec.calls) >= 3)
    assert timer.running
    timer.stop()
    assert not timer.running
    drain()
    n = len(rec.calls)
    process_events(block=0.2)
    drain()
    assert len(rec.calls) == n


def test_timer_stop_before_firing():
    timer = Timer(0.05)
    rec = Recorder()
    timer.bind(rec.handler)
    timer.start()
    timer.stop()
    process_events(block=0.3)
    assert rec.calls == []


def test_timer_restart_with_new_interval():
    timer = Timer(60.0)
    rec = Recorder()
    timer.bind(rec.handler)
    timer.start()
    timer.start(0.02)  # replaces the 60 s deadline
    assert timer.interval == 0.02
    assert run_until(lambda: rec.calls)
    assert len(rec.calls) == 1


def test_timer_switch_to_repeating():
    timer = Timer(0.01)
    rec = Recorder()
    timer.bind(rec.handler)
    timer.start(oneshot=False)
    assert not timer.oneshot
    assert run_until(lambda: len(rec.calls) >= 2)
    timer.stop()


def test_timer_properties_validated():
    timer = Timer()
    assert timer.interval == 1.0 and timer.oneshot is True
    with pytest.raises(ValueError):
        timer.interval = 0
    with pytest.raises(ValueError):
        Timer(-1)
    with pytest.raises(TypeError):
        timer.interval = "1"
    timer.oneshot = 0
    assert timer.oneshot is False


def test_timers_fire_in_deadline_order():
    order = []
    slow, fast = Timer(0.15), Timer(0.01)
    slow.bind(lambda: order.append("slow"))
    fast.bind(lambda: order.append("fast"))
    slow.start()
    fast.start()
    assert run_until(lambda: len(order) == 2)
    assert order == ["fast", "slow"]


def test_restarting_does_not_grow_the_schedule():
    timer = Timer(3600)
    for _ in range(2000):
        timer.start()
    timer.stop()
    assert len(events._scheduler._heap) < 500


# --- call_later ------------------------------------------------------------------


def test_call_later_ordering():
    order = []
    call_later(order.append, 0, "a")
    call_later(order.append, 0.0, "b")
    call_later(order.append, -1, "front")
    post_event(order.append, "c")
    process_events()
    assert order == ["front", "a", "b", "c"]


def test_call_later_with_delay_and_kwargs():
    seen = []

    def f(a, b=None):
        seen.append((a, b))

    call_later(f, 0.1, 1, b="late")
    call_later(f, 0.02, 2, b="early")
    call_later(f, 0, 3)
    process_events()
    assert seen == [(3, None)]
    assert run_until(lambda: len(seen) == 3)
    assert seen[1:] == [(2, "early"), (1, "late")]


def test_call_later_not_callable():
    with pytest.raises(TypeError):
        call_later(None, 0)


# --- process_events and the loop ------------------------------------------------


def test_process_events_nonblocking_on_empty_queue():
    process_events()
    process_events(False)
    process_events(0.01)


def test_process_events_wakes_on_event_from_other_thread():
    ran = threading.Event()
    t = threading.Thread(target=lambda: (time.sleep(0.05), post_event(ran.set)))
    t.start()
    process_events(block=WAIT)  # returns because the event arrived
    t.join(WAIT)
    assert ran.is_set()


def test_process_events_block_true_wakes_on_event():
    ran = threading.Event()
    t = threading.Timer(0.05, post_event, args=(ran.set,))
    t.start()
    process_events(block=True)
    t.join(WAIT)
    assert ran.is_set()


def test_events_posted_by_handlers_run_in_the_next_call():
    count = [0]

    def again():
        count[0] += 1
        post_event(again)

    post_event(again)
    process_events()  # must return even though the handler keeps posting
    assert count[0] == 1
    process_events()
    assert count[0] == 2
    events._queue._queue.clear()


def test_keyboard_interrupt_keeps_remaining_events():
    seen = []

    def interrupt():
        raise KeyboardInterrupt

    post_event(seen.append, 1)
    post_event(interrupt)
    post_event(seen.append, 2)
    with pytest.raises(KeyboardInterrupt):
        process_events()
    assert seen == [1]
    process_events()
    assert seen == [1, 2]


def test_stop_event_loop_from_other_thread():
    running = threading.Event()
    loop = threading.Thread(target=start_event_loop, daemon=True)
    loop.start()
    post_event(running.set)  # runs only once the loop processes events
    assert running.wait(WAIT)
    stop_event_loop()
    loop.join(WAIT)
    assert not loop.is_alive()


def test_stop_event_loop_from_handler():
    seen = []
    call_later(seen.append, 0.01, "x")
    call_later(stop_event_loop, 0.05)
    start_event_loop()
    assert seen == ["x"]


def test_nested_start_event_loop_returns():
    seen = []

    def nested():
        start_event_loop()  # already in a loop: returns at once
        seen.append("nested returned")
        stop_event_loop()

    post_event(nested)
    start_event_loop()
    assert seen == ["nested returned"]


def test_timer_drives_event_loop_in_thread():
    fired = threading.Event()
    timer = Timer(0.02)
    timer.bind(fired.set)
    loop = threading.Thread(target=start_event_loop, daemon=True)
    loop.start()
    timer.start()
    assert fired.wait(WAIT)
    stop_event_loop()
    loop.join(WAIT)
    assert not loop.is_alive()


def test_embed_event_loop_callback():
    woken = []
    seen = []
    embed_event_loop(lambda: woken.append(threading.get_ident()))
    post_event(seen.append, 1)
    assert len(woken) == 1
    post_event(seen.append, 2)  # not called again until events are processed
    assert len(woken) == 1
    process_events()
    assert seen == [1, 2]
    t = threading.Thread(target=post_event, args=(seen.append, 3))
    t.start()
    t.join(WAIT)
    assert len(woken) == 2 and woken[1] == t.ident
    process_events()
    embed_event_loop(None)
    post_event(seen.append, 4)
    assert len(woken) == 2
    process_events()
    assert seen == [1, 2, 3, 4]


def test_embed_called_for_timer_and_signal():
    woken = threading.Event()
    embed_event_loop(woken.set)
    timer = Timer(0.02)
    seen = []
    timer.bind(lambda: seen.append("t"))
    timer.start()
    assert woken.wait(WAIT)
    process_events()
    assert seen == ["t"]
    woken.clear()
    sig = Signal()
    sig.bind(seen.append)
    sig.emit("s")
    assert woken.is_set()
    process_events()
    assert seen == ["t", "s"]


def test_embed_called_at_once_if_events_wait():
    woken = []
    post_event(lambda: None)
    embed_event_loop(lambda: woken.append(1))
    assert woken == [1]


def test_embed_callback_exception_is_logged(caplog):
    def bad():
        raise RuntimeError("embed boom")

    seen = []
    embed_event_loop(bad)
    with caplog.at_level(logging.ERROR, logger="yoton.events"):
        post_event(seen.append, 1)
    process_events()
    assert seen == [1]
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
