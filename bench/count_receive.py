"""Instructions per received frame, counted by callgrind: exact, unlike time here.

Parses, routes and receives (``SubChannel.recv``) chunks of 1,000 frames of
100 bytes from one source in one thread, as the receiving side does, and
prints the instructions per frame of each part. Two runs of different lengths
are subtracted, so start-up and chunk building do not count. Needs valgrind.
Run by hand:

    python bench/count_receive.py [--parts parse,route,all]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1000
SHORT, LONG = 1_000, 21_000


def inner(part: str, count: int) -> None:
    """Build the chunks, then run ``part`` over them (the counted work)."""
    sys.path.insert(0, str(ROOT))
    import yoton
    from yoton import wire
    from yoton.addresses import full_slot_name, slot_hash

    slot = slot_hash(full_slot_name("count", "bin", "pub-sub"))
    ctx = yoton.Context(queue_params=(10 * CHUNK, "old"))
    sub = yoton.SubChannel(ctx, "count", yoton.BINARY)
    chunks = []
    for first in range(1, count + 1, CHUNK):
        frames = [
            wire.encode_header(slot, 77, seq, 0, 0, 100) + bytes(100)
            for seq in range(first, first + CHUNK)
        ]
        chunks.append(b"".join(frames))
    if part == "build":
        return
    recv = sub.recv
    for chunk in chunks:
        frames, runs, _, _, _ = wire.parse_frame_runs(chunk, 0, len(chunk))
        if part == "parse":
            continue
        ctx._recv_packages(frames, None, runs)
        if part == "route":
            sub._q_in.clear()
            continue
        for _ in range(CHUNK):
            recv(False)


def _instructions(part: str, count: int) -> int:
    valgrind = shutil.which("valgrind")
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    python = os.path.realpath(sys.executable)  # not a pyenv shim
    done = subprocess.run(
        [*command, python, __file__, "--inner", part, str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected\s*:\s*([\d,]+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    """Count each part twice, subtract, print instructions per frame."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="parse,route,all")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("count_receive.py needs valgrind (apt install valgrind)")
    frames = LONG - SHORT

    def per_frame(part: str) -> float:
        return (_instructions(part, LONG) - _instructions(part, SHORT)) / frames

    build = per_frame("build")
    print(f"instructions per frame ({CHUNK:,}-frame chunks, 100-byte payloads)")
    for part in args.parts.split(","):
        print(f"  {part:6s} {per_frame(part) - build:8,.0f}")
    print("parse: parse_frame_runs; route: + Context._recv_packages; all: + recv()")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--inner"]:
        inner(sys.argv[2], int(sys.argv[3]))
    else:
        main()
