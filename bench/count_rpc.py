"""Instructions per RPC call in each process, by callgrind: exact, unlike time here.

Runs bench_rpc.py's replier and caller (yoton's, and the floor's beside them),
each process under callgrind with a count per thread, for two numbers of
calls, and prints the instructions per call of the calling thread and of the
replier's thread that answers (in each, the thread whose count grows the
most). Subtracting the two runs leaves start-up and warm-up out. Needs
valgrind; takes about a minute per implementation. Run by hand:

    python bench/count_rpc.py [--only yoton,floor]
"""

from __future__ import annotations

import argparse
import glob
import shutil
import sys
import tempfile
from pathlib import Path

import _baselines as B

BENCH_RPC = str(Path(__file__).with_name("bench_rpc.py"))
SHORT, LONG = 300, 2300
WARMUP = 50
DEADLINE = 900.0


def _threads(prefix: str) -> dict[str, int]:
    """Instructions per thread (by callgrind's thread number) of one process."""
    counts = {}
    for path in glob.glob(prefix + "-*"):
        with open(path) as lines:
            for line in lines:
                if line.startswith(("summary:", "totals:")):
                    counts[path.rsplit("-", 1)[1]] = int(line.split()[1])
                    break
    if not counts:
        raise B.BenchError(f"no callgrind output at {prefix}-*")
    return counts


def _run(impl: str, calls: int, folder: str) -> tuple[dict, dict]:
    """Per-thread instructions (caller, replier) of a pair making ``calls`` calls."""
    valgrind = shutil.which("valgrind")

    def grind(name: str) -> list[str]:
        out = f"--callgrind-out-file={folder}/{name}"
        return [valgrind, "--tool=callgrind", "--separate-threads=yes", out]

    server = B.Child(BENCH_RPC, "rpc_server", impl, {}, DEADLINE, grind("server"))
    try:
        port = server.expect("ready", 300)["port"]
        params = {"port": port, "count": calls, "warmup": WARMUP}
        client = B.Child(
            BENCH_RPC, "rpc_client", impl, params, DEADLINE, grind("client")
        )
        try:
            client.expect("result", DEADLINE)
        finally:
            client.close(60)  # it exits by itself; callgrind writes its files then
    finally:
        server.close(60)
    return _threads(f"{folder}/client"), _threads(f"{folder}/server")


def _per_call(short: dict, long: dict, calls: int) -> float:
    """Instructions per call of the thread whose count grew the most."""
    return max(long[k] - short.get(k, 0) for k in long) / calls


def main() -> None:
    """Count each implementation twice, subtract, print instructions per call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="yoton,floor")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("count_rpc.py needs valgrind (apt install valgrind)")
    B.parent_setup()
    calls = LONG - SHORT
    print(f"instructions per echo call (callgrind, {calls:,} calls)")
    print(f"  {'impl':8s} {'caller':>10s} {'replier':>10s} {'both':>10s}")
    for impl in [name.strip() for name in args.only.split(",") if name.strip()]:
        counts = []
        for count in (SHORT, LONG):
            with tempfile.TemporaryDirectory() as folder:
                counts.append(_run(impl, count, folder))
        (caller_a, replier_a), (caller_b, replier_b) = counts
        caller = _per_call(caller_a, caller_b, calls)
        replier = _per_call(replier_a, replier_b, calls)
        print(f"  {impl:8s} {caller:10,.0f} {replier:10,.0f} {caller + replier:10,.0f}")
    print("caller: the calling thread; replier: the thread that answers")


if __name__ == "__main__":
    main()
