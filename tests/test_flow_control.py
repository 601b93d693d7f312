"""Flow control with the default queues: a subscriber that falls behind slows its
connection down instead of losing messages, but one nobody reads stalls nothing."""

import threading
import time

import pytest
from conftest import wait_for

import yoton
from yoton.queues import PackageQueue

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
