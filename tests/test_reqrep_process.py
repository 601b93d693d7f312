"""Req/rep across processes: load balancing, repliers killed mid-request, and
requesters that disappear before their reply arrives.

Children are plain Python processes talking over 127.0.0.1 (ports chosen by the
OS); they report on stdout, one line per event, and are killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from conftest import wait_until

import yoton

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL"),
]

T = 10.0  # generous limit for anything we wait for; never a speed assertion

REPLIER = r"""
import os, sys, time
import yoton

class Worker(yoton.RepChannel):
    def work(self, i):
        print("DID", i, flush=True)
        return i, os.getpid()

    def slow(self, seconds):
        print("TAKEN", flush=True)
        time.sleep(seconds)
        return os.getpid()

ctx = yoton.Context()
ctx.connect("localhost:" + sys.argv[1], timeout=5)
rep = Worker(ctx, sys.argv[2])
rep.set_mode("thread")
print("READY", flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
ctx.close()
print("BYE", flush=True)
"""

REQUESTER = r"""
import sys
import yoton

ctx = yoton.Context()
ctx.connect("localhost:" + sys.argv[1], timeout=5)
req = yoton.ReqChannel(ctx, sys.argv[2])
mode = sys.argv[3]
print("READY", flush=True)
sys.stdin.readline()  # until the parent knows our connection
if mode == "calls":
    k = int(sys.argv[4])
    futures = [req.add(i, 1000 * k) for i in range(30)]
    try:
        ok = [f.result(10) for f in futures] == [i + 1000 * k for i in range(30)]
        for i in range(10):
            ok = ok and req.echo((k, i)).result(10)[0] == (k, i)
        print("OK" if ok else "WRONG", flush=True)
    except Exception as err:
        print("FAILED", repr(err), [f for f in futures if not f.done()], flush=True)
elif mode == "abandon":
    # One slow request and several more waiting behind it, then we get killed.
    futures = [req.slow(1.0)] + [req.add(i, i) for i in range(5)]
    ctx.flush()
    print("SENT", flush=True)
    sys.stdin.read()
ctx.close()
"""


class Child:
    """A child process running a script; a thread collects its stdout lines."""

    def __init__(self, script: str, *args) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def has(self, prefix: str) -> bool:
        with self._cond:
            return any(line.startswith(prefix) for line in self.lines)

    def expect(self, prefix: str, timeout: float = T) -> str:
        """Wait for a line starting with prefix; return it."""
        with self._cond:
            found = self._cond.wait_for(lambda: self._eof or self.has(prefix), timeout)
            for line in self.lines:
                if line.startswith(prefix):
                    return line
        raise AssertionError(f"no {prefix!r} from the child ({found}): {self.lines}")

    def go(self) -> None:
        """Tell the child to start (one line on its stdin)."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> list[str]:
        """Close stdin, wait for the child to exit, return all its lines."""
        self.proc.stdin.close()
        self.proc.wait(T)
        self._reader.join(T)
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(T)


@pytest.fixture
def children():
    started: list[Child] = []

    def start(script: str, *args) -> Child:
        child = Child(script, *args)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            child.kill()
            child._reader.join(T)
            child.proc.stdout.close()
            if not child.proc.stdin.closed:
                child.proc.stdin.close()


@pytest.fixture
def hub():
    """A context listening on a free port (a relay for everything else)."""
    contexts: list[yoton.Context] = []
    context = yoton.Context()
    contexts.append(context)
    listener = context.listen("localhost:0")
    context.port = listener.port

    def join() -> yoton.Context:
        other = yoton.Context()
        contexts.append(other)
        other.connect(f"localhost:{listener.port}")
        # Adopted by the hub (a count could be off while a killed peer's
        # connection is still closing).
        assert wait_until(lambda: any(c.id2 == other.id for c in context.connections))
        return other

    context.join = join
    try:
        yield context
    finally:
        for item in contexts:
            item.close()


def start_repliers(children, hub, count: int, slot: str = "work") -> list[Child]:
    repliers = [children(REPLIER, hub.port, slot) for _ in range(count)]
    for child in repliers:
        child.expect("READY")
    assert wait_until(lambda: hub.connection_count >= count)
    return repliers


def start_children(hub, started: list[Child]) -> None:
    """Wait until the children are connected and known to the hub; then go.

    (A listener's new connection receives before its context adopts it, so a
    peer that sends at once can miss replies: see test_reqrep.py.)
    """
    for child in started:
        child.expect("READY")
    assert wait_until(lambda: hub.connection_count >= len(started))
    for child in started:
        child.go()


class Adder(yoton.RepChannel):
    def __init__(self, context, slot):
        super().__init__(context, slot)
        self.entered = threading.Event()

    def add(self, a, b):
        return a + b

    def slow(self, seconds):
        self.entered.set()
        time.sleep(seconds)
        return "slow done"


# -- load balancing ------------------------------------------------------------------


def test_replier_processes_each_request_exactly_once(children, hub):
    repliers = start_repliers(children, hub, 2)
    req = yoton.ReqChannel(hub, "work")
    futures = [req.work(i) for i in range(40)]
    results = [f.result(T) for f in futures]
    futures = [req.work(i) for i in range(40, 60)]  # and some more, later
    results += [f.result(T) for f in futures]
    assert [i for i, _ in results] == list(range(60))
    done = Counter()
    by_pid = Counter(pid for _, pid in results)
    for child in repliers:
        lines = child.finish()
        mine = [int(line.split()[1]) for line in lines if line.startswith("DID")]
        done.update(mine)
        assert by_pid[child.proc.pid] == len(mine)
    assert done == Counter(range(60))  # every request handled exactly once


def test_busy_replier_process_does_not_delay_quick_request(children, hub):
    start_repliers(children, hub, 2)
    req = yoton.ReqChannel(hub, "work")
    order = []
    slow = req.echo("slow", sleep=2.0)
    slow.add_done_callback(lambda f: order.append("slow"))
    assert wait_until(slow.running)  # a replier took it
    quick = req.echo("quick")
    quick.add_done_callback(lambda f: order.append("quick"))
    quick_value, quick_id = quick.result(T)
    slow_value, slow_id = slow.result(T)
    assert (quick_value, slow_value) == ("quick", "slow")
    assert order == ["quick", "slow"]
    assert quick_id != slow_id  # the free replier took it


def test_requester_processes_at_once(children, hub):
    rep = Adder(hub, "add")
    rep.set_mode("thread")
    requesters = [children(REQUESTER, hub.port, "add", "calls", k) for k in range(3)]
    start_children(hub, requesters)
    # And requests from this process at the same time.
    req = yoton.ReqChannel(hub.join(), "add")
    futures = [req.add(i, -1) for i in range(50)]
    assert [f.result(T) for f in futures] == [i - 1 for i in range(50)]
    for child in requesters:
        assert child.expect("OK", timeout=T * 2) == "OK", child.lines


# -- a replier killed mid-request ----------------------------------------------------


def test_replier_killed_mid_request(children, hub):
    [child] = start_repliers(children, hub, 1)
    req = yoton.ReqChannel(hub, "work")
    assert req.work(1).result(T)[0] == 1
    future = req.slow(30)
    child.expect("TAKEN")
    assert future.running()
    child.kill()
    err = future.exception(T)
    assert isinstance(err, yoton.ReplierLostError)
    with pytest.raises(yoton.ReplierLostError):
        future.result(0)


def test_replier_killed_behind_relay(children, hub):
    # requester context - hub (relay, no channels) - replier process
    [child] = start_repliers(children, hub, 1)
    req = yoton.ReqChannel(hub.join(), "work")
    future = req.slow(30)
    child.expect("TAKEN")
    child.kill()
    assert isinstance(future.exception(T), yoton.ReplierLostError)


def test_other_replier_serves_after_kill(children, hub):
    repliers = start_repliers(children, hub, 2)
    req = yoton.ReqChannel(hub, "work")
    future = req.slow(30)
    assert wait_until(lambda: any(child.has("TAKEN") for child in repliers))
    [taker] = [child for child in repliers if child.has("TAKEN")]
    [survivor] = [child for child in repliers if child is not taker]
    taker.kill()
    assert isinstance(future.exception(T), yoton.ReplierLostError)
    for i in range(10):
        assert req.work(i).result(T) == (i, survivor.proc.pid)


# -- a requester that disappears -----------------------------------------------------


def test_killed_requester_does_not_block_replier(children, hub):
    rep = Adder(hub, "add")
    rep.set_mode("thread")
    child = children(REQUESTER, hub.port, "add", "abandon")
    start_children(hub, [child])
    child.expect("SENT")
    assert rep.entered.wait(T)  # busy with the child's slow request
    child.kill()
    # The replier forgets the dead requester's queued requests and serves us.
    req = yoton.ReqChannel(hub.join(), "add")
    futures = [req.add(i, 1) for i in range(5)]
    assert [f.result(T) for f in futures] == [1, 2, 3, 4, 5]
    assert req.add(2, 2).result(T) == 4
