"""Bandwidth: N one-way messages of 50 MB; MB/s and peak RSS of both processes.

MB/s counts 10**6 bytes per MB, from the sender's first send to the receiver's last
message. Peak RSS is ru_maxrss of each process; "base" is the sender's peak after
building its payload, before the transfer. Run by hand:

    python bench/bench_bandwidth.py [--quick] [--only raw,zmq,yoton,ref] [--size-mb 50]
"""

from __future__ import annotations

import time

import _baselines as B

DEFAULT_COUNT = 20
QUICK_COUNT = 5
SIZE_MB = 50


def yoton_recv(impl: str, count: int, size: int) -> None:
    """SubChannel (BINARY) on a binding context; recv(block=...) each message."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    port = B.free_port()
    ctx.bind(f"localhost:{port}")
    sub = yoton.SubChannel(ctx, "bench", yoton.BINARY)
    B.emit("ready", port=port, rss_mib=B.peak_rss_mib())
    received = 0
    nbytes = 0
    t_first = t_last = 0.0
    while received < count:
        msg = sub.recv(block=60.0)
        if not msg:
            break
        received += 1
        nbytes += len(msg)
        del msg
        t_last = time.time()
        if not t_first:
            t_first = t_last
    B.emit(
        "result",
        received=received,
        nbytes=nbytes,
        t_first=t_first,
        t_last=t_last,
        rss_mib=B.peak_rss_mib(),
    )
    ctx.close()


def yoton_send(impl: str, port: int, count: int, size: int) -> None:
    """PubChannel (BINARY) on a connecting context; send, then flush."""
    yoton = B.import_yoton(impl)
    payload = b"\xab" * size  # touched: counted in RSS
    base = B.peak_rss_mib()
    ctx = yoton.Context()
    ctx.connect(f"localhost:{port}", timeout=30.0)
    pub = yoton.PubChannel(ctx, "bench", yoton.BINARY)
    t_start = time.time()
    for _ in range(count):
        pub.send(payload)
    t_end = time.time()
    ctx.flush(120.0)
    B.emit(
        "result", t_start=t_start, t_end=t_end, rss_mib=B.peak_rss_mib(), base_mib=base
    )
    ctx.close()


WORKERS = {
    **B.BASELINE_WORKERS,
    "bw_recv:yoton": yoton_recv,
    "bw_send:yoton": yoton_send,
    "bw_recv:ref": yoton_recv,
    "bw_send:ref": yoton_send,
}


def measure(impl: str, count: int, size: int, timeout: float) -> list[object]:
    """Run one receiver and one sender process; return the table row."""
    params = {"count": count, "size": size}
    recv = B.Child(__file__, "bw_recv", impl, params, timeout)
    ready = recv.expect("ready", 60)
    send = B.Child(
        __file__, "bw_send", impl, {**params, "port": ready["port"]}, timeout
    )
    got = recv.expect("result", timeout)
    sent = send.expect("result", timeout)
    recv.close()
    send.close()
    if not got["received"]:
        raise B.BenchError("nothing received")
    total = got["t_last"] - sent["t_start"]
    return [
        impl,
        f"{got['received']}/{count}",
        f"{got['nbytes'] / total / 1e6:,.0f}",
        f"{sent['rss_mib']:.0f}",
        f"{got['rss_mib']:.0f}",
        f"{sent['base_mib']:.0f}",
        f"{ready['rss_mib']:.0f}",
        f"{total:.2f}",
    ]


def main() -> None:
    """Parse arguments and print one row per implementation."""
    parser = B.make_parser(__doc__.splitlines()[0], "raw,zmq,yoton", DEFAULT_COUNT)
    parser.add_argument("--size-mb", type=float, default=SIZE_MB, help="message size")
    args = parser.parse_args()
    count = args.count or (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    size = int(args.size_mb * 1e6)
    B.parent_setup()
    print(f"bandwidth: {count} messages of {size / 1e6:g} MB, one way, 127.0.0.1")
    table = B.Table(
        [
            ("impl", 8),
            ("received", 8),
            ("MB/s", 7),
            ("send peak MiB", 13),
            ("recv peak MiB", 13),
            ("send base MiB", 13),
            ("recv base MiB", 13),
            ("seconds", 8),
        ]
    )
    impls = [name.strip() for name in args.only.split(",") if name.strip()]
    B.run_rows(
        impls,
        table,
        lambda impl: measure(impl, count, size, args.timeout),
        args.rounds,
        figure=2,
        unit=" MB/s",
    )
    print(
        "base: peak RSS before the transfer (sender: with its payload built; "
        "receiver: after setup)."
    )


if __name__ == "__main__":
    if B.is_worker():
        B.worker_main(WORKERS)
    else:
        main()
