"""pub/sub throughput: N messages of 100 bytes one way, sender and receiver processes.

Prints msgs/s measured from the sender's first send to the receiver's last message
(and, for reference, from the receiver's first to last message), and how many
messages were lost or arrived out of order. Run by hand:

    python bench/bench_pubsub.py [--quick] [--rounds N] [--only raw,zmq,yoton,...]
"""

from __future__ import annotations

import time

import _baselines as B

DEFAULT_COUNT = 100_000
QUICK_COUNT = 20_000
SIZE = 100
#: The receiver gives up this many seconds after the last message (lossy links).
IDLE = 2.0


def yoton_recv(impl: str, count: int, size: int, idle: float) -> None:
    """SubChannel on a binding context; recv(block=...) until count or idle."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    port = B.free_port()
    ctx.bind(f"localhost:{port}")
    sub = yoton.SubChannel(ctx, "bench", yoton.BINARY)
    B.emit("ready", port=port)
    checker = B.SeqChecker()
    t_first = t_last = 0.0
    block = 60.0  # until the first message
    while checker.received < count:
        msg = sub.recv(block=block)
        if not msg:
            break
        checker.add(int.from_bytes(msg[:8], "little"))
        t_last = time.time()
        if not t_first:
            t_first = t_last
            block = idle
    B.emit(
        "result",
        received=checker.received,
        out_of_order=checker.out_of_order,
        t_first=t_first,
        t_last=t_last,
    )
    ctx.close()


def yoton_send(impl: str, port: int, count: int, size: int, batch: int) -> None:
    """PubChannel on a connecting context; send everything, then flush."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    ctx.connect(f"localhost:{port}", timeout=30.0)
    pub = yoton.PubChannel(ctx, "bench", yoton.BINARY)
    filler = bytes(size - 8)
    t_start = time.time()
    for seq in range(count):
        pub.send(B.make_payload(seq, filler))
    t_end = time.time()
    ctx.flush(60.0)
    B.emit("result", t_start=t_start, t_end=t_end)
    ctx.close()


WORKERS = {
    **B.BASELINE_WORKERS,
    "pub_recv:yoton": yoton_recv,
    "pub_send:yoton": yoton_send,
    "pub_recv:ref": yoton_recv,
    "pub_send:ref": yoton_send,
}


def measure(impl: str, count: int, timeout: float) -> list[object]:
    """Run one receiver and one sender process; return the table row."""
    params = {"count": count, "size": SIZE}
    recv = B.Child(__file__, "pub_recv", impl, {**params, "idle": IDLE}, timeout)
    ready = recv.expect("ready", 60)
    send = B.Child(
        __file__,
        "pub_send",
        impl,
        {**params, "port": ready["port"], "batch": 1000},
        timeout,
    )
    got = recv.expect("result", timeout)
    sent = send.expect("result", timeout)
    recv.close()
    send.close()
    received = got["received"]
    if not received:
        raise B.BenchError("nothing received")
    total = got["t_last"] - sent["t_start"]
    inner = got["t_last"] - got["t_first"]
    return [
        impl,
        f"{count:,}",
        f"{received / total:,.0f}",
        f"{received / inner:,.0f}" if inner > 0 else "-",
        f"{count - received:,}",
        f"{got['out_of_order']:,}",
        f"{total:.3f}",
    ]


def main() -> None:
    """Parse arguments and print one row per implementation."""
    parser = B.make_parser(
        __doc__.splitlines()[0], "raw,zmq,zmq-default,yoton", DEFAULT_COUNT
    )
    args = parser.parse_args()
    count = args.count or (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    B.parent_setup()
    print(f"pub/sub: {count:,} messages of {SIZE} bytes, one way, 127.0.0.1")
    table = B.Table(
        [
            ("impl", 12),
            ("messages", 9),
            ("msg/s", 10),
            ("msg/s recv", 10),
            ("lost", 8),
            ("reordered", 9),
            ("seconds", 8),
        ]
    )
    impls = [name.strip() for name in args.only.split(",") if name.strip()]
    B.run_rows(
        impls,
        table,
        lambda impl: measure(impl, count, args.timeout),
        args.rounds,
        figure=2,
        unit=" msg/s",
    )
    print(
        "msg/s: sender's first send to receiver's last message; "
        "msg/s recv: receiver's first to last message."
    )


if __name__ == "__main__":
    if B.is_worker():
        B.worker_main(WORKERS)
    else:
        main()
