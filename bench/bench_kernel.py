"""Kernel benchmarks against the targets of DESIGN.md section 5; prints a table.

Run: ``python bench/bench_kernel.py [--runs 5] [--lines 1000000]``. The bench binds a
yoton context (the broker's role, without the broker), starts ``python -m kernel``
and measures, as medians over ``--runs`` runs:

- kernel start to Ready (process start until the first prompt arrives);
- executing ``pass`` until the prompt is back (target <= 1 ms);
- completing ``os.pa`` over reqp-introspect vs jedi alone in this process on the same
  kind of namespace (target <= jedi + 1 ms);
- ``for i in range(N): print(i)`` fully received vs plain python printing to a pipe
  (target <= 2 x).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yoton  # noqa: E402
from kernel.launch import kernel_command, kernel_environment  # noqa: E402

WAIT = 60.0


class KernelUnderTest:
    """A kernel process and the channels of its other end."""

    def __init__(self) -> None:
        key = secrets.token_bytes(16)
        self.ctx = yoton.Context()
        conn = self.ctx.bind("127.0.0.1:0", key=key)
        self.command = yoton.PubChannel(self.ctx, "ctrl-command")
        self.out = yoton.SubChannel(self.ctx, "strm-out")
        self.prompt = yoton.SubChannel(self.ctx, "strm-prompt")
        self.introspect = yoton.ReqChannel(self.ctx, "reqp-introspect")
        env = kernel_environment(f"127.0.0.1:{conn.port1}", key)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH")) if p
        )
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(kernel_command(), env=env)
        self.wait_prompt()
        self.ready_after = time.perf_counter() - self.started

    def wait_prompt(self) -> str:
        prompt = self.prompt.recv(WAIT)
        if not prompt:
            raise RuntimeError("the kernel did not answer")
        return prompt

    def execute(self, code: str) -> None:
        self.command.send(code + "\n")
        self.wait_prompt()

    def close(self) -> None:
        self.command.send("import sys; sys.exit(0)\n")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.ctx.close()


def bench_start(runs: int) -> float:
    times = []
    for _ in range(runs):
        k = KernelUnderTest()
        times.append(k.ready_after)
        k.close()
    return statistics.median(times)


def bench_pass(k: KernelUnderTest, n: int = 2000) -> float:
    for _ in range(50):
        k.execute("pass")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        k.execute("pass")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_complete(k: KernelUnderTest, n: int = 50) -> tuple[float, float]:
    import jedi

    k.execute("import os")
    for _ in range(3):
        k.introspect.complete("os.pa").result(WAIT)
    remote = []
    for _ in range(n):
        t = time.perf_counter()
        result = k.introspect.complete("os.pa").result(WAIT)
        remote.append(time.perf_counter() - t)
    assert "path" in result["names"]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "os": os}
    for _ in range(3):
        jedi.Interpreter("os.pa", [dict(namespace)]).complete()
    alone = []
    for _ in range(n):
        t = time.perf_counter()
        jedi.Interpreter("os.pa", [dict(namespace)]).complete()
        alone.append(time.perf_counter() - t)
    return statistics.median(remote), statistics.median(alone)


def bench_print(k: KernelUnderTest, lines: int) -> float:
    expected = sum(len(str(i)) + 1 for i in range(lines))
    k.execute("pass")
    t = time.perf_counter()
    k.command.send(f"for i in range({lines}): print(i)\n\n")
    received = 0
    while received < expected:
        chunk = k.out.recv(WAIT)
        if not chunk:
            raise RuntimeError(f"output stalled at {received} of {expected} chars")
        received += len(chunk)
    elapsed = time.perf_counter() - t
    k.wait_prompt()
    k.wait_prompt()
    return elapsed


def bench_plain_print(lines: int) -> float:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        f"for i in range({lines}): print(i)\n"
        "sys.stdout.flush()\n"
        "print(time.perf_counter() - t, file=sys.stderr)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while proc.stdout.read(1 << 20):
        pass
    err = proc.stderr.read()
    proc.wait()
    return float(err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()

    start = bench_start(args.runs)
    passes, remote, alone, prints, plain = [], [], [], [], []
    for _ in range(args.runs):
        k = KernelUnderTest()
        try:
            passes.append(bench_pass(k))
            r, a = bench_complete(k)
            remote.append(r)
            alone.append(a)
            prints.append(bench_print(k, args.lines))
        finally:
            k.close()
        plain.append(bench_plain_print(args.lines))

    med = statistics.median
    rows = [
        ("kernel start to Ready", f"{start * 1e3:.0f} ms", "-", "-"),
        ("execute 'pass', prompt back", f"{med(passes) * 1e3:.3f} ms", "<= 1 ms",
         "ok" if med(passes) <= 1e-3 else "MISSED"),
        ("complete 'os.pa' (jedi alone)", f"{med(remote) * 1e3:.2f} ms "
         f"({med(alone) * 1e3:.2f} ms)", "<= jedi + 1 ms",
         "ok" if med(remote) <= med(alone) + 1e-3 else "MISSED"),
        (f"{args.lines:,} printed lines (python | pipe)", f"{med(prints):.2f} s "
         f"({med(plain):.2f} s) = {med(prints) / med(plain):.2f} x", "<= 2 x",
         "ok" if med(prints) <= 2 * med(plain) else "MISSED"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"kernel bench, medians of {args.runs} runs, python {sys.version.split()[0]}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
