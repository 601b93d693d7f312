"""Benchmarks through the broker (DESIGN.md section 5); prints a table, not a test.

Starts ``python -m broker`` with a real kernel and measures, as a client sees it:
the round trip of executing ``pass`` (until the prompt is back), a completion of
``os.pa``, 1,000,000 printed lines reaching each of 2 client processes, how
fast a stall (GIL held in C) and a killed kernel are reported, and the idle CPU of
broker + kernel. Run: ``python bench/bench_broker.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

import yoton

WAIT = 60.0


class StateWatcher(yoton.StateChannel):
    """Records (monotonic time, state) for every received state; never resends."""

    def __init__(self, context, slot, message_type=None):
        super().__init__(context, slot, message_type)
        self.log: list[tuple[float, object]] = []
        self.cond = threading.Condition()

    def send_last(self):
        pass

    def _recv_packages(self, packages):
        now = time.monotonic()
        super()._recv_packages(packages)
        with self.cond:
            for package in packages:
                self.log.append((now, self.message_from_bytes(package.data)))
            self.cond.notify_all()

    def wait_for(self, value, after: float = 0.0, timeout: float = WAIT) -> float:
        """Wait until ``value`` is received at or after time ``after``; its time."""

        def found():
            return next((t for t, v in self.log if v == value and t >= after), None)

        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"{value!r} not received; log {self.log[-10:]}")
            return found()


class BrokerUnderTest:
    """A broker process and one client in this process."""

    def __init__(self, tmp: Path) -> None:
        self.connection_file = tmp / "broker.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker",
                "--connection-file",
                str(self.connection_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=tmp,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        if not ready:
            raise RuntimeError("the broker did not start")
        self.proc.stdout.readline()
        info = json.loads(self.connection_file.read_text())
        self.address, self.key = info["address"], info["key"]
        self.ctx = yoton.Context()
        self.prompt = yoton.SubChannel(self.ctx, "strm-prompt")
        self.out = yoton.SubChannel(self.ctx, "strm-out")
        self.status = StateWatcher(self.ctx, "stat-interpreter")
        self.info = StateWatcher(self.ctx, "stat-broker", yoton.OBJECT)
        self.command = yoton.PubChannel(self.ctx, "ctrl-command")
        self.ctrl = yoton.PubChannel(self.ctx, "ctrl-broker")
        self.introspect = yoton.ReqChannel(self.ctx, "reqp-introspect")
        self.ctx.connect(self.address, timeout=10, key=self.key)
        self.status.wait_for("Ready")

    def kernel_pid(self) -> int:
        """The live kernel's pid from stat-broker."""
        deadline = time.monotonic() + WAIT
        with self.info.cond:
            while True:
                info = self.info.recv()
                if info and info.get("kernel_alive") and info.get("kernel_pid"):
                    return info["kernel_pid"]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no live kernel")
                self.info.cond.wait(remaining)

    def drain_prompts(self) -> None:
        """Discard pending prompts."""
        self.prompt.recv_all()

    def close(self) -> None:
        """Stop the broker (and so the kernel)."""
        self.ctx.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def bench_pass(b: BrokerUnderTest, n: int) -> float:
    """Median seconds from sending "pass" to the prompt coming back."""
    times = []
    b.drain_prompts()
    for _ in range(n + 5):
        t0 = time.perf_counter()
        b.command.send("pass\n")
        if not b.prompt.recv(WAIT):
            raise TimeoutError("no prompt")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[5:])


def bench_completion(b: BrokerUnderTest, n: int) -> float:
    """Median seconds for a warm completion of ``os.pa``."""
    b.command.send("import os\n")
    b.prompt.recv(WAIT)
    times = []
    for _ in range(n + 3):
        t0 = time.perf_counter()
        result = b.introspect.complete("os.pa").result(WAIT)
        times.append(time.perf_counter() - t0)
    if "path" not in json.dumps(result, default=str):
        raise RuntimeError(f"unexpected completion result {result!r}")
    return statistics.median(times[3:])


_LINES_CLIENT = r"""
import sys, time, yoton
ctx = yoton.Context()
out = yoton.SubChannel(ctx, "strm-out")
ctx.connect(sys.argv[1], timeout=10, key=sys.argv[2])
print("attached", flush=True)
last = sys.argv[3]
tail = ""
count = 0
while True:
    text = out.recv(120)
    if not text:
        print("timeout", flush=True)
        break
    count += text.count("\n")
    tail = (tail + text)[-64:]
    if tail.endswith(last):
        print(time.monotonic(), count, flush=True)
        break
"""


def bench_jedi_alone(n: int) -> float:
    """Median seconds for jedi completing ``os.pa`` in this process (baseline)."""
    import jedi

    namespace = {"os": os}
    times = []
    for _ in range(n + 3):
        t0 = time.perf_counter()
        jedi.Interpreter("os.pa", [namespace]).complete()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


