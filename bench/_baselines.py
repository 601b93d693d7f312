"""Benchmark harness, and the raw-socket and pyzmq baselines the benches compare to.

Every bench script runs in two roles. Run by hand it is the *parent*: it starts worker
subprocesses (each end of a link in its own process, on 127.0.0.1), collects their
results and prints one table row per implementation. Started with ``--worker SPEC`` it
is a *worker*: it runs one end of one implementation and talks to the parent with JSON
lines on stdout (``ready``, ``result``, ``error``). A worker stops when its stdin closes
(the parent asks it to, or died) and kills itself when its deadline passes.

Implementation names: ``raw`` (plain sockets, 4-byte length prefix), ``zmq`` (pyzmq,
unbounded high-water marks), ``zmq-default`` (pyzmq, default HWM: drops), ``yoton``
(this checkout) and ``ref`` (yoton 2.2 from the pyzo package, opt-in: it is slow).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import importlib
import importlib.util
import json
import os
import queue
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
LEN = struct.Struct("<I")
LEN_SEQ = struct.Struct("<IQ")
MIB = 1024 * 1024

# ---------------------------------------------------------------------------------
# Small helpers used by both roles
# ---------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Return median, p99 and max of round-trip times, in microseconds."""
    return {
        "median_us": statistics.median(seconds) * 1e6,
        "p99_us": percentile(seconds, 0.99) * 1e6,
        "max_us": max(seconds) * 1e6,
    }


def import_yoton(impl: str) -> Any:
    """Import yoton for a worker: this checkout for 'yoton', pyzo's 2.2 for 'ref'."""
    if impl == "ref":
        spec = importlib.util.find_spec("pyzo")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("pyzo (which ships yoton 2.2) is not installed")
        sys.path.insert(0, str(next(iter(spec.submodule_search_locations))))
    module = importlib.import_module("yoton")
    if not hasattr(module, "Context"):
        raise RuntimeError(f"{module.__file__} has no Context yet")
    return module


# ---------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------

#: Set when the parent closes our stdin: time to stop.
STDIN_CLOSED = threading.Event()
#: Lines the parent wrote to a worker's stdin (None once it closed).
COMMANDS: queue.Queue[str | None] = queue.Queue()
WorkerFn = Callable[..., None]


def emit(event: str, **data: Any) -> None:
    """Send one JSON event line to the parent."""
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def _watch_stdin() -> None:
    # Lines are commands (see time_calls); EOF on stdin means "stop", and the
    # worker exits hard if it does not stop by itself.
    try:
        for line in sys.stdin:
            COMMANDS.put(line.strip())
    except (OSError, ValueError):
        pass
    STDIN_CLOSED.set()
    COMMANDS.put(None)
    time.sleep(5.0)
    os._exit(4)


def _die_at_deadline() -> None:
    sys.stderr.write("worker deadline passed; exiting\n")
    sys.stderr.flush()
    os._exit(3)


def time_calls(
    call: Callable[[], object], count: int, warmup: int, bursts: int = 0
) -> None:
    """Time ``count`` calls of ``call`` after ``warmup`` untimed ones and emit
    ``result``; with ``bursts``, time that many runs of ``count`` calls, each
    when the parent writes a line (so implementations can take turns), and
    emit ``burst`` after each."""
    for _ in range(warmup):
        call()
    now = time.perf_counter
    for _ in range(bursts or 1):
        if bursts and COMMANDS.get() is None:
            return
        times = []
        for _ in range(count):
            t0 = now()
            call()
            times.append(now() - t0)
        emit("burst" if bursts else "result", **latency_summary(times), calls=count)


def wait_until_stopped() -> None:
    """Block a server-like worker until the parent closes its stdin."""
    STDIN_CLOSED.wait()


def worker_main(workers: dict[str, WorkerFn]) -> None:
    """Run the worker named by ``sys.argv[2]`` (a JSON spec) and exit."""
    spec = json.loads(sys.argv[2])
    timer = threading.Timer(spec["deadline"], _die_at_deadline)
    timer.daemon = True
    timer.start()
    threading.Thread(target=_watch_stdin, daemon=True).start()
    key = f"{spec['role']}:{spec['impl']}"
    try:
        fn = workers.get(key) or workers[f"{spec['role']}:*"]
    except KeyError:
        emit("error", error=f"no worker {key}")
        os._exit(1)
    try:
        fn(impl=spec["impl"], **spec["params"])
    except BaseException as exc:  # report everything, including SystemExit
        emit("error", error=f"{type(exc).__name__}: {exc}"[:300])
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: library threads (zmq, yoton) must not hang the exit.
    os._exit(0)


