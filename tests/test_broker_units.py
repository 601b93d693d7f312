"""Unit tests of the broker's pure parts: files, status, history, commands."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time

import pytest

import yoton
from broker.__main__ import build_parser
from broker.channels import BrokerPubChannel, BrokerStateChannel, Injector
from broker.commands import (
    Command,
    Step,
    parse_command,
    termination_schedule,
)
from broker.connfile import (
    connection_info,
    default_connection_file,
    read_connection_file,
    remove_connection_file,
    runtime_dir,
    write_connection_file,
)
from broker.core import Broker, BrokerError, advertised_address, parse_listen_address
from broker.history import History
from broker.kernel_process import PROJECT_ROOT, build_environment, same_interpreter
from broker.status import DEAD, STALLED, STARTING, StatusTracker, describe_exit

# -- connection files ----------------------------------------------------------------


def test_runtime_dir_prefers_xdg(tmp_path):
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "yoton"
    fallback = runtime_dir({})
    assert str(fallback) == os.path.expanduser("~/.local/share/yoton/runtime")
    path = default_connection_file(1234, {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert path == tmp_path / "yoton" / "broker-1234.json"


def test_write_connection_file_is_private_and_complete(tmp_path):
    path = tmp_path / "new" / "dir" / "broker.json"
    info = connection_info("127.0.0.1:5555", "ab" * 32, 42, python="py")
    write_connection_file(path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = read_connection_file(path)
    assert data == {
        "address": "127.0.0.1:5555",
        "key": "ab" * 32,
        "pid": 42,
        "python": "py",
    }
    assert [p.name for p in path.parent.iterdir()] == ["broker.json"]  # no temp left


def test_write_connection_file_replaces_and_tightens_mode(tmp_path):
    path = tmp_path / "broker.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_connection_file(path, connection_info("h:1", None, 1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["key"] is None


def test_write_connection_file_never_shows_half_a_file(tmp_path):
    path = tmp_path / "broker.json"
    big = connection_info("h:1", "k", 1, padding="x" * 200_000)
    small = connection_info("h:1", "k", 1)
    stop = threading.Event()
    seen_bad = []

    def reader():
        while not stop.is_set():
            try:
                read_connection_file(path)
            except FileNotFoundError:
                pass
            except ValueError as err:  # JSONDecodeError is a ValueError
                seen_bad.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            write_connection_file(path, big if i % 2 else small)
    finally:
        stop.set()
        thread.join()
    assert not seen_bad


def test_read_connection_file_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError):
        read_connection_file(path)


def test_remove_connection_file_only_removes_its_own(tmp_path):
    path = tmp_path / "broker.json"
    write_connection_file(path, connection_info("h:1", "k", 7))
    assert not remove_connection_file(path, 8)
    assert path.exists()
    assert remove_connection_file(path, 7)
    assert not path.exists()
    assert not remove_connection_file(path, 7)


# -- addresses and command line ------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("localhost", ("127.0.0.1", 0)),
        ("localhost:0", ("127.0.0.1", 0)),
        ("127.0.0.1:4567", ("127.0.0.1", 4567)),
        (":4567", ("127.0.0.1", 4567)),
        ("0.0.0.0", ("0.0.0.0", 0)),
        ("0.0.0.0:", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen_address(text, expected):
    assert parse_listen_address(text) == expected


def test_parse_listen_address_rejects_bad_port():
    with pytest.raises(BrokerError):
        parse_listen_address("localhost:99999")


def test_advertised_address():
    assert advertised_address("127.0.0.1", 5) == "127.0.0.1:5"
    assert advertised_address("0.0.0.0", 5).endswith(":5")
    assert not advertised_address("0.0.0.0", 5).startswith("0.0.0.0")


def test_insecure_needs_loopback(tmp_path):
    with pytest.raises(BrokerError, match="loopback"):
        Broker("0.0.0.0:0", insecure=True, connection_file=tmp_path / "c.json")
    assert (
        Broker("localhost", insecure=True, connection_file=tmp_path / "c").key is None
    )


def test_key_is_random_hex(tmp_path):
    one = Broker(connection_file=tmp_path / "a.json").key
    two = Broker(connection_file=tmp_path / "b.json").key
    assert one != two
    assert len(one) == 64 and bytes.fromhex(one)


def test_command_line_defaults():
    args = build_parser().parse_args([])
    assert args.listen == "localhost"
    assert args.connection_file is None and args.python is None and not args.insecure
    args = build_parser().parse_args(
        ["--listen", "h:1", "--connection-file", "f", "--python", "p", "--insecure"]
    )
    assert (args.listen, args.connection_file, args.python, args.insecure) == (
        "h:1",
        "f",
        "p",
        True,
    )


# -- kernel launch -------------------------------------------------------------------


def test_kernel_environment_matches_the_kernel(monkeypatch):
    from kernel.__main__ import read_launch_environment

    key = os.urandom(32)
    env = build_environment("127.0.0.1:9", key, sys.executable, {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert "PYTHONPATH" not in env  # the same interpreter finds the packages
    assert read_launch_environment(dict(env)) == ("127.0.0.1:9", key)


def test_other_interpreter_gets_pythonpath(tmp_path):
    other = tmp_path / "python"
    other.write_text("#!/bin/sh\n")
    assert not same_interpreter(str(other))
    assert same_interpreter(sys.executable)
    env = build_environment("a:1", b"k", str(other), {"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"] == f"{PROJECT_ROOT}:/x"


# -- status --------------------------------------------------------------------------


def test_status_tracker_sequence():
    tracker = StatusTracker()
    assert tracker.current == DEAD
    assert tracker.launched() == STARTING
    assert tracker.kernel_said("Ready") == "Ready"
    assert tracker.kernel_said("Busy") == "Busy"
    assert tracker.set_stalled(True) == STALLED
    # Statuses published while stalled are remembered, Stalled stays visible.
    assert tracker.kernel_said("Ready") == STALLED
    assert tracker.set_stalled(False) == "Ready"
    assert tracker.exited() == DEAD
    assert tracker.set_stalled(True) == DEAD  # a dead kernel does not stall
    assert tracker.kernel_said("Busy") == DEAD  # nor speak
    assert tracker.launched() == STARTING


def test_status_tracker_ignores_broker_states_from_kernel():
    tracker = StatusTracker()
    tracker.launched()
    tracker.kernel_said("Busy")
    assert tracker.kernel_said(STALLED) == "Busy"
    assert tracker.kernel_said(DEAD) == "Busy"
    assert tracker.kernel_said("") == "Busy"
    assert tracker.kernel_said(STARTING) == "Busy"  # a stale resend


def test_status_tracker_accepts_starting_first():
    tracker = StatusTracker()
    tracker.launched()
    assert tracker.kernel_said(STARTING) == STARTING
    assert tracker.kernel_said("Ready") == "Ready"


@pytest.mark.parametrize(
    "code, requested, text",
    [
        (3, False, "Kernel died (exit code 3)"),
        (0, False, "Kernel exited (exit code 0)"),
        (-signal.SIGKILL, False, "Kernel died (SIGKILL)"),
        (-signal.SIGSEGV, False, "Kernel died (SIGSEGV)"),
        (-signal.SIGKILL, True, "Kernel stopped (SIGKILL)"),
        (1, True, "Kernel stopped (exit code 1)"),
        (-250, False, "Kernel died (signal 250)"),
    ],
)
def test_describe_exit(code, requested, text):
    assert describe_exit(code, requested) == text


# -- commands ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, command",
    [
        ("INT", Command.INT),
        ("int\n", Command.INT),
        (" Term ", Command.TERM),
        ("KILL", Command.KILL),
        ("restart", Command.RESTART),
        ("SHUTDOWN", Command.SHUTDOWN),
        ("", None),
        ("INTERRUPT", None),
        ("print(1)", None),
        (None, None),
    ],
)
def test_parse_command(text, command):
    assert parse_command(text) is command


def test_termination_schedule_escalates():
    schedule = termination_schedule(1.5, 2.0)
    assert [step for _, step in schedule] == [Step.CLOSE, Step.INTERRUPT, Step.KILL]
    assert [offset for offset, _ in schedule] == [0.0, 1.5, 3.5]


# -- history -------------------------------------------------------------------------


def test_history_keeps_last_items():
    history = History(max_items=3, max_chars=1000)
    for i in range(5):
        history.append("strm-out", f"line {i}\n")
    assert history.snapshot() == [
        ["strm-out", "line 2\n"],
        ["strm-out", "line 3\n"],
        ["strm-out", "line 4\n"],
    ]


def test_history_bounds_characters():
    history = History(max_items=100, max_chars=10)
    history.append("strm-out", "abcdef")
    history.append("strm-err", "ghijkl")
    assert history.snapshot() == [["strm-err", "ghijkl"]]
    assert history.chars == 6
    history.append("strm-raw", "0123456789XYZ")  # longer than the bound: its end
    assert history.snapshot() == [["strm-raw", "3456789XYZ"]]
    history.append("strm-raw", "")
    assert len(history) == 1
    history.clear()
    assert history.snapshot() == [] and history.chars == 0


def test_history_thread_safe():
    history = History(max_items=50, max_chars=10_000)

    def writer(name):
        for i in range(2000):
            history.append(name, f"{i}\n")

    threads = [threading.Thread(target=writer, args=(f"s{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history) == 50
    assert history.chars == sum(len(t) for _, t in history.snapshot())


# -- the broker's channel classes (in-process yoton) ---------------------------------


@pytest.fixture
def linked_contexts():
    """A "broker" context with two "client" contexts connected to it."""
    hub = yoton.Context()
    listener = hub.listen("127.0.0.1:0", key="k")
    one, two = yoton.Context(), yoton.Context()
    one.connect(f"127.0.0.1:{listener.port}", key="k", timeout=5)
    two.connect(f"127.0.0.1:{listener.port}", key="k", timeout=5)
    # connect() returns once the client side is done; wait for the hub's side.
    deadline = time.monotonic() + 10
    while hub.connection_count < 2 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    yield hub, one, two
    for ctx in (one, two, hub):
        ctx.close()


def test_injector_routes_like_a_forwarded_package(linked_contexts):
    hub, one, two = linked_contexts
    sub_one = yoton.SubChannel(one, "strm-raw")
    sub_two = yoton.SubChannel(two, "strm-raw")
    injector = Injector(hub, BrokerPubChannel(hub, "strm-raw"))
    for i in range(3):
        injector.send(f"raw {i}\n")
    assert [sub_one.recv(10) for _ in range(3)] == ["raw 0\n", "raw 1\n", "raw 2\n"]
    assert [sub_two.recv(10) for _ in range(3)] == ["raw 0\n", "raw 1\n", "raw 2\n"]
    # ``via`` is skipped, as the connection a package came from.
    via = next(c for c in hub.connections if c.id2 == one.id)
    injector.send("not for one\n", via)
    assert sub_two.recv(10) == "not for one\n"
    injector.send("")  # empty messages are not sent
    two_marker = "last\n"
    injector.send(two_marker)
    assert sub_two.recv(10) == two_marker
    assert sub_one.recv(10) == two_marker  # "not for one" never arrived


def test_broker_pub_channel_never_waits_for_a_client_that_reads_nothing(monkeypatch):
    """A client that stops reading must not stop the broker: its publishing
    channel queues past the high-water mark without waiting, for posted
    (small) and directly framed (large) messages alike."""
    import socket

    from yoton import wire
    from yoton.connection import HIGH_WATER_BYTES, TcpConnection, run_handshake

    def never_wait(self):
        raise AssertionError("a broker channel waited for a slow peer")

    monkeypatch.setattr(TcpConnection, "_wait_writable", never_wait)
    hub = yoton.Context()
    stalled = None
    try:
        connection = hub.bind("localhost:0")
        stalled = socket.create_connection(("127.0.0.1", connection.port1), timeout=10)
        # Greet like a yoton peer, then read nothing.
        run_handshake(stalled, wire.Handshake(False, 0x5EED, os.getpid(), None))
        deadline = time.monotonic() + 10
        while not connection.is_connected and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        small = BrokerPubChannel(hub, "strm-small", yoton.BINARY)
        large = BrokerPubChannel(hub, "strm-large", yoton.BINARY)
        for _ in range(3000):
            small.send(bytes(10_000))
        assert connection.pending_bytes > HIGH_WATER_BYTES  # it would have waited
        for _ in range(40):
            large.send(bytes(300_000))
        assert connection.pending_bytes > HIGH_WATER_BYTES + 10_000_000
    finally:
        hub.close()
        if stalled is not None:
            stalled.close()


class _QuietState(yoton.StateChannel):
    """A client's state channel that does not resend when a context joins."""

    def send_last(self):
        pass


