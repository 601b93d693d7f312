"""Idle CPU: two connected endpoints, each its own process, doing nothing for N seconds.

Prints the CPU time (user + system, from psutil) each process used during the idle
window, as a percentage of one core. Run by hand:

    python bench/bench_idle.py [--quick] [--only raw,zmq,yoton,ref] [--seconds 10]
"""

from __future__ import annotations

import time

import _baselines as B
import psutil

DEFAULT_SECONDS = 10.0
QUICK_SECONDS = 2.0
#: Time given to both ends to finish connecting before the window starts.
SETTLE = 0.5


def yoton_bind(impl: str) -> None:
    """A context that binds, with a channel on it, then idles."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    port = B.free_port()
    ctx.bind(f"localhost:{port}")
    sub = yoton.SubChannel(ctx, "bench")
    B.emit("ready", port=port)
    B.wait_until_stopped()
    sub.close()
    ctx.close()


def yoton_connect(impl: str, port: int) -> None:
    """A context that connects, with a channel on it, then idles."""
    yoton = B.import_yoton(impl)
    ctx = yoton.Context()
    ctx.connect(f"localhost:{port}", timeout=30.0)
    pub = yoton.PubChannel(ctx, "bench")
    pub.send("hello")
    B.emit("ready")
    B.wait_until_stopped()
    pub.close()
    ctx.close()


WORKERS = {
    **B.BASELINE_WORKERS,
    "idle_bind:yoton": yoton_bind,
    "idle_connect:yoton": yoton_connect,
    "idle_bind:ref": yoton_bind,
    "idle_connect:ref": yoton_connect,
}


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(impl: str, seconds: float, timeout: float) -> list[object]:
    """Start both ends, wait for the link, then measure CPU over the idle window."""
    binder = B.Child(__file__, "idle_bind", impl, {}, timeout + seconds)
    ready = binder.expect("ready", 60)
    connector = B.Child(
        __file__, "idle_connect", impl, {"port": ready["port"]}, timeout + seconds
    )
    connector.expect("ready", 60)
    time.sleep(SETTLE)
    procs = [psutil.Process(binder.pid), psutil.Process(connector.pid)]
    before = [_cpu_seconds(p) for p in procs]
    t0 = time.monotonic()
    time.sleep(seconds)
    after = [_cpu_seconds(p) for p in procs]
    wall = time.monotonic() - t0
    for child in (binder, connector):
        if child.proc.poll() is not None:
            raise B.BenchError(f"{child.name} exited during the window")
    binder.close()
    connector.close()
    used = [(a - b) / wall * 100 for a, b in zip(after, before)]
    return [
        impl,
        f"{wall:.1f}",
        f"{used[0]:.2f}%",
        f"{used[1]:.2f}%",
        f"{sum(used):.2f}%",
    ]


def main() -> None:
    """Parse arguments and print one row per implementation."""
    parser = B.make_parser(__doc__.splitlines()[0], "raw,zmq,yoton", None)
    parser.add_argument("--seconds", type=float, default=None, help="idle window")
    args = parser.parse_args()
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    B.parent_setup()
    print(f"idle CPU: two connected processes, {seconds:g} s window")
    table = B.Table(
        [("impl", 8), ("seconds", 8), ("binder", 8), ("connector", 9), ("total", 8)]
    )
    impls = [name.strip() for name in args.only.split(",") if name.strip()]
    B.run_rows(impls, table, lambda impl: measure(impl, seconds, args.timeout))
    print("percentages are of one core; CPU time = user + system (psutil).")


if __name__ == "__main__":
    if B.is_worker():
        B.worker_main(WORKERS)
    else:
        main()