# ---------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A worker failed, timed out or reported an error."""


_CHILDREN: set[Child] = set()


class Child:
    """One worker subprocess, read through JSON event lines with timeouts."""

    def __init__(
        self,
        script: str,
        role: str,
        impl: str,
        params: dict[str, Any],
        deadline: float,
        wrapper: Sequence[str] = (),
    ) -> None:
        """``wrapper``: a command the worker runs under (callgrind, say)."""
        spec = {"role": role, "impl": impl, "params": params, "deadline": deadline}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.name = f"{role}:{impl}"
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, script, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        _CHILDREN.add(self)
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=15)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        """Process id of the worker."""
        return self.proc.pid

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # stray output from a library
            if isinstance(event, dict) and "event" in event:
                self._events.put(event)
        self._events.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        return " | ".join(line for line in self._stderr if line.strip())[-400:]

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for the event ``name``; raise BenchError on error, exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = self._events.get(timeout=max(0.0, left))
            except queue.Empty:
                raise BenchError(
                    f"{self.name}: no {name!r} within {timeout:g} s"
                ) from None
            if event is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
                time.sleep(0.05)  # let the stderr reader catch up
                raise BenchError(
                    f"{self.name} exited ({self.proc.returncode}) before {name!r}: "
                    f"{self.stderr_tail()}"
                )
            if event["event"] == "error":
                raise BenchError(f"{self.name}: {event.get('error')}")
            if event["event"] == name:
                return event

    def send(self, line: str) -> None:
        """Write one command line to the worker's stdin."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop (close its stdin), then kill it if it lingers."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        _CHILDREN.discard(self)


def kill_all_children() -> None:
    """Kill every worker still running (at exit or on a signal)."""
    for child in list(_CHILDREN):
        with contextlib.suppress(OSError):
            child.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            child.proc.wait(5)
        _CHILDREN.discard(child)


def _on_signal(signum: int, frame: Any) -> None:
    kill_all_children()
    sys.exit(128 + signum)


def make_parser(
    description: str, default_only: str, count: int | None
) -> argparse.ArgumentParser:
    """Return the common command-line parser of the bench scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--only",
        default=default_only,
        help=f"comma-separated implementations (default {default_only}; "
        "all: raw,zmq,zmq-default,yoton,ref)",
    )
    if count is not None:
        parser.add_argument("--count", type=int, default=None, help=f"default {count}")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per implementation"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="take turns this many times and print medians and ratios to zmq",
    )
    return parser


class Table:
    """Prints a fixed-width table one row at a time."""

    def __init__(self, columns: Sequence[tuple[str, int]]) -> None:
        self.columns = list(columns)
        header = "  ".join(title.rjust(width) for title, width in self.columns)
        print(header)
        print("-" * len(header), flush=True)

    def row(self, values: Sequence[Any]) -> None:
        """Print one row (values are formatted by str, right-aligned)."""
        cells = [str(v).rjust(w) for v, (_, w) in zip(values, self.columns)]
        print("  ".join(cells), flush=True)

    def error_row(self, impl: str, exc: BaseException) -> None:
        """Print a row saying this implementation could not be measured."""
        first = self.columns[0][1]
        print(f"{impl.rjust(first)}  n/a (error: {exc})"[:400], flush=True)


def run_rows(
    impls: Sequence[str],
    table: Table,
    measure: Callable[[str], Sequence[Any]],
    rounds: int = 1,
    figure: int | None = None,
    unit: str = "",
) -> None:
    """Measure each implementation and print its row; errors become n/a rows.

    With ``rounds`` > 1 the implementations take turns that many times (this
    machine's speed drifts, so only figures from the same round compare), then
    the median of column ``figure`` is printed per implementation, and for
    each other implementation its per-round ratio to ``zmq``.
    """
    figures: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            try:
                row = measure(impl)
                table.row(row)
                if figure is not None:
                    figures[impl].append(float(str(row[figure]).replace(",", "")))
            except Exception as exc:  # one implementation failing must not stop
                table.error_row(impl, exc)
                figures[impl].append(float("nan"))
            finally:
                kill_all_children()
    if rounds < 2 or figure is None:
        return
    medians = ", ".join(
        f"{impl} {statistics.median(values):,.0f}{unit}"
        for impl, values in figures.items()
    )
    print(f"median of {rounds} rounds: {medians}")
    if "zmq" not in figures:
        return
    for impl, values in figures.items():
        if impl == "zmq":
            continue
        ratios = [a / b for a, b in zip(values, figures["zmq"])]
        listed = " ".join(f"{r:.2f}" for r in ratios)
        median = statistics.median(ratios)
        print(f"{impl} / zmq per round: {listed} (median {median:.2f})")


