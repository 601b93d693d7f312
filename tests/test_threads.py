"""yoton's own threads block process signals, so Ctrl-C reaches the main thread."""

import signal
import sys
import threading
from pathlib import Path

import pytest
from conftest import wait_for

import yoton

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc/<pid>/task"
    ),
]


def blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals ``thread`` blocks, from /proc (SigBlk is a hex bit mask)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    mask = int(
        next(
            line for line in status.splitlines() if line.startswith("SigBlk:")
        ).split()[1],
        16,
    )
    return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}


def test_yoton_threads_block_sigint_and_the_main_thread_does_not(pair):
    a, b = pair

    class Echo(yoton.RepChannel):
        pass

    rep = Echo(a, "threads")
    rep.set_mode("thread")
    req = yoton.ReqChannel(b, "threads")
    assert req.echo(1).result(10)[0] == 1
    fired = threading.Event()
    yoton.call_later(fired.set, 0.01)  # starts the timer thread
    wait_for(lambda: yoton.process_events(0.05) or fired.is_set())
    ours = [t for t in threading.enumerate() if t.name.startswith("yoton-")]
    names = {t.name.rsplit("-", 1)[-1] for t in ours}
    assert {"send", "recv", "rep", "timers"} <= names
    for thread in ours:
        assert signal.SIGINT in blocked_signals(thread), thread.name
        assert signal.SIGTERM in blocked_signals(thread), thread.name
    assert signal.SIGINT not in blocked_signals(threading.main_thread())
