"""The broker as a real process with a real kernel, driven by yoton clients.

Every test starts ``python -m broker`` on a free port, reads its start-up line and
attaches with yoton contexts. Waits are for conditions (generous timeouts), never
for wall-clock bounds; latencies are measured in bench/bench_broker.py.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import wait_until

import yoton
from kernel.launch import module_command

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0  # seconds to wait for any condition
LINE_RE = re.compile(r"^yoton-broker listening on (\S+:\d+), connection file (.+)$")
STREAMS = (
    "strm-out",
    "strm-err",
    "strm-echo",
    "strm-prompt",
    "strm-raw",
    "strm-broker",
)


# -- helpers -------------------------------------------------------------------------


class StateWatcher(yoton.StateChannel):
    """A StateChannel that records every state it receives and never resends."""

    def __init__(self, context, slot, message_type=None):
        super().__init__(context, slot, message_type)
        self.values: list = []
        self.cond = threading.Condition()

    def send_last(self):
        # Like the consoles should: the broker gives each new client the current
        # states, and a resent stale state would overwrite newer ones elsewhere.
        pass

    def _recv_packages(self, packages):
        super()._recv_packages(packages)
        with self.cond:
            self.values.extend(self.message_from_bytes(p.data) for p in packages)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT):
        """Wait until predicate(current state) is true; return the state."""
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.recv()), timeout)
        assert ok, f"state never matched; received {self.values[-20:]!r}"
        return self.recv()

    def wait_value(self, value, timeout: float = WAIT):
        """Wait until the current state equals value."""
        return self.wait_for(lambda v: v == value, timeout)

    def wait_seen(self, value, start: int = 0, timeout: float = WAIT) -> int:
        """Wait until value was received at index >= start; return its index."""

        def found():
            return value in self.values[start:]

        with self.cond:
            ok = self.cond.wait_for(found, timeout)
            assert ok, f"{value!r} never received; got {self.values[start:]!r}"
            return self.values.index(value, start)


class Client:
    """A yoton client of the broker with every channel a console would use."""

    def __init__(self, address: str, key, timeout: float = 10.0) -> None:
        self.ctx = yoton.Context()
        self.subs = {name: yoton.SubChannel(self.ctx, name) for name in STREAMS}
        self.history = yoton.SubChannel(self.ctx, "strm-history", yoton.OBJECT)
        self.status = StateWatcher(self.ctx, "stat-interpreter")
        self.info = StateWatcher(self.ctx, "stat-broker", yoton.OBJECT)
        self.startup = StateWatcher(self.ctx, "stat-startup", yoton.OBJECT)
        self.command = yoton.PubChannel(self.ctx, "ctrl-command")
        self.ctrl = yoton.PubChannel(self.ctx, "ctrl-broker")
        self.conn = self.ctx.connect(address, timeout=timeout, key=key)

    def execute(self, code: str) -> None:
        """Send lines of code to the kernel (end a compound statement with "\\n")."""
        self.command.send(code + "\n")

    def read_until(self, stream: str, text: str, timeout: float = WAIT) -> str:
        """Collect messages of one stream until ``text`` is in them; return them."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            joined = "".join(got)
            if text in joined:
                return joined
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not on {stream}; got {joined[-2000:]!r}"
            got.append(self.subs[stream].recv(remaining))

    def kernel_pid(self, other_than: int = 0) -> int:
        """Wait until stat-broker names a live kernel (not other_than); its pid."""
        info = self.info.wait_for(
            lambda i: (
                bool(i)
                and i.get("kernel_alive")
                and i.get("kernel_pid") not in (0, other_than)
            )
        )
        return info["kernel_pid"]

    def close(self) -> None:
        """Disconnect."""
        self.ctx.close()