def parent_setup() -> None:
    """Install the cleanup that kills all workers on exit, SIGINT or SIGTERM."""
    atexit.register(kill_all_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def is_worker() -> bool:
    """Whether this process was started as a worker."""
    return len(sys.argv) >= 3 and sys.argv[1] == "--worker"


# ---------------------------------------------------------------------------------
# Socket helpers for the raw baselines
# ---------------------------------------------------------------------------------


def listen_local() -> socket.socket:
    """Return a socket listening on a free port of 127.0.0.1."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(1)
    return sock


def accept_one(listener: socket.socket, timeout: float = 60.0) -> socket.socket:
    """Accept one connection (blocking mode, TCP_NODELAY) within ``timeout``."""
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def connect_local(port: int, timeout: float = 30.0) -> socket.socket:
    """Connect to 127.0.0.1:port (blocking mode, TCP_NODELAY)."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact_into(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from the socket; False on EOF before it is full."""
    got = 0
    size = len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def sendmsg_all(sock: socket.socket, buffers: list[Any]) -> None:
    """Send all buffers with as few sendmsg() calls as possible (no joining copy)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def make_payload(seq: int, filler: bytes) -> bytes:
    """Return a message: 8-byte little-endian sequence number, then filler."""
    return seq.to_bytes(8, "little") + filler


class SeqChecker:
    """Counts received messages, and those older than one already received."""

    def __init__(self) -> None:
        self.received = 0
        self.out_of_order = 0
        self.expected = 0

    def add(self, seq: int) -> None:
        """Record the sequence number of one received message."""
        self.received += 1
        if seq < self.expected:  # a gap is a loss; going back is a reorder
            self.out_of_order += 1
        else:
            self.expected = seq + 1


# ---------------------------------------------------------------------------------
# pub/sub baselines: receiver binds and reports its port, sender connects
# ---------------------------------------------------------------------------------


def pubsub_raw_recv(impl: str, count: int, size: int, idle: float) -> None:
    """Receive length-prefixed frames, parsing many frames out of each recv."""
    listener = listen_local()
    emit("ready", port=listener.getsockname()[1])
    conn = accept_one(listener)
    conn.settimeout(idle)
    checker = SeqChecker()
    buffer = bytearray()
    t_first = t_last = 0.0
    messages = []
    try:
        while checker.received < count:
            data = conn.recv(MIB)
            if not data:
                break
            buffer += data
            pos = 0
            end = len(buffer)
            with memoryview(buffer) as view:
                while pos + 12 <= end:
                    length, seq = LEN_SEQ.unpack_from(buffer, pos)
                    stop = pos + 4 + length
                    if stop > end:
                        break
                    messages.append(view[pos + 4 : stop].tobytes())
                    checker.add(seq)
                    pos = stop
            del buffer[:pos]
            messages.clear()  # a consumer would take them here
            t_last = time.time()
            if not t_first:
                t_first = t_last
    except TimeoutError:
        pass
    emit(
        "result",
        received=checker.received,
        out_of_order=checker.out_of_order,
        t_first=t_first,
        t_last=t_last,
    )


def pubsub_raw_send(impl: str, port: int, count: int, size: int, batch: int) -> None:
    """Send length-prefixed frames, one sendall per batch of messages."""
    sock = connect_local(port)
    filler = bytes(size - 8)
    pack = LEN.pack
    t_start = time.time()
    parts: list[bytes] = []
    for seq in range(count):
        payload = make_payload(seq, filler)
        parts.append(pack(len(payload)))
        parts.append(payload)
        if len(parts) >= 2 * batch:
            sock.sendall(b"".join(parts))
            parts.clear()
    if parts:
        sock.sendall(b"".join(parts))
    t_end = time.time()
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait until the receiver closes: everything was delivered
    emit("result", t_start=t_start, t_end=t_end)


def _zmq_hwm(impl: str) -> int:
    return 1000 if impl == "zmq-default" else 0  # 0 means unbounded


def pubsub_zmq_recv(impl: str, count: int, size: int, idle: float) -> None:
    """SUB socket bound to a random port; receive until count or idle timeout."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, _zmq_hwm(impl))
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    port = sock.bind_to_random_port(f"tcp://{HOST}")
    emit("ready", port=port)
    checker = SeqChecker()
    t_first = t_last = 0.0
    sock.setsockopt(zmq.RCVTIMEO, 60_000)  # until the first message
    try:
        while checker.received < count:
            msg = sock.recv()
            checker.add(int.from_bytes(msg[:8], "little"))
            t_last = time.time()
            if not t_first:
                t_first = t_last
                sock.setsockopt(zmq.RCVTIMEO, int(idle * 1000))
    except zmq.Again:
        pass
    emit(
        "result",
        received=checker.received,
        out_of_order=checker.out_of_order,
        t_first=t_first,
        t_last=t_last,
    )


def pubsub_zmq_send(impl: str, port: int, count: int, size: int, batch: int) -> None:
    """XPUB socket: wait for the subscription to arrive, then publish."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, _zmq_hwm(impl))
    sock.setsockopt(zmq.LINGER, 60_000)
    sock.connect(f"tcp://{HOST}:{port}")
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.recv()  # the subscription: no message is lost to the slow-joiner problem
    filler = bytes(size - 8)
    t_start = time.time()
    for seq in range(count):
        sock.send(make_payload(seq, filler))
    t_end = time.time()
    sock.close()  # lingers until the queue is sent
    ctx.term()
    emit("result", t_start=t_start, t_end=t_end)


# ---------------------------------------------------------------------------------
# bandwidth baselines: large messages one way
# ---------------------------------------------------------------------------------


def bandwidth_raw_recv(impl: str, count: int, size: int) -> None:
    """Receive each message into its own new buffer with recv_into."""
    listener = listen_local()
    emit("ready", port=listener.getsockname()[1], rss_mib=peak_rss_mib())
    conn = accept_one(listener)
    header = bytearray(4)
    received = 0
    nbytes = 0
    t_first = t_last = 0.0
    while received < count:
        if not recv_exact_into(conn, memoryview(header)):
            break
        (length,) = LEN.unpack(header)
        message = bytearray(length)
        if not recv_exact_into(conn, memoryview(message)):
            break
        received += 1
        nbytes += len(message)
        del message
        t_last = time.time()
        if not t_first:
            t_first = t_last
    conn.close()
    emit(
        "result",
        received=received,
        nbytes=nbytes,
        t_first=t_first,
        t_last=t_last,
        rss_mib=peak_rss_mib(),
    )


def bandwidth_raw_send(impl: str, port: int, count: int, size: int) -> None:
    """Send each message as header + payload in one sendmsg (no joining copy)."""
    payload = b"\xab" * size  # touched: counted in RSS
    base = peak_rss_mib()
    sock = connect_local(port)
    header = LEN.pack(size)
    t_start = time.time()
    for _ in range(count):
        sendmsg_all(sock, [header, payload])
    t_end = time.time()
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    emit("result", t_start=t_start, t_end=t_end, rss_mib=peak_rss_mib(), base_mib=base)


def bandwidth_zmq_recv(impl: str, count: int, size: int) -> None:
    """PULL socket; frames are received without copying (copy=False)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    port = sock.bind_to_random_port(f"tcp://{HOST}")
    emit("ready", port=port, rss_mib=peak_rss_mib())
    sock.setsockopt(zmq.RCVTIMEO, 60_000)
    received = 0
    nbytes = 0
    t_first = t_last = 0.0
    try:
        while received < count:
            frame = sock.recv(copy=False)
            received += 1
            nbytes += len(frame.buffer)
            del frame
            t_last = time.time()
            if not t_first:
                t_first = t_last
    except zmq.Again:
        pass
    emit(
        "result",
        received=received,
        nbytes=nbytes,
        t_first=t_first,
        t_last=t_last,
        rss_mib=peak_rss_mib(),
    )


def bandwidth_zmq_send(impl: str, port: int, count: int, size: int) -> None:
    """PUSH socket; the payload is sent without copying (copy=False)."""
    import zmq

    payload = b"\xab" * size  # touched: counted in RSS
    base = peak_rss_mib()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 60_000)
    sock.connect(f"tcp://{HOST}:{port}")
    t_start = time.time()
    for _ in range(count):
        sock.send(payload, copy=False)
    t_end = time.time()
    sock.close()
    ctx.term()
    emit("result", t_start=t_start, t_end=t_end, rss_mib=peak_rss_mib(), base_mib=base)


