"""Where an RPC round trip goes: time stamps around each step, in both processes.

A ReqChannel calls ``echo`` on a RepChannel in another process, as bench_rpc.py
does; both sides wrap their socket calls and a few steps of the receive path
with ``time.perf_counter_ns`` stamps (one clock for both processes on Linux)
and the medians of the steps are printed. The wrapping costs about a
microsecond a step, so use the figures to compare steps, not as the latency.
Run by hand:

    python bench/profile_rpc.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yoton  # noqa: E402
from yoton import wire  # noqa: E402
from yoton.channels import reqrep  # noqa: E402

WARMUP = 300
_now = time.perf_counter_ns


class _StampedSocket:
    """A socket whose sends and receives leave (name, time) stamps in a log."""

    def __init__(self, sock: Any, log: list) -> None:
        self._sock = sock
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _stamped(self, kind: str, method: Any, *args: Any) -> Any:
        self._log.append((kind + "0", _now()))
        try:
            return method(*args)
        finally:
            self._log.append((kind + "1", _now()))

    def sendall(self, *args: Any) -> Any:
        return self._stamped("send", self._sock.sendall, *args)

    def send(self, *args: Any) -> Any:
        return self._stamped("send", self._sock.send, *args)

    def sendmsg(self, *args: Any) -> Any:
        return self._stamped("send", self._sock.sendmsg, *args)

    def recv_into(self, *args: Any) -> Any:
        return self._stamped("recv", self._sock.recv_into, *args)


def _stamp(log: list, name: str, function: Any) -> Any:
    """Wrap ``function`` so that each call first leaves a stamp."""

    def stamped(*args: Any) -> Any:
        log.append((name, _now()))
        return function(*args)

    return stamped


def _stamp_connection(connection: Any, log: list) -> None:
    spy = _StampedSocket(connection._sock, log)
    connection._sock = spy
    connection._reader._sock = spy


def serve() -> None:
    """The replier: echo, with its socket and receive path stamped."""
    log: list = []

    class Echo(yoton.RepChannel):
        def echo(self, value: Any) -> Any:
            log.append(("method", _now()))
            return value

    ctx = yoton.Context()
    connection = ctx.bind("localhost:0")
    rep = Echo(ctx, "profile")
    rep.set_mode("thread")
    print(connection.port1, flush=True)
    while not connection.is_connected:
        time.sleep(0.01)
    _stamp_connection(connection, log)
    # A frame alone is parsed by lone_frame and routed by _deliver_one.
    wire.parse_frame_runs = _stamp(log, "parse", wire.parse_frame_runs)
    wire.lone_frame = _stamp(log, "parse", wire.lone_frame)
    reader = connection._reader
    reader._deliver_to = _stamp(log, "route", reader._deliver_to)
    reader._deliver_one = _stamp(log, "route", reader._deliver_one)
    # RepChannel._handle decodes each call with the module's decode_request.
    reqrep.decode_request = _stamp(log, "decode", reqrep.decode_request)
    sys.stdin.readline()
    print(json.dumps(log), flush=True)


def _between(events: list, first: str, then: str) -> float | None:
    """Microseconds from the first ``first`` stamp to the next ``then``, or None."""
    start = next((t for k, t in events if k == first), None)
    if start is None:
        return None
    end = next((t for k, t in events if k == then and t >= start), None)
    return None if end is None else (end - start) / 1000


def main() -> None:
    """Run both sides, then print the median of each step of a round trip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        ctx = yoton.Context()
        connection = ctx.connect(f"localhost:{port}", timeout=30)
        req = yoton.ReqChannel(ctx, "profile")
        time.sleep(0.3)
        log: list = []
        _stamp_connection(connection, log)
        for _ in range(WARMUP + args.calls):
            log.append(("call", _now()))
            req.echo("x").result(5)
            log.append(("done", _now()))
        server.stdin.write("\n")
        server.stdin.flush()
        server_log = json.loads(server.stdout.readline())
        ctx.close()
    finally:
        server.kill()
        server.wait()
    events = sorted(
        [(t, "client " + k) for k, t in log]
        + [(t, "server " + k) for k, t in server_log]
    )
    calls: list[list] = []
    for t, k in events:
        if k == "client call":
            calls.append([])
        if calls:
            calls[-1].append((k, t))
    steps = {
        "client: call to its send": ("client call", "client send0"),
        "client: send syscall": ("client send0", "client send1"),
        "send to the server's recv done": ("client send0", "server recv1"),
        "server: recv done to parse": ("server recv1", "server parse"),
        "server: parse to route": ("server parse", "server route"),
        "server: route to decode": ("server route", "server decode"),
        "server: decode to the method": ("server decode", "server method"),
        "server: method to its send": ("server method", "server send0"),
        "server: send syscall": ("server send0", "server send1"),
        "send to the client's recv done": ("server send0", "client recv1"),
        "client: recv done to the result": ("client recv1", "client done"),
        "round trip": ("client call", "client done"),
    }
    figures: dict[str, list[float]] = {name: [] for name in steps}
    for call in calls[WARMUP:-1]:
        for name, (first, then) in steps.items():
            value = _between(call, first, then)
            if value is not None:
                figures[name].append(value)
    print(f"RPC round trip, {args.calls:,} echo calls: medians in us (stamped)")
    for name, values in figures.items():
        if values:
            print(f"  {name:36s} {statistics.median(values):8.1f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main()
