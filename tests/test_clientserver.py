"""Tests of yoton.clientserver: do_request and RequestServer over real local sockets."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from yoton.clientserver import NoServerError, RequestServer, do_request
from yoton.errors import YotonError

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 5.0


class UpperServer(RequestServer):
    """Replies with the request in upper case; 'boom' raises, 'slow' waits."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow_entered = threading.Event()
        self.release = threading.Event()
        self.requests: list[str] = []

    def handle_request(self, request: str) -> str:
        self.requests.append(request)
        if request == "boom":
            raise ZeroDivisionError("division by zero")
        if request == "notstr":
            return 42  # type: ignore[return-value]
        if request == "slow":
            self.slow_entered.set()
            self.release.wait(TIMEOUT)
            return "SLOW DONE"
        if request == "stop":
            self.stop()
            return "stopping"
        return request.upper()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + TIMEOUT
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def servers() -> Iterator[list[RequestServer]]:
    """Collect servers; stop and join them all at the end of the test."""
    started: list[RequestServer] = []
    yield started
    for server in started:
        server.stop()
    for server in started:
        if server.ident is not None:
            server.join(TIMEOUT)
            assert not server.is_alive()


def serve(servers: list[RequestServer], **kwargs) -> UpperServer:
    """Start an UpperServer on a free local port, registered for cleanup."""
    server = UpperServer("localhost:0", **kwargs)
    servers.append(server)
    server.start()
    return server


def free_port() -> int:
    """Return a port that nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_exchange(port: int, data: bytes, shutdown: bool = True) -> bytes:
    """Send bytes with a plain socket and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- basic behaviour ---------------------------------------------------------------


def test_round_trip(servers):
    server = serve(servers)
    assert server.port > 0
    assert server.address == f"127.0.0.1:{server.port}"
    assert do_request(f"localhost:{server.port}", "hello", TIMEOUT) == "HELLO"
    assert do_request(server.address, "héllo ✓", TIMEOUT) == "HÉLLO ✓"
    # The CRLF terminator is framing: neither the handler nor the client sees it.
    assert do_request(server.address, "abc\r\n", TIMEOUT) == "ABC"
    assert server.requests == ["hello", "héllo ✓", "abc"]


def test_reply_may_contain_crlf(servers):
    server = serve(servers)
    assert do_request(server.address, "a\nb", TIMEOUT) == "A\nB"

    class Lines(RequestServer):
        def handle_request(self, request: str) -> str:
            return "line1\r\nline2\r\n"

    lines = Lines("localhost:0")
    servers.append(lines)
    lines.start()
    assert do_request(lines.address, "x", TIMEOUT) == "line1\r\nline2"


def test_default_handler_echoes(servers):
    server = RequestServer("localhost:0")
    servers.append(server)
    server.start()
    assert do_request(server.address, "stop", TIMEOUT) == "Requested: stop"
    assert server.is_alive()  # a client cannot stop the default server


def test_request_ends_at_first_crlf_without_shutdown(servers):
    # A telnet-like client that does not half-close still gets its reply.
    server = serve(servers)
    assert raw_exchange(server.port, b"telnet\r\n", shutdown=False) == b"TELNET\r\n"


def test_invalid_utf8_is_replaced(servers):
    server = serve(servers)
    assert raw_exchange(server.port, b"\xffok\r\n") == "\ufffdOK\r\n".encode()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def answer_badly() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                conn.recv(100)
                conn.sendall(b"\xfeabc\r\n")

        thread = threading.Thread(target=answer_badly)
        thread.start()
        try:
            assert do_request(f"localhost:{port}", "x", TIMEOUT) == "\ufffdabc"
        finally:
            thread.join(TIMEOUT)


def test_request_must_be_str():
    with pytest.raises(TypeError):
        do_request("localhost:1", b"bytes")  # type: ignore[arg-type]