# ---------------------------------------------------------------------------------
# request/reply baselines: sequential tiny round trips
# ---------------------------------------------------------------------------------


def rpc_raw_server(impl: str) -> None:
    """Echo length-prefixed frames back, one sendall per reply."""
    listener = listen_local()

    def serve() -> None:
        conn = accept_one(listener)
        header = bytearray(4)
        while recv_exact_into(conn, memoryview(header)):
            (length,) = LEN.unpack(header)
            body = bytearray(length)
            if not recv_exact_into(conn, memoryview(body)):
                break
            conn.sendall(bytes(header) + body)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    emit("ready", port=listener.getsockname()[1])
    wait_until_stopped()


def rpc_raw_client(
    impl: str, port: int, count: int, warmup: int, bursts: int = 0
) -> None:
    """Time sequential ping-pong round trips of a tiny frame."""
    sock = connect_local(port)
    request = LEN.pack(1) + b"x"
    reply = bytearray(len(request))
    view = memoryview(reply)

    def call() -> None:
        sock.sendall(request)
        if not recv_exact_into(sock, view):
            raise BenchError("server closed the connection")
        if reply != request:
            raise BenchError(f"bad echo {bytes(reply)!r}")

    time_calls(call, count, warmup, bursts)
    sock.close()


def rpc_zmq_server(impl: str) -> None:
    """REP socket echoing every request."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    port = sock.bind_to_random_port(f"tcp://{HOST}")

    def serve() -> None:
        while True:
            sock.send(sock.recv())

    threading.Thread(target=serve, daemon=True).start()
    emit("ready", port=port)
    wait_until_stopped()


def rpc_zmq_client(
    impl: str, port: int, count: int, warmup: int, bursts: int = 0
) -> None:
    """REQ socket: time sequential round trips."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{HOST}:{port}")

    def call() -> None:
        sock.send(b"x")
        if sock.recv() != b"x":
            raise BenchError("bad echo")

    time_calls(call, count, warmup, bursts)