def bench_lines(b: BrokerUnderTest, lines: int, clients: int) -> list[float]:
    """Seconds until each client process has all ``lines`` printed lines."""
    last = f"\n{lines - 1}\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LINES_CLIENT, b.address, b.key, last],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "attached":
            raise RuntimeError("line client did not attach")
    time.sleep(0.5)  # let the attach traffic settle (history, states)
    mark = time.monotonic()
    b.command.send(f"for i in range({lines}): print(i)\n\n")
    t0 = time.monotonic()
    results = []
    for proc in procs:
        fields = proc.stdout.readline().split()
        proc.wait(WAIT)
        proc.stdout.close()
        if len(fields) != 2 or int(fields[1]) < lines:
            raise RuntimeError(f"a client did not get all lines: {fields}")
        results.append(float(fields[0]) - t0)
    b.status.wait_for("Ready", after=mark)
    return results


def bench_pipe_baseline(lines: int) -> float:
    """Seconds for plain python printing the lines to a pipe (read by us)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"for i in range({lines}): print(i)"],
        stdout=subprocess.PIPE,
    )
    while proc.stdout.read(1 << 16):
        pass
    proc.wait()
    return time.monotonic() - t0


def bench_stall(b: BrokerUnderTest, seconds: float = 2.0) -> tuple[float, float]:
    """(Busy -> Stalled seen, end of the C sleep -> not Stalled seen) in seconds."""
    b.drain_prompts()
    mark = time.monotonic()
    b.command.send(f"import ctypes; ctypes.PyDLL(None).usleep({int(seconds * 1e6)})\n")
    busy = b.status.wait_for("Busy", after=mark)
    stalled = b.status.wait_for("Stalled", after=busy)
    ready = b.status.wait_for("Ready", after=stalled)
    return stalled - busy, ready - (busy + seconds)


def bench_dead(b: BrokerUnderTest) -> float:
    """Seconds from SIGKILL of the kernel to "Dead" seen by the client."""
    pid = b.kernel_pid()
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return b.status.wait_for("Dead", after=t0) - t0


def bench_idle_cpu(b: BrokerUnderTest, seconds: float) -> tuple[float, float]:
    """Percent of one CPU used by (broker, kernel) while idle with a client."""
    broker = psutil.Process(b.proc.pid)
    kernel = psutil.Process(b.kernel_pid())
    time.sleep(1.0)
    before = [sum(p.cpu_times()[:2]) for p in (broker, kernel)]
    time.sleep(seconds)
    after = [sum(p.cpu_times()[:2]) for p in (broker, kernel)]
    return tuple(100.0 * (a - c) / seconds for a, c in zip(after, before))


def main() -> None:
    """Run the benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n = 50 if args.quick else 300
    lines = 100_000 if args.quick else 1_000_000
    idle = 3.0 if args.quick else 10.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        b = BrokerUnderTest(Path(tmp))
        try:
            idle_broker, idle_kernel = bench_idle_cpu(b, idle)
            rows.append(
                (
                    f"idle CPU over {idle:g} s (1 client)",
                    f"broker {idle_broker:.2f}%, kernel {idle_kernel:.2f}%",
                    "0%",
                )
            )
            rows.append(
                (
                    'execute "pass", prompt back',
                    f"{bench_pass(b, n) * 1e3:.2f} ms",
                    "<= 1 ms",
                )
            )
            rows.append(
                (
                    "completion of os.pa (warm)",
                    f"{bench_completion(b, n // 5 or 10) * 1e3:.2f} ms "
                    f"(jedi alone {bench_jedi_alone(n // 5 or 10) * 1e3:.2f} ms)",
                    "<= jedi + 1 ms",
                )
            )
            pipe = bench_pipe_baseline(lines)
            per_client = bench_lines(b, lines, 2)
            rows.append(
                (
                    f"{lines:,} lines to each of 2 clients",
                    " / ".join(f"{t:.2f} s" for t in per_client)
                    + f" (pipe {pipe:.2f} s, x{max(per_client) / pipe:.1f})",
                    "<= 2 x pipe",
                )
            )
            stall, cleared = bench_stall(b)
            rows.append(
                (
                    "stall reported / cleared",
                    f"{stall * 1e3:.0f} ms / {cleared * 1e3:.0f} ms",
                    "<= 1 s / <= 0.5 s",
                )
            )
            rows.append(
                (
                    "kernel SIGKILL -> Dead seen",
                    f"{bench_dead(b) * 1e3:.1f} ms",
                    "<= 0.5 s",
                )
            )
        finally:
            b.close()
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'through the broker':<{width}}  {'measured':<{vwidth}}  target")
    print("-" * (width + vwidth + 20))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")


if __name__ == "__main__":
    main()
