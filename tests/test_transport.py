"""Contexts over real TCP sockets on 127.0.0.1: connecting, routing, channels."""

import threading

import pytest
from conftest import wait_for

import yoton
from yoton.channels import pubsub

pytestmark = pytest.mark.timeout(60)


def test_pubsub_both_ways_and_case_insensitive_slots(pair):
    a, b = pair
    pub_a, sub_b = yoton.PubChannel(a, "Chat"), yoton.SubChannel(b, "chat")
    pub_b, sub_a = yoton.PubChannel(b, "back"), yoton.SubChannel(a, "BACK")
    pub_a.send("hello")
    pub_b.send("world")
    assert sub_b.recv(5) == "hello"
    assert sub_a.recv(5) == "world"


def test_patterns_and_types_never_mix(pair):
    a, b = pair
    pub = yoton.PubChannel(a, "x")
    other_type = yoton.SubChannel(b, "x", yoton.BINARY)
    state = yoton.StateChannel(b, "x")
    same = yoton.SubChannel(b, "x", yoton.TEXT)
    pub.send("text")
    assert same.recv(5) == "text"
    assert other_type.recv(0.2) == b""
    assert state.recv() == ""


def test_messages_sent_before_connecting_reach_first_peer(make_context):
    a, b = make_context(), make_context()
    pub = yoton.PubChannel(a, "early")
    for i in range(5):
        pub.send(f"m{i}")
    sub = yoton.SubChannel(b, "early")
    conn = b.bind("localhost:0")
    a.connect(f"localhost:{conn.port1}", timeout=5)
    assert [sub.recv(5) for _ in range(5)] == [f"m{i}" for i in range(5)]


def test_many_messages_sent_while_bound_and_waiting_reach_the_peer(make_context):
    # A bound connection waiting for its peer queues what is sent meanwhile,
    # however much (senders write full batches themselves only once connected).
    a, b = make_context(), make_context()
    conn = a.bind("localhost:0")
    pub = yoton.PubChannel(a, "waiting", yoton.BINARY)
    n = 3000
    for i in range(n):
        pub.send(i.to_bytes(4, "little"))
    sub = yoton.SubChannel(b, "waiting", yoton.BINARY)
    b.connect(f"localhost:{conn.port1}", timeout=5)
    got = [int.from_bytes(sub.recv(10), "little") for _ in range(n)]
    assert got == list(range(n))


def test_recv_blocking_forms_and_empty_messages(pair):
    a, b = pair
    sub = yoton.SubChannel(b, "s")
    assert sub.recv(False) == ""
    assert sub.recv(0.05) == ""
    obj = yoton.SubChannel(b, "o", yoton.OBJECT)
    assert obj.recv(False) is None
    pub = yoton.PubChannel(a, "s")
    threading.Timer(0.1, pub.send, ("late",)).start()
    assert sub.recv(True) == "late"
    for i in range(3):
        pub.send(str(i))
    wait_for(lambda: sub.pending == 3)
    assert sub.recv_all() == ["0", "1", "2"]
    pub.send("it")
    wait_for(lambda: sub.pending == 1)
    assert list(sub) == ["it"]


def test_closed_channel(pair):
    a, b = pair
    pub, sub = yoton.PubChannel(a, "c"), yoton.SubChannel(b, "c")
    pub.send("kept")
    wait_for(lambda: sub.pending == 1)
    sub.close()
    assert sub.closed
    assert sub.recv(True) == "kept"  # queued messages can still be read
    assert sub.recv(True) == ""  # and then a closed channel returns at once
    pub.close()
    with pytest.raises(IOError):
        pub.send("no")


def test_object_and_binary_messages(pair):
    a, b = pair
    pub, sub = (
        yoton.PubChannel(a, "o", yoton.OBJECT),
        yoton.SubChannel(b, "o", yoton.OBJECT),
    )
    value = {"a": [1, 2.5, None, True], "b": ("x", b"\x00\xff")}
    pub.send(value)
    assert sub.recv(5) == value
    with pytest.raises(yoton.EncodeError):
        pub.send({1, 2})
    bpub, bsub = (
        yoton.PubChannel(a, "b", yoton.BINARY),
        yoton.SubChannel(b, "b", yoton.BINARY),
    )
    big = bytes(range(256)) * 20000  # 5 MB: takes the large-frame path
    bpub.send(big)
    bpub.send(b"small")
    assert bsub.recv(10) == big
    assert bsub.recv(5) == b"small"


