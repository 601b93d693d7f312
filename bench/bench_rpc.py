"""RPC latency: N sequential tiny request/reply round trips between two processes.

Prints the median, p99 and maximum round trip in microseconds, measured by the client
after a warm-up. Run by hand:

    python bench/bench_rpc.py [--quick] [--rounds N] [--only raw,zmq,yoton,floor,ref]

``ref`` (yoton 2.2) needs about 0.2 s per call, so its count is capped at 50.
``floor`` is the least pure Python can do with yoton's format: one thread per
process, blocking sockets, the frame header, parser and OBJECT codec of this
checkout, no channels, no routing. What yoton adds to it is overhead of ours.
"""

from __future__ import annotations

import threading
import time

import _baselines as B

DEFAULT_COUNT = 2000
QUICK_COUNT = 500
WARMUP = 50
REF_MAX_COUNT = 50


def yoton_server(impl: str) -> None:
    """RepChannel subclass with an echo method, in thread mode, on a binding context."""
    yoton = B.import_yoton(impl)

    class Echo(yoton.RepChannel):
        def echo(self, value):
            return value

    ctx = yoton.Context()
    port = B.free_port()
    ctx.bind(f"localhost:{port}")
    rep = Echo(ctx, "bench")
    rep.set_mode("thread")
    B.emit("ready", port=port)
    B.wait_until_stopped()
    rep.set_mode("off")
    ctx.close()


def yoton_client(impl: str, port: int, count: int, warmup: int) -> None:
    """ReqChannel: time ``req.echo('x').result(5)`` calls one after the other."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    ctx.connect(f"localhost:{port}", timeout=30.0)
    req = yoton.ReqChannel(ctx, "bench")
    times = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        reply = req.echo("x").result(5.0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if reply != "x":
            raise B.BenchError(f"bad echo {reply!r}")
    B.emit("result", **B.latency_summary(times), calls=len(times))
    ctx.close()


def floor_server(impl: str) -> None:
    """Echo OBJECT requests back in yoton frames, in one thread."""
    from yoton import wire
    from yoton.message_types import decode_object, encode_object

    listener = B.listen_local()

    def serve() -> None:
        sock = B.accept_one(listener)
        buf = bytearray(1 << 16)
        start = end = 0
        while True:
            n = sock.recv_into(memoryview(buf)[end:])
            if not n:
                return
            end += n
            packages, start, _ = wire.parse_frames(buf, start, end)
            for package in packages:
                _name, args, _kwargs = decode_object(package.data)
                data = encode_object((args[0], "0x0"))
                header = wire.encode_header(
                    package.slot, 1, package.source_seq, package.source_id,
                    package.source_seq, len(data),
                )  # fmt: skip
                sock.sendall(header + data)
            if start == end:
                start = end = 0

    threading.Thread(target=serve, daemon=True).start()
    B.emit("ready", port=listener.getsockname()[1])
    B.wait_until_stopped()


def floor_client(impl: str, port: int, count: int, warmup: int) -> None:
    """Time echo round trips in yoton frames, in one thread."""
    from yoton import wire
    from yoton.message_types import decode_object, encode_object

    sock = B.connect_local(port)
    buf = bytearray(1 << 16)
    times = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        data = encode_object(("echo", ("x",), {}))
        sock.sendall(wire.encode_header(5, 2, i + 1, 1, i + 1, len(data)) + data)
        start = end = 0
        packages: list = []
        while not packages:
            end += sock.recv_into(memoryview(buf)[end:])
            packages, start, _ = wire.parse_frames(buf, start, end)
        reply = decode_object(packages[0].data)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if reply[0] != "x":
            raise B.BenchError(f"bad echo {reply!r}")
    B.emit("result", **B.latency_summary(times), calls=len(times))


WORKERS = {
    **B.BASELINE_WORKERS,
    "rpc_server:yoton": yoton_server,
    "rpc_client:yoton": yoton_client,
    "rpc_server:floor": floor_server,
    "rpc_client:floor": floor_client,
    "rpc_server:ref": yoton_server,
    "rpc_client:ref": yoton_client,
}


def measure(impl: str, count: int, timeout: float) -> list[object]:
    """Run one server and one client process; return the table row."""
    warmup = WARMUP
    if impl == "ref":
        count, warmup = min(count, REF_MAX_COUNT), 2
    server = B.Child(__file__, "rpc_server", impl, {}, timeout)
    ready = server.expect("ready", 60)
    client = B.Child(
        __file__,
        "rpc_client",
        impl,
        {"port": ready["port"], "count": count, "warmup": warmup},
        timeout,
    )
    got = client.expect("result", timeout)
    client.close()
    server.close()
    return [
        impl,
        f"{got['calls']:,}",
        f"{got['median_us']:,.0f}",
        f"{got['p99_us']:,.0f}",
        f"{got['max_us']:,.0f}",
    ]


def main() -> None:
    """Parse arguments and print one row per implementation."""
    parser = B.make_parser(__doc__.splitlines()[0], "raw,zmq,yoton", DEFAULT_COUNT)
    args = parser.parse_args()
    count = args.count or (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    B.parent_setup()
    print(f"rpc: {count:,} sequential tiny round trips (after {WARMUP} warm-up calls)")
    table = B.Table(
        [("impl", 8), ("calls", 7), ("median us", 10), ("p99 us", 10), ("max us", 10)]
    )
    impls = [name.strip() for name in args.only.split(",") if name.strip()]
    B.run_rows(
        impls,
        table,
        lambda impl: measure(impl, count, args.timeout),
        args.rounds,
        figure=2,
        unit=" us",
    )


if __name__ == "__main__":
    if B.is_worker():
        B.worker_main(WORKERS)
    else:
        main()