# ---------------------------------------------------------------------------------
# idle baselines: two connected processes doing nothing
# ---------------------------------------------------------------------------------


def idle_raw_bind(impl: str) -> None:
    """Accept one connection and block reading it."""
    listener = listen_local()

    def hold() -> None:
        conn = accept_one(listener)
        conn.recv(1)

    threading.Thread(target=hold, daemon=True).start()
    emit("ready", port=listener.getsockname()[1])
    wait_until_stopped()


def idle_raw_connect(impl: str, port: int) -> None:
    """Connect and block reading."""
    sock = connect_local(port)
    threading.Thread(target=sock.recv, args=(1,), daemon=True).start()
    emit("ready")
    wait_until_stopped()


def idle_zmq_bind(impl: str) -> None:
    """PAIR socket bound, blocked in recv."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    port = sock.bind_to_random_port(f"tcp://{HOST}")
    threading.Thread(target=sock.recv, daemon=True).start()
    emit("ready", port=port)
    wait_until_stopped()


def idle_zmq_connect(impl: str, port: int) -> None:
    """PAIR socket connected; says hello so the link is really up, then idles."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(f"tcp://{HOST}:{port}")
    sock.send(b"hello")
    emit("ready")
    wait_until_stopped()


BASELINE_WORKERS: dict[str, WorkerFn] = {
    "pub_recv:raw": pubsub_raw_recv,
    "pub_send:raw": pubsub_raw_send,
    "pub_recv:zmq": pubsub_zmq_recv,
    "pub_send:zmq": pubsub_zmq_send,
    "pub_recv:zmq-default": pubsub_zmq_recv,
    "pub_send:zmq-default": pubsub_zmq_send,
    "bw_recv:raw": bandwidth_raw_recv,
    "bw_send:raw": bandwidth_raw_send,
    "bw_recv:zmq": bandwidth_zmq_recv,
    "bw_send:zmq": bandwidth_zmq_send,
    "rpc_server:raw": rpc_raw_server,
    "rpc_client:raw": rpc_raw_client,
    "rpc_server:zmq": rpc_zmq_server,
    "rpc_client:zmq": rpc_zmq_client,
    "idle_bind:raw": idle_raw_bind,
    "idle_connect:raw": idle_raw_connect,
    "idle_bind:zmq": idle_zmq_bind,
    "idle_connect:zmq": idle_zmq_connect,
}