def test_state_channel_and_late_joiner(make_context):
    a, b, c = make_context(), make_context(), make_context()
    state_a = yoton.StateChannel(a, "status")
    state_a.send("Ready")
    state_a.send("Ready")  # unchanged: not sent again
    state_b = yoton.StateChannel(b, "status")
    listener = a.listen("localhost:0")
    b.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: state_b.recv() == "Ready")
    # Let a's resend for the newcomer arrive first: states set at the same time
    # on two sides end in an undefined order (as documented).
    ping_sub, ping_pub = yoton.SubChannel(a, "ping"), yoton.PubChannel(b, "ping")
    probe_sub, probe_pub = yoton.SubChannel(b, "probe"), yoton.PubChannel(a, "probe")
    ping_pub.send("sent after NEW_CONNECTION")
    assert ping_sub.recv(5)  # so a has handled b's NEW_CONNECTION (and resent)
    probe_pub.send("queued after the resend")
    assert probe_sub.recv(5)
    state_b.send("Busy")
    wait_for(lambda: state_a.recv() == "Busy")
    # A context that joins later learns the current state at once.
    state_c = yoton.StateChannel(c, "status")
    c.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: state_c.recv() == "Busy")


def test_listener_accepts_many_peers_and_routes_between_them(make_context):
    hub = make_context()
    listener = hub.listen("localhost:0")
    peers = [make_context() for _ in range(5)]
    subs = [yoton.SubChannel(p, "room") for p in peers]
    for p in peers:
        p.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: hub.connection_count == 5)
    yoton.PubChannel(peers[0], "room").send("hi all")
    for sub in subs[1:]:
        assert sub.recv(5) == "hi all"
    assert subs[0].recv(0.2) == ""  # a sender does not hear itself


def test_multi_hop_routing_without_duplicates(make_context):
    # A square: a-b, b-c, c-d, d-a. Every message arrives exactly once.
    a, b, c, d = (make_context() for _ in range(4))
    for left, right in [(a, b), (b, c), (c, d), (d, a)]:
        conn = left.bind("localhost:0")
        right.connect(f"localhost:{conn.port1}", timeout=5)
    subs = {ctx: yoton.SubChannel(ctx, "ring") for ctx in (b, c, d)}
    pub = yoton.PubChannel(a, "ring")
    for i in range(20):
        pub.send(str(i))
    for sub in subs.values():
        got = [sub.recv(5) for _ in range(20)]
        assert got == [str(i) for i in range(20)]
        assert sub.recv(0.3) == ""


def test_connections_by_name_and_properties(make_context):
    a, b = make_context(), make_context()
    conn = a.bind("localhost:0", name="srv")
    assert conn.is_waiting and conn.is_alive and not conn.is_connected
    assert a.connections_all["srv"] is conn
    client = b.connect(f"localhost:{conn.port1}", timeout=5, name="cli")
    wait_for(lambda: conn.is_connected)
    assert a.connections["srv"] is conn and b.connections["cli"] is client
    assert conn.id2 == b.id and client.id2 == a.id
    assert client.pid2 == conn.pid1 and client.port2 == conn.port1
    assert a.connection_count == 1
    with pytest.raises(KeyError):
        a.connections["nope"]
    with pytest.raises(ValueError):
        conn.timeout = 0.1


def test_close_reason_reaches_both_sides(pair):
    a, b = pair
    reasons = []
    b.connections[0].closed.bind(lambda conn, reason: reasons.append(reason))
    a.connections[0].close("bye now")
    wait_for(lambda: yoton.process_events(False) or reasons)
    assert reasons == ["Closed from other end."]
    assert a.connection_count == 0


def test_timedout_signal(pair):
    a, b = pair
    conn = b.connections[0]
    events = []
    conn.timeout = 0.5
    conn.timedout.bind(lambda c, flag: events.append(flag))
    # Heartbeats keep an idle connection alive: no timeout.
    threading.Event().wait(1.0)
    yoton.process_events(False)
    assert events == []


def test_authenticated_connection(make_context):
    a, b, c = make_context(), make_context(), make_context()
    listener = a.listen("localhost:0", key="s3cret")
    refused = []
    listener.refused.bind(lambda lst, peer, reason: refused.append(reason))
    conn = b.connect(f"localhost:{listener.port}", timeout=5, key="s3cret")
    assert conn.authenticated
    with pytest.raises(yoton.AuthenticationError, match="key"):
        c.connect(f"localhost:{listener.port}", timeout=5, key="wrong")
    with pytest.raises(yoton.AuthenticationError):
        c.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: listener.refused_count == 2)
    sub = yoton.SubChannel(b, "after")
    yoton.PubChannel(a, "after").send("still serving")
    assert sub.recv(5) == "still serving"


