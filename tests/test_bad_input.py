"""Misbehaving peers (raw sockets) close only their own connection, with a reason."""

import resource
import socket
import struct
import threading
import time

import pytest
from conftest import wait_for

import yoton
from yoton import wire
from yoton.addresses import slot_hash
from yoton.receiver import STOP_CLOSED_FROM_THERE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def host(make_context):
    """A context listening for many peers, plus one healthy client."""
    ctx = make_context(max_message_size=1 << 20)
    listener = ctx.listen("localhost:0")
    healthy = make_context()
    healthy.connect(f"localhost:{listener.port}", timeout=5)
    wait_for(lambda: ctx.connection_count == 1)
    return ctx, listener, healthy


def still_serving(ctx, healthy):
    sub = yoton.SubChannel(healthy, f"probe{time.monotonic_ns()}")
    yoton.PubChannel(ctx, sub.slot_incoming.split(".")[0]).send("alive")
    return sub.recv(5) == "alive"


def raw_peer(port, greet=True):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if greet:
        sock.sendall(wire.format_greeting(0x1234, 99))
        line = b""
        while not line.endswith(b"\r\n"):
            line += sock.recv(1)
        assert line.startswith(b"YOTON!")
    return sock


def closed_reasons(ctx):
    reasons = []

    def on_closed(conn, reason):
        reasons.append(reason)

    return reasons, on_closed


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_garbage_greeting_is_refused(host):
    ctx, listener, healthy = host
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert sock.recv(100).startswith(b"ERROR: ")
    wait_for(lambda: listener.refused_count == 1)
    assert still_serving(ctx, healthy)


def test_overlong_greeting_is_refused(host):
    ctx, listener, healthy = host
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    sock.sendall(b"YOTON!" + b"a" * 5000)
    assert b"too long" in sock.recv(100)
    wait_for(lambda: listener.refused_count == 1)
    assert still_serving(ctx, healthy)


def test_silent_peer_times_out(host, monkeypatch):
    ctx, listener, healthy = host
    monkeypatch.setattr(wire, "HANDSHAKE_TIMEOUT", 0.5)
    import yoton.hosting

    monkeypatch.setattr(
        yoton.hosting,
        "run_handshake",
        lambda sock, hs: yoton.connection.run_handshake(sock, hs, 0.5),
    )
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    wait_for(lambda: listener.refused_count == 1)
    assert sock.recv(100).startswith(b"ERROR: handshake timed out")
    assert still_serving(ctx, healthy)


def _connection_from(ctx, pid):
    wait_for(lambda: any(c.pid2 == pid for c in ctx.connections))
    return next(c for c in ctx.connections if c.pid2 == pid)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"XXXXXXXX" + b"\0" * 48, "control word"),
        (wire.encode_header(9, 1, 1, 0, 0, 1 << 40), "limit"),
        (wire.encode_header(9, 1, 1, 0, 0, 100) + b"only part", "middle of a message"),
    ],
    ids=["bad-control-word", "forged-length", "closed-mid-payload"],
)
def test_bad_frames_close_that_connection_only(host, payload, reason):
    ctx, listener, healthy = host
    sock = raw_peer(listener.port)
    conn = _connection_from(ctx, 99)
    reasons = []
    conn.closed.bind(lambda c, r: reasons.append(r))
    before = cpu_seconds()
    sock.sendall(payload)
    if reason == "middle of a message":
        sock.shutdown(socket.SHUT_WR)
    wait_for(lambda: not conn.is_alive)
    assert reason in conn.close_reason
    wait_for(lambda: yoton.process_events(False) or reasons)
    assert reason in reasons[0]
    # Nothing spins afterwards and the forged length was never allocated.
    time.sleep(0.5)
    assert cpu_seconds() - before < 0.4
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1 << 20  # KiB
    assert still_serving(ctx, healthy)
    sock.close()


def test_peer_vanishing_between_frames_is_a_clean_close(host):
    ctx, listener, healthy = host
    sock = raw_peer(listener.port)
    conn = _connection_from(ctx, 99)
    package = wire.Package(b"hello", 12345, 0x1234, 1)
    sock.sendall(package.header() + package.data)
    sock.close()
    wait_for(lambda: not conn.is_alive)
    # EOF, or a reset when our heartbeats were still unread on its side.
    assert "dropped" in conn.close_reason or "reset" in conn.close_reason
    assert still_serving(ctx, healthy)


