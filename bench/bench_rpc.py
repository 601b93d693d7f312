"""RPC latency: N sequential tiny request/reply round trips between two processes.

Prints the median, p99 and maximum round trip in microseconds, measured by the client
after a warm-up. Run by hand:

    python bench/bench_rpc.py [--quick] [--rounds N] [--only raw,zmq,yoton,floor,ref]
    python bench/bench_rpc.py --bursts 16 --count 400 --only raw,zmq,yoton,floor

``ref`` (yoton 2.2) needs about 0.2 s per call, so its count is capped at 50.
``floor`` is the least pure Python can do with yoton's format: one thread per
process, blocking sockets, the frame header, parser and OBJECT codec of this
checkout, no channels, no routing. What yoton adds to it is overhead of ours.
"""

from __future__ import annotations

import statistics
import threading

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


def yoton_client(
    impl: str, port: int, count: int, warmup: int, bursts: int = 0
) -> None:
    """ReqChannel: time ``req.echo('x').result(5)`` calls one after the other."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    ctx.connect(f"localhost:{port}", timeout=30.0)
    req = yoton.ReqChannel(ctx, "bench")

    def call() -> None:
        reply = req.echo("x").result(5.0)
        if reply != "x":
            raise B.BenchError(f"bad echo {reply!r}")

    B.time_calls(call, count, warmup, bursts)
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


def floor_client(
    impl: str, port: int, count: int, warmup: int, bursts: int = 0
) -> None:
    """Time echo round trips in yoton frames, in one thread."""
    from yoton import wire
    from yoton.message_types import decode_object, encode_object

    sock = B.connect_local(port)
    buf = bytearray(1 << 16)
    sent = [0]

    def call() -> None:
        sent[0] = seq = sent[0] + 1
        data = encode_object(("echo", ("x",), {}))
        sock.sendall(wire.encode_header(5, 2, seq, 1, seq, len(data)) + data)
        start = end = 0
        packages: list = []
        while not packages:
            end += sock.recv_into(memoryview(buf)[end:])
            packages, start, _ = wire.parse_frames(buf, start, end)
        reply = decode_object(packages[0].data)
        if reply[0] != "x":
            raise B.BenchError(f"bad echo {reply!r}")

    B.time_calls(call, count, warmup, bursts)


WORKERS = {
    **B.BASELINE_WORKERS,
    "rpc_server:yoton": yoton_server,
    "rpc_client:yoton": yoton_client,
    "rpc_server:floor": floor_server,
    "rpc_client:floor": floor_client,
    "rpc_server:ref": yoton_server,
    "rpc_client:ref": yoton_client,
}


def _start_pair(impl: str, client_params: dict, deadline: float) -> tuple:
    """Start a server, then a client connected to it: (server, client)."""
    server = B.Child(__file__, "rpc_server", impl, {}, deadline)
    port = server.expect("ready", 60)["port"]
    params = {"port": port, **client_params}
    return server, B.Child(__file__, "rpc_client", impl, params, deadline)


def measure(impl: str, count: int, timeout: float) -> list[object]:
    """Run one server and one client process; return the table row."""
    warmup = WARMUP
    if impl == "ref":
        count, warmup = min(count, REF_MAX_COUNT), 2
    server, client = _start_pair(impl, {"count": count, "warmup": warmup}, timeout)
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


def measure_interleaved(
    impls: list[str], count: int, bursts: int, timeout: float
) -> None:
    """Keep a server and a client of every implementation running and let
    them take turns, ``bursts`` runs of ``count`` calls each: this machine's
    speed drifts within seconds, so only runs close in time compare. Prints
    the median of the run medians and p99s, and each run's ratio to zmq."""
    pairs = {}
    try:
        params = {"count": count, "warmup": WARMUP, "bursts": bursts}
        for impl in impls:
            pairs[impl] = _start_pair(impl, params, timeout * bursts)
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for _ in range(bursts):
            for impl in impls:
                client = pairs[impl][1]
                client.send("go")
                runs[impl].append(client.expect("burst", timeout))
    finally:
        for server, client in pairs.values():
            client.close()
            server.close()
    table = B.Table(
        [
            ("impl", 8),
            ("calls", 7),
            ("median us", 10),
            ("p99 us", 10),
            ("/ zmq", 6),
            ("q1-q3", 10),
        ]
    )
    for impl in impls:
        medians = [run["median_us"] for run in runs[impl]]
        ratio, spread = "", ""
        if "zmq" in runs and impl != "zmq":
            ratios = [a / z["median_us"] for a, z in zip(medians, runs["zmq"])]
            quartiles = statistics.quantiles(ratios, n=4)
            ratio = f"{statistics.median(ratios):.2f}"
            spread = f"{quartiles[0]:.2f}-{quartiles[2]:.2f}"
        table.row(
            [
                impl,
                f"{bursts * count:,}",
                f"{statistics.median(medians):,.0f}",
                f"{statistics.median(run['p99_us'] for run in runs[impl]):,.0f}",
                ratio,
                spread,
            ]
        )
    print("median us, p99 us: medians over the runs; / zmq: median of the runs'")
    print("ratios of medians to zmq's run just before or after, and their quartiles.")


def main() -> None:
    """Parse arguments and print one row per implementation."""
    parser = B.make_parser(__doc__.splitlines()[0], "raw,zmq,yoton", DEFAULT_COUNT)
    parser.add_argument(
        "--bursts",
        type=int,
        default=0,
        help="keep every pair running and take turns this many times, "
        "--count calls each (try --bursts 16 --count 400)",
    )
    args = parser.parse_args()
    count = args.count or (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    B.parent_setup()
    impls = [name.strip() for name in args.only.split(",") if name.strip()]
    if args.bursts:
        if "ref" in impls:
            parser.error("--bursts is too slow for ref (0.2 s a call): use --rounds")
        print(
            f"rpc: {args.bursts} turns of {count:,} sequential tiny round trips "
            f"per implementation (after {WARMUP} warm-up calls)"
        )
        measure_interleaved(impls, count, args.bursts, args.timeout)
        return
    print(f"rpc: {count:,} sequential tiny round trips (after {WARMUP} warm-up calls)")
    table = B.Table(
        [("impl", 8), ("calls", 7), ("median us", 10), ("p99 us", 10), ("max us", 10)]
    )
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
