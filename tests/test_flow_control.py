"""Flow control with the default queues: a subscriber that falls behind slows its
connection down instead of losing messages, but one nobody reads stalls nothing."""

import threading
import time

import pytest
from conftest import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

import yoton
from yoton.queues import ArrivalQueue, LargeMessageWindow, PackageQueue

pytestmark = pytest.mark.timeout(60)


def test_slow_subscriber_with_default_queues_loses_nothing(pair):
    a, b = pair
    sub = yoton.SubChannel(b, "flow", yoton.BINARY)
    pub = yoton.PubChannel(a, "flow", yoton.BINARY)
    n = 30000  # three times the default queue size

    def produce():
        for i in range(n):
            pub.send(i.to_bytes(4, "little"))

    producer = threading.Thread(target=produce)
    producer.start()
    pause = threading.Event()
    most_pending = 0
    for expected in range(n):
        message = sub.recv(10)
        assert message, f"only {expected} messages arrived"
        assert int.from_bytes(message, "little") == expected
        if expected % 2000 == 0:
            most_pending = max(most_pending, sub.pending)
            pause.wait(0.05)  # a consumer that is sometimes slow
    producer.join(10)
    assert sub.dropped == 0
    assert most_pending <= 10000


def test_subscriber_nobody_reads_does_not_stall_the_connection(pair):
    a, b = pair
    unread = yoton.SubChannel(b, "unread", yoton.BINARY)
    other = yoton.SubChannel(b, "other")
    pub = yoton.PubChannel(a, "unread", yoton.BINARY)
    for i in range(25000):
        pub.send(i.to_bytes(4, "little"))
    yoton.PubChannel(a, "other").send("still flowing")
    assert other.recv(20) == "still flowing"
    wait_for(lambda: unread.pending + unread.dropped == 25000)
    assert unread.dropped > 0  # counted, never silent
    # The oldest were discarded ('old' mode): the newest are kept.
    messages = unread.recv_all()
    assert int.from_bytes(messages[-1], "little") == 24999


def test_explicit_queue_params_keep_plain_discarding(make_context):
    a = make_context()
    b = make_context(queue_params=(100, "old"))
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=5)
    sub = yoton.SubChannel(b, "plain")
    assert not sub._q_in.flow_control
    pub = yoton.PubChannel(a, "plain")
    for i in range(300):
        pub.send(str(i))
    wait_for(lambda: sub.dropped == 200)
    assert sub.recv_all() == [str(i) for i in range(200, 300)]


def test_queue_waits_for_a_consumer_and_gives_up_on_a_stalled_one():
    queue = PackageQueue(8, "old")
    queue.flow_control = True
    queue.push_many(range(8))
    assert queue.over_high_water()  # more than half full

    # A consumer that takes items releases the waiting producer at a quarter.
    def consume():
        for _ in range(6):
            time.sleep(0.01)
            queue.pop(False)

    consumer = threading.Thread(target=consume)
    consumer.start()
    queue.wait_for_consumer(5.0)
    assert len(queue) <= 2
    consumer.join(5)

    # Nobody consumes: the wait gives up after the patience, and the queue
    # counts as stalled (no more waiting) until its consumer takes an item.
    queue.push_many(range(6))
    started = time.monotonic()
    queue.wait_for_consumer(0.2)
    assert 0.15 < time.monotonic() - started < 5
    assert not queue.over_high_water()
    queue.pop(False)
    assert queue.over_high_water()


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["old", "new"]),
    st.lists(
        st.one_of(
            st.lists(st.integers(1, 3), min_size=1, max_size=4),  # runs of one push
            st.integers(0, 5),  # take that many
        ),
        max_size=30,
    ),
)
def test_arrival_queue_keeps_the_arrival_order_of_what_it_keeps(discard, steps):
    """An ArrivalQueue remembers each item's recv_seq by runs; whatever it
    discarded or gave away, it tells the right one for what it still holds."""
    queue = ArrivalQueue(6, discard)
    model: list[tuple[int, int]] = []  # (item, recv_seq) as a plain list would keep
    recv_seq = item = 0
    for step in steps:
        if isinstance(step, list):  # a push: runs with gaps between them
            new_items, runs = [], []
            for length in step:
                recv_seq += 2  # something else arrived in between
                runs.append((len(new_items), recv_seq))
                for k in range(length):
                    item += 1
                    new_items.append(item)
                    model.append((item, recv_seq + k))
                recv_seq += length - 1
            queue.push_runs(new_items, runs)
            excess = len(model) - 6
            if excess > 0:
                model = model[excess:] if discard == "old" else model[:6]
        else:
            for _ in range(min(step, len(model))):
                assert queue.pop(False) == model.pop(0)[0]
        assert len(queue) == len(model)
        for position in range(len(model)):
            assert queue.arrival(position) == model[position][1]
        if model:
            assert queue.arrival(-1) == model[-1][1]
            for limit in {model[0][1] - 1, model[len(model) // 2][1], model[-1][1] + 5}:
                assert queue.count_arrived_by(limit) == sum(
                    r <= limit for _, r in model
                )
        assert queue.count_arrived_by(float("inf")) == len(model)


def _waiting(window: LargeMessageWindow) -> threading.Thread:
    """Start window.wait() in a thread; it is still alive while the wait waits."""
    waiter = threading.Thread(target=window.wait, daemon=True)
    waiter.start()
    waiter.join(0.3)
    return waiter


def test_large_message_window_waits_for_the_consumer_unless_it_takes_promptly():
    """The receiving thread waits for a large message to be taken before the
    next, except when one is pending and the one before was taken at once (its
    consumer is waiting for them); two pending, or a slow take, wait again."""
    window = LargeMessageWindow(timeout=60.0, prompt=0.5)  # prompt: generous
    first = window.track(("a",))
    waiter = _waiting(window)
    assert waiter.is_alive()  # nothing was taken yet: it waits
    del first
    waiter.join(5)
    assert not waiter.is_alive()

    quick = window.track(("b",))
    del quick  # taken at once: the consumer waits for them
    pending = window.track(("c",))
    assert not _waiting(window).is_alive()  # one pending: receiving goes on
    more = window.track(("d",))
    waiter = _waiting(window)
    assert waiter.is_alive()  # two pending: it waits again
    del pending, more
    waiter.join(5)
    assert not waiter.is_alive()

    slow = window.track(("e",))
    time.sleep(0.6)
    del slow  # taken late: a consumer busy elsewhere
    last = window.track(("f",))
    waiter = _waiting(window)
    assert waiter.is_alive()
    del last
    waiter.join(5)
    assert not waiter.is_alive()