def test_public_address_needs_a_key(make_context):
    a = make_context()
    with pytest.raises(yoton.YotonError, match="key"):
        a.bind("0.0.0.0:0")
    with pytest.raises(yoton.YotonError, match="key"):
        a.listen("0.0.0.0:0")
    a.listen("0.0.0.0:0", key="k").close()
    a.listen("0.0.0.0:0", insecure=True).close()


def test_connect_to_nobody_raises_clearly(make_context):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(yoton.ConnectFailedError, match="Cannot connect"):
        make_context().connect(f"localhost:{port}", timeout=0.3)


def test_select_sub_channel_keeps_send_order(pair):
    a, b = pair
    pubs = [yoton.PubChannel(a, n) for n in ("s1", "s2", "s3")]
    subs = [yoton.SubChannel(b, n) for n in ("s1", "s2", "s3")]
    order = [0, 1, 1, 2, 0, 0, 2, 1, 0, 2]
    for i, k in enumerate(order):
        pubs[k].send(f"{k}:{i}")
    wait_for(lambda: sum(s.pending for s in subs) == len(order))
    got = []
    while True:
        channel = yoton.select_sub_channel(*subs)
        if channel is None:
            break
        got.extend(channel.recv_selected())
    assert got == [f"{k}:{i}" for i, k in enumerate(order)]


def test_posted_and_directly_framed_messages_keep_send_order(pair):
    """Small published messages are framed in batches (posted), large ones and
    every other package at once; a context's packages still go out in the
    order they were sent, whichever way each went."""
    a, b = pair
    small, large = yoton.PubChannel(a, "small"), yoton.PubChannel(a, "large")
    subs = [yoton.SubChannel(b, "small"), yoton.SubChannel(b, "large")]
    big = "L" * (yoton.context.POST_LIMIT + 1)
    expected = []
    for i in range(300):
        if i % 7 == 3:
            large.send(f"{i}:{big}")
        else:
            small.send(f"{i}")
        expected.append(i)
    wait_for(lambda: sum(s.pending for s in subs) == len(expected))
    got = []
    while (channel := yoton.select_sub_channel(*subs)) is not None:
        got.extend(int(m.split(":")[0]) for m in channel.recv_selected())
    assert got == expected


def test_close_right_after_a_burst_sends_all_of_it(pair):
    """Closing a context straight after a stream of small messages (no flush)
    still sends every one: the posted payloads are framed before the close."""
    a, b = pair
    pub = yoton.PubChannel(a, "burst")
    sub = yoton.SubChannel(b, "burst")
    for i in range(2000):
        pub.send(f"m{i}")
    a.close()
    received = [sub.recv(10) for _ in range(2000)]
    assert received == [f"m{i}" for i in range(2000)]


def test_queue_params_count_drops(make_context):
    a = make_context()
    b = make_context(queue_params=(10, "new"))
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=5)
    sub = yoton.SubChannel(b, "q")
    pub = yoton.PubChannel(a, "q")
    for i in range(30):
        pub.send(str(i))
    wait_for(lambda: sub.dropped == 20)
    assert sub.recv_all() == [str(i) for i in range(10)]  # 'new' keeps the oldest


def test_sync_mode_slow_subscriber_loses_nothing(make_context):
    a = make_context()
    b = make_context(queue_params=(100, "old"))  # would drop without sync mode
    conn = b.bind("localhost:0")
    a.connect(f"localhost:{conn.port1}", timeout=5)
    sub = yoton.SubChannel(b, "sync")
    pub = yoton.PubChannel(a, "sync")
    wait_for(lambda: conn.is_connected)
    sub.set_sync_mode(True)
    wait_for(lambda: pub._sync_subscribers)  # the publisher heard of it
    n = 1000

    def produce():
        for i in range(n):
            pub.send(str(i))

    producer = threading.Thread(target=produce)
    producer.start()
    got = []
    while len(got) < n:
        message = sub.recv(10)
        assert message, "timed out waiting for messages"
        got.append(message)
        if len(got) % 50 == 0:
            threading.Event().wait(0.01)  # a slow consumer
    producer.join(10)
    assert got == [str(i) for i in range(n)]
    assert sub.dropped == 0