def test_heartbeats_are_sent_to_a_raw_peer(host):
    ctx, listener, healthy = host
    sock = raw_peer(listener.port)
    sock.settimeout(5)
    data = b""
    while len(data) < wire.HEADER_SIZE:
        data += sock.recv(wire.HEADER_SIZE - len(data))
    fields = struct.unpack("<7Q", data)
    assert fields[0] == wire.CONTROL_WORD and fields[1] == wire.SLOT_DUMMY
    sock.close()


def test_a_peer_that_stops_reading_blocks_nobody(host, monkeypatch):
    # A peer that completes the greeting and then never reads (like a stopped
    # process) delays local senders for CONGESTION_TIMEOUT at most; after that
    # what it misses is dropped and counted, and the healthy peer gets all.
    import yoton.connection as connection_module
    import yoton.context as context_module

    monkeypatch.setattr(connection_module, "CONGESTION_TIMEOUT", 0.5)
    monkeypatch.setattr(connection_module, "HIGH_WATER_BYTES", 1 << 20)
    monkeypatch.setattr(context_module, "HIGH_WATER_BYTES", 1 << 20)
    monkeypatch.setattr(connection_module, "FORWARD_LIMIT_BYTES", 4 << 20)
    ctx, listener, healthy = host
    stuck_sock = raw_peer(listener.port)  # never reads from here on
    stuck = _connection_from(ctx, 99)
    sub = yoton.SubChannel(healthy, "flood", yoton.BINARY)
    pub = yoton.PubChannel(ctx, "flood", yoton.BINARY)
    chunk = bytes(100_000)
    received = []

    def read():
        while len(received) < 300:
            message = sub.recv(10)
            if not message:
                return
            received.append(message)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(300):  # 30 MB, far more than the stuck peer's buffers
        pub.send(chunk)
    reader.join(60)
    assert len(received) == 300
    assert stuck.dropped > 0
    assert stuck._out_bytes <= (4 << 20) + len(chunk) + 1024
    stuck_sock.close()


def test_repeated_packages_are_delivered_once(make_context):
    """A peer that sends a package again (same source and sequence number),
    alone or inside a run of others, has it delivered once."""
    ctx = make_context()
    conn = ctx.bind("localhost:0")
    sub = yoton.SubChannel(ctx, "dup", yoton.BINARY)
    sock = raw_peer(conn.port1)
    wait_for(lambda: conn.is_connected)

    def frame(seq, data):
        return wire.encode_header(sub._slot_in_h, 0x1234, seq, 0, 0, len(data)) + data

    def received(n):
        got = [sub.recv(5) for _ in range(n)]
        assert sub.recv(0.3) == b""  # and nothing more
        return got

    sock.sendall(frame(1, b"a"))  # alone: the short way
    assert received(1) == [b"a"]
    sock.sendall(frame(1, b"a"))
    sock.sendall(frame(2, b"b"))
    assert received(1) == [b"b"]
    # In one batch: a run of new ones, then a run that repeats some of them.
    batch = [frame(seq, b"%d" % seq) for seq in (3, 4, 5, 4, 5, 6)]
    sock.sendall(b"".join(batch))
    assert received(4) == [b"3", b"4", b"5", b"6"]
    sock.close()


def test_a_large_payload_that_arrives_slowly_is_received_whole(make_context):
    """A large payload that stalls longer than the receive timeout (the
    connection timeout, 0.5 s), right after its header and again halfway, is
    waited for and delivered whole, with the next package after it."""
    ctx = make_context()
    conn = ctx.bind("localhost:0")
    sub = yoton.SubChannel(ctx, "slow", yoton.BINARY)
    sock = raw_peer(conn.port1)
    wait_for(lambda: conn.is_connected)
    payload = bytes(range(256)) * 2400  # 600 KiB: received into its own buffer

    def header(seq):
        return wire.encode_header(sub._slot_in_h, 0x1234, seq, 0, 0, len(payload))

    half = len(payload) // 2
    for pieces in ([header(1), payload], [header(2) + payload[:half], payload[half:]]):
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.7)
        assert sub.recv(5) == payload
        assert conn.is_alive
    small = b"after"
    sock.sendall(wire.encode_header(sub._slot_in_h, 0x1234, 3, 0, 0, 5) + small)
    assert sub.recv(5) == small
    sock.close()