class BrokerProcess:
    """``python -m broker`` started for one test; everything is killed at the end."""

    def __init__(self, tmp_path: Path, *args: str, env=None, default_file=False):
        self.tmp_path = tmp_path
        self.connection_file = tmp_path / "broker.json"
        cmd = [*module_command("broker"), *args]
        if not default_file:
            cmd += ["--connection-file", str(self.connection_file)]
        self.stderr_path = tmp_path / f"broker-stderr-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        self.clients: list[Client] = []
        self.kernel_pids: set[int] = set()
        self.line = ""
        self.address = ""

    def read_line(self, timeout: float = WAIT) -> str:
        """Read one line of the broker's stdout."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no output from the broker; stderr: {self.stderr()}"
        return self.proc.stdout.readline().rstrip("\n")

    def wait_started(self) -> BrokerProcess:
        """Wait for the start-up line; check it and the connection file."""
        self.line = self.read_line()
        match = LINE_RE.match(self.line)
        assert match, f"unexpected start-up line {self.line!r}; {self.stderr()}"
        self.address = match.group(1)
        self.connection_file = Path(match.group(2))
        return self

    @property
    def info(self) -> dict:
        """The connection file's content."""
        return json.loads(self.connection_file.read_text())

    @property
    def port(self) -> int:
        """The port the broker listens on."""
        return int(self.address.rsplit(":", 1)[1])

    def client(self, key="default", address=None) -> Client:
        """Attach a client (with the broker's key unless given)."""
        if key == "default":
            key = self.info["key"]
        client = Client(address or f"127.0.0.1:{self.port}", key)
        self.clients.append(client)
        return client

    def ready_client(self) -> Client:
        """Attach a client and wait until the kernel is Ready."""
        client = self.client()
        client.status.wait_value("Ready")
        self.kernel_pids.add(client.kernel_pid())
        return client

    def stderr(self) -> str:
        """What the broker wrote on stderr so far."""
        self._stderr.flush()
        return self.stderr_path.read_text()

    def kill_all(self) -> None:
        """Kill the broker, its kernels and every client."""
        for client in self.clients:
            client.close()
        pids = set(self.kernel_pids)
        try:
            pids.update(c.pid for c in psutil.Process(self.proc.pid).children(True))
        except psutil.NoSuchProcess:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def make_broker(tmp_path):
    """Factory of started brokers; all are killed with their kernels at the end."""
    brokers: list[BrokerProcess] = []

    def make(*args: str, wait: bool = True, **kwargs) -> BrokerProcess:
        broker = BrokerProcess(tmp_path, *args, **kwargs)
        brokers.append(broker)
        return broker.wait_started() if wait else broker

    yield make
    for broker in brokers:
        broker.kill_all()


@pytest.fixture
def broker(make_broker) -> BrokerProcess:
    """One started broker."""
    return make_broker()