def test_many_threads_on_one_context_lose_and_reorder_nothing(make_context):
    a = make_context()
    b = make_context(queue_params=(100000, "old"))  # room for all: no drops
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=5)
    n_threads, n_messages = 8, 10000
    subs = yoton.SubChannel(b, "conc", yoton.OBJECT)
    pub = yoton.PubChannel(a, "conc", yoton.OBJECT)

    def produce(t):
        for i in range(n_messages):
            pub.send((t, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    last = [-1] * n_threads
    total = 0
    while total < n_threads * n_messages:
        message = subs.recv(20)
        assert message is not None, f"only {total} messages arrived"
        t, i = message
        assert i == last[t] + 1, "lost or reordered"
        last[t] = i
        total += 1
    for thread in threads:
        thread.join(10)
    assert subs.dropped == 0


def test_flush_and_close(make_context):
    a, b = make_context(), make_context()
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=5)
    wait_for(lambda: conn.is_connected)
    pub = yoton.PubChannel(a, "f")
    sub = yoton.SubChannel(b, "f")
    for _ in range(100):
        pub.send("x" * 1000)
    assert a.flush(5)
    wait_for(lambda: sub.pending == 100)
    a.close()
    assert a.connection_count == 0 and pub.closed
    wait_for(lambda: b.connection_count == 0)


def test_state_received_from_elsewhere_is_not_resent(pair):
    # Only the owner of a state resends it to joining contexts; a copy resent
    # by another context could overwrite a newer state.
    a, b = pair
    owner, copy = yoton.StateChannel(a, "st"), yoton.StateChannel(b, "st")
    owner.send("Busy")
    wait_for(lambda: copy.recv() == "Busy")
    sent = []
    copy._send = lambda data, *args, **kwargs: sent.append(data)
    copy.send_last()
    assert sent == []
    owner_sent = []
    real_send = owner._send
    owner._send = lambda data, *a2, **kw: (
        owner_sent.append(data) or real_send(data, *a2, **kw)
    )
    owner.send_last()
    assert owner_sent == [b"Busy"]


def test_addressed_packages_go_only_towards_their_target(make_context):
    hub = make_context()
    listener = hub.listen("localhost:0")
    target, bystander = make_context(), make_context()
    target_sub = yoton.SubChannel(target, "direct")
    bystander_sub = yoton.SubChannel(bystander, "direct")
    for ctx in (target, bystander):
        ctx.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: hub.connection_count == 2)
    yoton.PubChannel(target, "hello").send("hi")  # the hub learns the route
    wait_for(lambda: target.id in hub._routes)
    pub = yoton.PubChannel(hub, "direct")
    pub._send(b"for you", dest_id=target.id)
    assert target_sub.recv(5) == "for you"
    pub.send("for all")
    assert bystander_sub.recv(5) == "for all"  # the addressed one never came here


def test_large_messages_nobody_reads_do_not_stall_the_connection(pair):
    # A large message waits for its consumer before the next large one is read,
    # but only briefly: a channel nobody reads cannot stall the connection.
    a, b = pair
    unread = yoton.SubChannel(b, "unread", yoton.BINARY)
    other = yoton.SubChannel(b, "other")
    big = yoton.PubChannel(a, "unread", yoton.BINARY)
    for _ in range(3):
        big.send(bytes(2 << 20))
    yoton.PubChannel(a, "other").send("still flowing")
    assert other.recv(20) == "still flowing"
    assert unread.pending == 3
    assert [len(m) for m in unread.recv_all()] == [2 << 20] * 3


def test_sync_mode_switched_while_messages_wait(pair):
    """Sync mode reports what was consumed; switching it on and off with
    messages queued loses and garbles none of them (recv, iteration, recv_all)."""
    a, b = pair
    pub = yoton.PubChannel(a, "switch", yoton.BINARY)
    sub = yoton.SubChannel(b, "switch", yoton.BINARY)
    expected = []
    # Few enough that sync mode never reports the queue full (the publisher
    # would then wait for it).
    per_mode = pubsub.SYNC_HWM // 4 - 1
    for mode in (False, True, False, True):
        for i in range(per_mode):
            message = b"%d-%d" % (mode, i)
            pub.send(message)
            expected.append(message)
        wait_for(lambda: sub.pending == len(expected))
        sub.set_sync_mode(not mode)
    got = [sub.recv(5) for _ in range(per_mode)]  # recv, iteration and recv_all
    got += [next(sub) for _ in range(per_mode)]
    got += sub.recv_all()
    assert got == expected