def test_connection_refused_is_a_clear_error():
    port = free_port()
    with pytest.raises(NoServerError) as info:
        do_request(f"localhost:{port}", "hi", TIMEOUT)
    err = info.value
    assert isinstance(err, YotonError)
    assert isinstance(err, ConnectionRefusedError)
    assert isinstance(err, RuntimeError)  # what yoton 2.2 raised
    assert str(port) in str(err)


# -- serving modes -----------------------------------------------------------------


def test_thread_mode_serves_several_clients(servers):
    server = serve(servers)
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda i: do_request(server.address, f"c{i}", TIMEOUT), range(40))
        )
    assert replies == [f"C{i}" for i in range(40)]


def test_run_serves_in_calling_thread_until_handler_stops_it():
    server = UpperServer("localhost:0")
    replies: list[str | None] = []

    def client() -> None:
        replies.append(do_request(server.address, "one", TIMEOUT))
        replies.append(do_request(server.address, "stop", TIMEOUT))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        server.run()  # returns once the "stop" request has been handled
    finally:
        server.stop()
        thread.join(TIMEOUT)
    assert replies == ["ONE", "stopping"]
    with pytest.raises(NoServerError):
        do_request(server.address, "again", TIMEOUT)


def test_async_slow_request_does_not_block_fast_one(servers):
    server = serve(servers, async_val=True)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(do_request, server.address, "slow", TIMEOUT)
        assert server.slow_entered.wait(TIMEOUT)
        start = time.monotonic()
        assert do_request(server.address, "fast", TIMEOUT) == "FAST"
        assert time.monotonic() - start < 1.0
        assert not slow.done()
        server.release.set()
        assert slow.result(TIMEOUT) == "SLOW DONE"


def test_sync_mode_handles_one_connection_at_a_time(servers):
    server = serve(servers)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(do_request, server.address, "slow", TIMEOUT)
        assert server.slow_entered.wait(TIMEOUT)
        assert do_request(server.address, "fast", 0.3) is None
        server.release.set()
        assert slow.result(TIMEOUT) == "SLOW DONE"


def test_stop_is_prompt_and_frees_the_port(servers):
    server = serve(servers)
    assert do_request(server.address, "x", TIMEOUT) == "X"
    start = time.monotonic()
    server.stop()
    server.join(TIMEOUT)
    assert not server.is_alive()
    assert time.monotonic() - start < 0.5
    server.stop()  # idempotent
    again = UpperServer(f"localhost:{server.port}")  # the port is free again
    again.stop()


def test_stop_before_start_closes_the_socket():
    server = UpperServer("localhost:0")
    server.stop()
    server.run()  # returns at once
    with pytest.raises(NoServerError):
        do_request(server.address, "x", TIMEOUT)


def test_bind_conflict_raises():
    server = UpperServer("localhost:0")
    try:
        with pytest.raises(OSError):
            UpperServer(server.address)
    finally:
        server.stop()


# -- timeouts and failures ---------------------------------------------------------


def test_server_that_never_answers_gives_none():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # connections are queued, never accepted nor answered
        address = f"localhost:{listener.getsockname()[1]}"
        start = time.monotonic()
        assert do_request(address, "anyone?", 0.3) is None
        assert 0.25 < time.monotonic() - start < 2.0


def test_handler_that_never_answers_gives_none(servers):
    server = serve(servers, async_val=True)
    try:
        assert do_request(server.address, "slow", 0.3) is None
    finally:
        server.release.set()
    assert do_request(server.address, "after", TIMEOUT) == "AFTER"


def test_handler_exception_replies_error_and_keeps_serving(servers, caplog):
    server = serve(servers)
    with caplog.at_level(logging.ERROR, logger="yoton.clientserver"):
        reply = do_request(server.address, "boom", TIMEOUT)
    assert reply == "Error: ZeroDivisionError: division by zero"
    assert "handle_request() raised" in caplog.text
    assert do_request(server.address, "notstr", TIMEOUT).startswith("Error: ")
    assert do_request(server.address, "still here", TIMEOUT) == "STILL HERE"