def test_broker_state_channel_addresses_and_never_resends(linked_contexts):
    hub, one, two = linked_contexts
    received = []
    state = BrokerStateChannel(hub, "stat-x", on_received=received.extend)
    state_one = _QuietState(one, "stat-x")
    state_two = _QuietState(two, "stat-x")
    state.send_to("only one", [one.id])
    marker = yoton.PubChannel(hub, "marker")
    markers = [yoton.SubChannel(ctx, "marker") for ctx in (one, two)]
    marker.send("after")
    # Packages keep their order on a connection: the state arrived before this.
    assert [sub.recv(10) for sub in markers] == ["after", "after"]
    assert state_one.recv() == "only one"
    assert state_two.recv() == ""
    assert state.own_message == "only one"
    # A stale state from a client: reported (coalesced) through the event loop.
    state_two.send("stale")
    for _ in range(100):
        yoton.process_events(0.05)
        if received:
            break
    assert received == [(two.id, "stale")]
    assert state.recv() == "stale" and state.own_message == "only one"
    state.reassert()
    marker.send("after reassert")
    assert markers[1].recv(10) == "after reassert"
    assert state_two.recv() == "only one"
    state.send_last()  # a no-op: nothing is sent
    state.send("everyone")
    marker.send("after send")
    assert markers[1].recv(10) == "after send"
    assert state_two.recv() == "everyone"