def wait_gone(pid: int, timeout: float = WAIT) -> None:
    """Wait until a (non-child) process has exited."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass


def broker_messages(client: Client, text: str) -> str:
    """Wait for a strm-broker message containing text (history or live)."""
    return client.read_until("strm-broker", text)


def spawn_client_process(port: int, key: str, body: str) -> subprocess.Popen:
    """Start a client in its own process; it prints "attached" once connected."""
    script = (
        "import sys, yoton\n"
        "ctx = yoton.Context()\n"
        "out = yoton.SubChannel(ctx, 'strm-out')\n"
        "msgs = yoton.SubChannel(ctx, 'strm-broker')\n"
        f"ctx.connect('127.0.0.1:{port}', timeout=10, key={key!r})\n"
        "print('attached', flush=True)\n" + body
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    assert ready and proc.stdout.readline().strip() == "attached"
    return proc


# -- start-up and the connection file ------------------------------------------------


def test_start_line_connection_file_and_first_client(broker):
    info = broker.info
    assert stat.S_IMODE(broker.connection_file.stat().st_mode) == 0o600
    assert info["address"] == broker.address
    assert info["pid"] == broker.proc.pid
    assert len(info["key"]) == 64 and bytes.fromhex(info["key"])
    client = broker.ready_client()
    startup = client.startup.wait_for(bool)
    assert startup["pid"] == client.kernel_pid()
    assert startup["cwd"] == str(broker.tmp_path)
    broker_info = client.info.wait_for(lambda i: i and i.get("clients") == 1)
    assert broker_info["pid"] == broker.proc.pid
    assert broker_info["address"] == broker.address


def test_default_connection_file_in_runtime_dir(make_broker, tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    broker = make_broker(env=env, default_file=True)
    expected = tmp_path / "run" / "yoton" / f"broker-{broker.proc.pid}.json"
    assert broker.connection_file == expected
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    broker.proc.send_signal(signal.SIGTERM)
    assert broker.proc.wait(WAIT) == 0
    assert not expected.exists()


def test_insecure_on_loopback_needs_no_key(make_broker):
    broker = make_broker("--insecure")
    assert broker.info["key"] is None
    client = broker.client(key=None)
    client.status.wait_value("Ready")


def test_insecure_refused_on_other_addresses(make_broker):
    broker = make_broker("--insecure", "--listen", "0.0.0.0:0", wait=False)
    assert broker.proc.wait(WAIT) == 2
    assert "loopback" in broker.stderr()


def test_non_loopback_listen_requires_the_key(make_broker):
    broker = make_broker("--listen", "0.0.0.0:0")
    assert broker.info["key"]
    with pytest.raises(yoton.AuthenticationError):
        Client(f"127.0.0.1:{broker.port}", None)
    broker.client().status.wait_value("Ready")


# -- bad clients ---------------------------------------------------------------------


def test_wrong_key_and_no_key_are_refused(broker):
    with pytest.raises(yoton.AuthenticationError):
        Client(f"127.0.0.1:{broker.port}", "0" * 64)
    with pytest.raises(yoton.AuthenticationError):
        Client(f"127.0.0.1:{broker.port}", None)
    client = broker.ready_client()
    client.execute("print(6 * 7)")
    client.read_until("strm-out", "42")
    assert broker.proc.poll() is None


def test_garbage_and_silent_sockets_do_not_hurt(broker):
    socks = []
    for payload in (b"GET / HTTP/1.0\r\n\r\n", os.urandom(5000), b"\x00" * 70000, b""):
        sock = socket.create_connection(("127.0.0.1", broker.port))
        if payload:
            try:
                sock.sendall(payload)
            except OSError:
                pass  # refused and closed while we were still sending
        socks.append(sock)
    client = broker.ready_client()
    client.execute("print('still fine')")
    client.read_until("strm-out", "still fine")
    for sock in socks:
        sock.close()
    assert broker.proc.poll() is None


def test_fifty_clients_at_once(broker):
    broker.ready_client()
    key = broker.info["key"]
    clients: list[Client] = []
    errors: list[BaseException] = []

    def attach():
        try:
            clients.append(Client(f"127.0.0.1:{broker.port}", key, timeout=WAIT))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=attach) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    broker.clients.extend(clients)
    assert not errors
    assert len(clients) == 50
    for client in clients:
        client.status.wait_value("Ready")
        assert isinstance(client.history.recv(WAIT), list)
    clients[0].execute("print('to ' + 'all')")
    for client in clients:
        client.read_until("strm-out", "to all")
        client.read_until("strm-echo", "print('to ' + 'all')")
    clients[0].info.wait_for(lambda i: i and i.get("clients") == 51)


def test_client_killed_while_output_streams(broker):
    client = broker.ready_client()
    victim = spawn_client_process(
        broker.port, broker.info["key"], "while True:\n    out.recv(True)\n"
    )
    client.info.wait_for(lambda i: i and i.get("clients") == 2)
    client.execute("for i in range(300000): print(i)\n")
    client.read_until("strm-out", "\n1000\n")
    victim.kill()
    victim.wait()
    victim.stdout.close()
    client.info.wait_for(lambda i: i and i.get("clients") == 1)
    client.read_until("strm-out", "\n299999\n")
    client.status.wait_value("Ready")


def test_stopped_client_neither_blocks_others_nor_grows_memory(broker):
    client = broker.ready_client()
    body = (
        "while True:\n"
        "    m = msgs.recv(120)\n"
        "    if not m or 'dropped' in m:\n"
        "        print(m.strip(), flush=True)\n"
        "        break\n"
    )
    slow = spawn_client_process(broker.port, broker.info["key"], body)
    client.info.wait_for(lambda i: i and i.get("clients") == 2)
    os.kill(slow.pid, signal.SIGSTOP)
    try:
        mark = len(client.status.values)
        client.execute("s = 'x' * 999_999\nfor i in range(300): print(s)\n")
        received = 0
        while received < 300 * 1_000_000:
            text = client.subs["strm-out"].recv(WAIT)
            assert text, "output stopped arriving"
            received += len(text)
        # The kernel finished although one client reads nothing.
        client.status.wait_seen("Ready", mark + 1)
        rss = psutil.Process(broker.proc.pid).memory_info().rss
        assert rss < 250 << 20, f"broker holds {rss >> 20} MiB for a stopped client"
        dropped = client.info.wait_for(lambda i: i and i.get("dropped", 0) > 0)
        assert dropped["dropped"] > 0
    finally:
        os.kill(slow.pid, signal.SIGCONT)
    ready, _, _ = select.select([slow.stdout], [], [], 120)
    assert ready
    notice = slow.stdout.readline()
    assert re.match(r"\d+ messages were dropped because this client did not", notice)
    slow.wait(WAIT)
    slow.stdout.close()
    # The normal-speed client lost nothing and got no such notice.
    assert all("dropped" not in m for m in client.subs["strm-broker"].recv_all())


# -- history -------------------------------------------------------------------------


def test_late_joiner_gets_history_and_state(broker):
    first = broker.ready_client()
    first.execute("for i in range(5): print('early', i)\n")
    first.read_until("strm-out", "early 4")
    first.execute("import os; _ = os.system('echo raw-early')")
    first.read_until("strm-raw", "raw-early")
    late = broker.client()
    history = late.history.recv(WAIT)
    assert isinstance(history, list)
    streams = {stream for stream, _ in history}
    assert {"strm-out", "strm-echo", "strm-prompt", "strm-raw"} <= streams
    out = "".join(text for stream, text in history if stream == "strm-out")
    assert "early 0\n" in out and "early 4\n" in out
    # In the order the broker relayed them.
    echoes = [i for i, (s, t) in enumerate(history) if s == "strm-echo"]
    outputs = [i for i, (s, t) in enumerate(history) if s == "strm-out"]
    assert history[echoes[0]][1].startswith("for i in range(5)")
    assert echoes[0] < outputs[0]
    late.status.wait_value("Ready")
    assert late.startup.wait_for(bool)["pid"] == first.kernel_pid()
    # The history is addressed: the first client holds only its own.
    assert len(first.history.recv_all()) == 1


# -- kernel states -------------------------------------------------------------------


def test_gil_held_in_c_shows_stalled_then_recovers(broker):
    client = broker.ready_client()
    mark = len(client.status.values)
    client.execute("import ctypes; ctypes.PyDLL(None).sleep(3)")
    stalled = client.status.wait_seen("Stalled", mark)
    client.status.wait_seen("Ready", stalled)
    broker_messages(client, "Kernel stalled")


def test_stopped_kernel_shows_stalled(broker):
    client = broker.ready_client()
    pid = client.kernel_pid()
    mark = len(client.status.values)
    os.kill(pid, signal.SIGSTOP)
    try:
        stalled = client.status.wait_seen("Stalled", mark)
    finally:
        os.kill(pid, signal.SIGCONT)
    client.status.wait_seen("Ready", stalled)
    client.execute("print('awake')")
    client.read_until("strm-out", "awake")


def test_killed_kernel_is_dead_with_signal_name(broker):
    client = broker.ready_client()
    os.kill(client.kernel_pid(), signal.SIGKILL)
    client.status.wait_value("Dead")
    broker_messages(client, "Kernel died (SIGKILL)")
    info = client.info.wait_for(lambda i: i and not i.get("kernel_alive"))
    assert info["kernel_returncode"] == -signal.SIGKILL


def test_exit_code_is_reported(broker):
    client = broker.ready_client()
    client.execute("import os; os._exit(3)")
    client.status.wait_value("Dead")
    broker_messages(client, "Kernel died (exit code 3)")


def test_death_while_nobody_is_attached_is_learnt_later(broker):
    first = broker.ready_client()
    pid = first.kernel_pid()
    first.close()
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    late = broker.client()
    late.status.wait_value("Dead")
    history = late.history.recv(WAIT)
    text = "".join(t for s, t in history if s == "strm-broker")
    if "Kernel died (SIGKILL)" not in text:  # attached before the broker noticed
        broker_messages(late, "Kernel died (SIGKILL)")


# -- commands ------------------------------------------------------------------------


def test_interrupt(broker):
    client = broker.ready_client()
    client.execute("while True: pass\n")
    client.status.wait_value("Busy")
    client.ctrl.send("INT")
    client.read_until("strm-err", "KeyboardInterrupt")
    client.status.wait_value("Ready")


def _runs_child(process: psutil.Process, name: str) -> bool:
    try:
        return any(c.name() == name for c in process.children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def test_interrupt_reaches_foreground_subprocess(broker):
    client = broker.ready_client()
    kernel = psutil.Process(client.kernel_pid())
    client.execute("import os; os.system('sleep 600')")
    client.status.wait_value("Busy")
    # Interrupt once `sleep` runs: system() ignores SIGINT in the kernel while it
    # waits, so a Ctrl-C that lands between fork and exec reaches nobody (as in
    # a plain python).
    assert wait_until(lambda: _runs_child(kernel, "sleep"), 30), "no sleep started"
    client.ctrl.send("INT")
    client.status.wait_value("Ready")


def test_terminate_busy_kernel(broker):
    client = broker.ready_client()
    pid = client.kernel_pid()
    client.execute("while True: pass\n")
    client.status.wait_value("Busy")
    client.ctrl.send("TERM")
    client.status.wait_value("Dead")
    broker_messages(client, "Kernel stopped")
    wait_gone(pid)
    assert not psutil.pid_exists(pid)


def test_kill_command(broker):
    client = broker.ready_client()
    client.ctrl.send("kill")
    client.status.wait_value("Dead")
    broker_messages(client, "Kernel stopped (SIGKILL)")


def test_restart_keeps_clients_attached(broker):
    client = broker.ready_client()
    old = client.kernel_pid()
    client.execute("x = 'old kernel'")
    mark = len(client.status.values)
    client.ctrl.send("RESTART")
    broker_messages(client, "Restarting kernel")
    dead = client.status.wait_seen("Dead", mark)
    starting = client.status.wait_seen("Starting", dead)
    client.status.wait_seen("Ready", starting)
    new = client.kernel_pid(other_than=old)
    broker.kernel_pids.add(new)
    assert new != old and not psutil.pid_exists(old)
    client.execute("print('x' in dir())")
    client.read_until("strm-out", "False")
    assert client.info.wait_for(lambda i: i and i.get("restarts") == 1)


def test_kernel_killed_during_restart(broker):
    client = broker.ready_client()
    old = client.kernel_pid()
    client.ctrl.send("RESTART")
    new = client.kernel_pid(other_than=old)
    broker.kernel_pids.add(new)
    os.kill(new, signal.SIGKILL)
    client.status.wait_value("Dead")
    broker_messages(client, "SIGKILL")
    assert broker.proc.poll() is None
    client.ctrl.send("RESTART")
    client.status.wait_value("Ready")
    newest = client.kernel_pid(other_than=new)
    broker.kernel_pids.add(newest)
    client.execute("print('back')")
    client.read_until("strm-out", "back")


def test_unknown_command_is_answered(broker):
    client = broker.ready_client()
    client.ctrl.send("REBOOT")
    broker_messages(client, "Unknown broker command 'REBOOT'")


def test_bad_python_keeps_broker_up(make_broker, tmp_path):
    broker = make_broker("--python", str(tmp_path / "no-such-python"))
    assert "Could not start the kernel" in broker.read_line()
    client = broker.client()
    client.status.wait_value("Dead")
    history = client.history.recv(WAIT)
    assert any("Could not start the kernel" in t for _, t in history)
    client.ctrl.send("RESTART")
    broker_messages(client, "Restarting kernel")
    broker_messages(client, "Could not start the kernel")
    assert broker.proc.poll() is None


def test_kernel_that_exits_at_start_is_reported(make_broker):
    broker = make_broker("--python", "/bin/false")
    assert "Kernel failed to start" in broker.read_line()
    client = broker.client()
    client.status.wait_value("Dead")


def test_shutdown_command(broker):
    client = broker.ready_client()
    pid = client.kernel_pid()
    client.ctrl.send("SHUTDOWN")
    assert broker.proc.wait(WAIT) == 0
    wait_gone(pid)
    assert not broker.connection_file.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_broker_and_kernel(broker, signum):
    client = broker.ready_client()
    pid = client.kernel_pid()
    broker.proc.send_signal(signum)
    assert broker.proc.wait(WAIT) == 0
    wait_gone(pid)
    assert not broker.connection_file.exists()


def test_kernel_exits_when_broker_is_killed(broker):
    client = broker.ready_client()
    pid = client.kernel_pid()
    broker.proc.kill()
    broker.proc.wait(WAIT)
    wait_gone(pid)
    assert not psutil.pid_exists(pid)


# -- in-process broker (short client timeouts) ---------------------------------------


@pytest.fixture
def inprocess_broker(tmp_path):
    """A Broker run in a thread of the test process, with short client timeouts."""
    import io

    from broker.core import Broker

    broker = Broker(
        connection_file=tmp_path / "broker.json",
        stdout=io.StringIO(),
        client_timeout=0.5,
        client_grace=0.5,
    )
    thread = threading.Thread(target=broker.run, args=(False,), daemon=True)
    thread.start()
    started = threading.Event()

    def check():
        if broker.connection_file.exists() and broker.address:
            started.set()
        else:
            yoton.call_later(check, 0.05)

    yoton.call_later(check, 0)
    assert started.wait(WAIT)
    yield broker
    yoton.call_later(broker.shutdown, 0)
    thread.join(WAIT)
    kernel = broker.kernel
    if kernel is not None and kernel.alive:
        kernel.send_signal(signal.SIGKILL)
    assert not thread.is_alive()


def test_silent_client_is_closed(inprocess_broker, tmp_path):
    port, key = inprocess_broker.port, inprocess_broker.key
    client = Client(f"127.0.0.1:{port}", key)
    try:
        client.status.wait_value("Ready")
        silent = spawn_client_process(port, key, "import time\ntime.sleep(600)\n")
        client.info.wait_for(lambda i: i and i.get("clients") == 2)
        os.kill(silent.pid, signal.SIGSTOP)
        try:
            # Its heartbeats stop: timed out after 0.5 s, closed 0.5 s later.
            client.info.wait_for(lambda i: i and i.get("clients") == 1)
        finally:
            silent.kill()
            os.kill(silent.pid, signal.SIGCONT)
            silent.wait()
            silent.stdout.close()
        client.execute("print('alone')")
        client.read_until("strm-out", "alone")
    finally:
        client.close()


def test_same_named_files_in_cwd_do_not_shadow_our_modules(make_broker, tmp_path):
    # A user's kernel.py / yoton.py in the directory the broker runs in must not
    # replace our kernel; user code still imports from that directory.
    for name in ("kernel", "yoton", "broker"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed!')\n")
    (tmp_path / "mymod.py").write_text("VALUE = 42\n")
    broker = make_broker()
    client = broker.ready_client()
    client.execute("import mymod; print(mymod.VALUE)")
    assert "42" in client.read_until("strm-out", "42")