def test_heartbeats_and_close_inside_a_batch_of_packages(make_context):
    """Connection-level frames among data frames of one read (and across the
    slices a long batch is delivered in) are taken out; the data around them
    arrives complete and in order, and a close ends the connection there."""
    ctx = make_context()
    conn = ctx.bind("localhost:0")
    sub = yoton.SubChannel(ctx, "batch", yoton.BINARY)
    reasons, on_closed = closed_reasons(ctx)
    conn.closed.bind(on_closed)
    sock = raw_peer(conn.port1)
    wait_for(lambda: conn.is_connected)
    seq = 0

    def frames(count):
        nonlocal seq
        out = []
        for _ in range(count):
            seq += 1
            data = b"%d" % seq
            out.append(wire.encode_header(sub._slot_in_h, 0x77, seq, 0, 0, len(data)))
            out.append(data)
        return out

    batch = frames(2) + [wire.HEARTBEAT_FRAME]
    batch += frames(3000) + [wire.HEARTBEAT_FRAME] + frames(3000)  # > 1 read
    sock.sendall(b"".join(batch))
    got = [sub.recv(5) for _ in range(6002)]
    assert got == [b"%d" % i for i in range(1, 6003)]
    sock.sendall(b"".join(frames(1) + [wire.CLOSE_FRAME] + frames(1)))
    assert sub.recv(5) == b"6003"
    wait_for(lambda: yoton.process_events(False) or reasons)
    assert reasons == [STOP_CLOSED_FROM_THERE]
    assert sub.recv(0.3) == b""  # what came after the close is not delivered


def test_runs_of_a_slice_of_frames():
    """A long batch is delivered in slices; each slice's runs start at 0 and
    keep the run boundaries that fall inside it."""
    from yoton.receiver import _slice_runs

    runs = [0, 2, 3, 3003, 3004]
    assert _slice_runs(runs, 0, 2048) == [0, 2, 3]
    assert _slice_runs(runs, 2048, 4096) == [0, 955, 956]
    assert _slice_runs(runs, 4096, 6144) == [0]
    assert _slice_runs(runs, 3003, 3004) == [0]


def test_a_peer_that_stops_reading_gets_every_inline_frame_whole(
    make_context, monkeypatch
):
    """Sparse frames are written by their sender, never blocking: when the
    socket of a peer that stopped reading takes only part of one, the sending
    thread writes the rest once the peer reads again, and every frame arrives
    whole and in order."""
    ctx = make_context()
    conn = ctx.bind("localhost:0")
    sock = raw_peer(conn.port1)
    wait_for(lambda: conn.is_connected)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    partial = threading.Event()
    release = yoton.TcpConnection._release_socket

    def spy(self, taken, written, inline):
        if self is conn and written and 0 <= written[0] < sum(map(len, taken)):
            partial.set()  # the socket took less than the frame
        release(self, taken, written, inline)

    monkeypatch.setattr(yoton.TcpConnection, "_release_socket", spy)
    slot = slot_hash("full.bin.pub-sub")
    payloads = [bytes([i % 251]) * 16000 for i in range(300)]
    received = bytearray()

    def read_later():
        partial.wait(30)  # not reading until a frame was cut by the socket
        sock.settimeout(30)
        while len(received) < 300 * (wire.HEADER_SIZE + 16000):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_later, daemon=True)
    reader.start()
    for payload in payloads:
        if not partial.is_set():  # the socket is free: this one goes inline
            wait_for(lambda: not conn._out and not conn._writing)
        conn._received_since_send = True  # sparse: its sender writes it
        ctx._send_frame(slot, payload)
    reader.join(60)
    assert partial.is_set()
    packages, _, _ = wire.parse_frames(bytes(received), 0, len(received))
    assert [p.data for p in packages if p.slot == slot] == payloads