def test_silent_client_cannot_block_the_server(servers):
    server = serve(servers, request_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as mute:
        time.sleep(0.05)  # let the server accept the mute connection first
        start = time.monotonic()
        assert do_request(server.address, "next", TIMEOUT) == "NEXT"
        assert time.monotonic() - start < 2.0
        assert mute.recv(1000).startswith(b"Error: request not complete")


def test_request_too_large(servers):
    server = serve(servers, max_request_size=1000)
    assert do_request(server.address, "a" * 1000, TIMEOUT) == "A" * 1000
    reply = do_request(server.address, "a" * 5000, TIMEOUT)
    assert reply == "Error: request larger than 1000 bytes."
    assert do_request(server.address, "ok", TIMEOUT) == "OK"


def test_default_request_limit_is_one_mib(servers):
    server = serve(servers)
    reply = do_request(server.address, "a" * (3 * 1024 * 1024), TIMEOUT)
    assert reply == "Error: request larger than 1048576 bytes."


# -- compatibility with yoton 2.2 (the reference, shipped inside pyzo) -------------


def _pyzo_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("pyzo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)))
    return path if (path / "yoton" / "clientserver.py").is_file() else None


PYZO_DIR = _pyzo_dir()
needs_pyzo = pytest.mark.skipif(
    PYZO_DIR is None,
    reason="pyzo (which ships the reference yoton 2.2) is not installed",
)

_PRELUDE = f"""
import sys
sys.path.insert(0, {str(PYZO_DIR)!r})
import yoton
assert yoton.__version__.startswith("2."), yoton.__file__
"""

_OLD_SERVER = (
    _PRELUDE
    + """
class Server(yoton.RequestServer):
    def handle_request(self, request):
        if request.strip() == "lines":
            return "line1\\r\\nline2"
        return "2.2 got " + repr(request)

server = Server("localhost:0")
server._bsd_socket.listen(5)  # 2.2 only listens once its thread runs
server.start()
print(server._bsd_socket.getsockname()[1], flush=True)
sys.stdin.readline()  # serve until the test closes our stdin
server.stop()
server.join(5)
"""
)

_OLD_CLIENT = (
    _PRELUDE
    + """
import json
address, request, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
print(json.dumps(yoton.do_request(address, request, timeout)), flush=True)
"""
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # keep our yoton off the child's path
    return env


@needs_pyzo
def test_our_do_request_against_22_server(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _OLD_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_child_env(),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if not line else line
        address = f"localhost:{int(line)}"
        assert do_request(address, "hello", TIMEOUT) == "2.2 got 'hello\\r\\n'"
        assert do_request(address, "héllo", TIMEOUT) == "2.2 got 'héllo\\r\\n'"
        assert do_request(address, "lines", TIMEOUT) == "line1\r\nline2"
    finally:
        proc.stdin.close()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


def _old_do_request(tmp_path: Path, address: str, request: str) -> str | None:
    """Run yoton 2.2's do_request in a subprocess and return its result."""
    done = subprocess.run(
        [sys.executable, "-c", _OLD_CLIENT, address, request, str(TIMEOUT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_child_env(),
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_pyzo
@pytest.mark.parametrize("async_val", [False, True])
def test_22_do_request_against_our_server(servers, tmp_path, async_val):
    server = serve(servers, async_val=async_val)
    # 2.2 keeps the CRLF terminator in the text its do_request returns.
    assert _old_do_request(tmp_path, server.address, "hello") == "HELLO\r\n"
    assert _old_do_request(tmp_path, server.address, "héllo") == "HÉLLO\r\n"
    assert _old_do_request(tmp_path, server.address, "boom").startswith(
        "Error: ZeroDivisionError"
    )
    assert server.requests == ["hello", "héllo", "boom"]
