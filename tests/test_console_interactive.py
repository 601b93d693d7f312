"""yoton-console driven as a person types it: pexpect, real broker and kernel."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pexpect
import pytest
from test_client_support import (  # noqa: F401
    WAIT,
    broker,
    child_environment,
    home,
    start_broker,
)

from client import DISCONNECTED, Client

pytestmark = pytest.mark.timeout(180)

PROMPT = ">>> "
MORE = r"\.\.\. "


@pytest.fixture
def spawn(home):  # noqa: F811
    """Start consoles (``spawn(*args)``); all are killed after the test."""
    children: list[pexpect.spawn] = []

    def start(*args: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "client.console", *args],
            env=child_environment(home),
            cwd=str(home),
            encoding="utf-8",
            codec_errors="replace",
            timeout=WAIT,
            dimensions=(40, 200),
        )
        child.logfile_read = open(  # noqa: SIM115 - closed below
            home / f"console-{len(children)}.log", "w", encoding="utf-8"
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.terminate(force=True)
        child.logfile_read.close()
    # Local brokers of consoles that did not leave cleanly (their kernels exit
    # when the broker's connection closes).
    for info in (home / "tmp").glob("yoton-console-*/connection.json"):
        try:
            os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture
def attach(spawn, broker):  # noqa: F811
    """Start a console attached to the broker; returns it at its first prompt."""

    def start() -> pexpect.spawn:
        child = spawn("--existing", str(broker.connection_file))
        child.expect_exact(PROMPT)
        return child

    return start


def expect_exit(child: pexpect.spawn) -> None:
    """Expect the console to end; if it hangs, fail with its threads' stacks."""
    if child.expect([pexpect.EOF, pexpect.TIMEOUT]) == 1:
        child.kill(signal.SIGABRT)
        child.expect(pexpect.EOF)
        pytest.fail(f"the console did not exit:\n{child.before[-8000:]}")


def run(child: pexpect.spawn, line: str, *expected: str) -> None:
    """Type a line, expect each text in turn, then the next prompt."""
    child.sendline(line)
    for text in expected:
        child.expect_exact(text)
    child.expect_exact(PROMPT)


def test_two_consoles_see_each_other(attach):
    a, b = attach(), attach()
    run(a, "print(6 * 7)", "42")
    b.expect_exact(">>> print(6 * 7)")  # A's code, echoed in B
    b.expect_exact("42")
    run(b, "x = 'typed in b'")
    a.expect_exact(">>> x = 'typed in b'")
    run(a, "print(x.upper())", "TYPED IN B")
    b.expect_exact("TYPED IN B")


def test_multiline_def(attach):
    a = attach()
    a.sendline("def double(x):")
    a.expect(MORE)
    a.sendline("    return 2 * x")
    a.expect(MORE)
    a.sendline("")
    a.expect_exact(PROMPT)
    run(a, "double(21)", "42")


def test_traceback_as_python_shows_it(attach):
    a = attach()
    run(
        a,
        "1 / 0",
        "Traceback (most recent call last):",
        'File "<python-input-',
        "ZeroDivisionError: division by zero",
    )


def test_input_answered_from_a_console(attach):
    a, b = attach(), attach()
    a.sendline("name = input('Name: ')")
    a.expect_exact("Name: ")
    b.expect_exact("Name: ")  # B's prompt follows the kernel
    b.sendline("Grace")
    a.expect_exact("Grace")  # the answer, echoed in A
    a.expect_exact(PROMPT)
    run(a, "print(name + '!')", "Grace!")


def complete(child: pexpect.spawn, text: str, pattern: str) -> None:
    """Type ``text`` and Tab twice until ``pattern`` shows (jedi may load slowly)."""
    for _ in range(10):
        child.send(text + "\t\t")
        if child.expect([pattern, "\x07\x07"]) == 0:
            return
        child.send("\x15")  # Ctrl-U: clear the line, the kernel was not ready
    raise AssertionError(f"no completion for {text!r}")


def test_tab_completion_lists_candidates(attach):
    a = attach()
    run(a, "import os")
    complete(a, "os.pa", "pardir +path")  # the second Tab lists the candidates
    a.send("\x15")
    a.send("os.getpi\t")  # one candidate: completed in place
    a.expect_exact("os.getpid")
    a.sendline("() > 0")
    a.expect_exact("True")
    a.expect_exact(PROMPT)


def test_ctrl_c_stops_busy_loop(attach):
    a = attach()
    a.sendline("exec(\"print('spin' + 'ning', flush=True)\\nwhile True: pass\")")
    a.expect_exact("spinning")
    a.sendintr()
    a.expect_exact("KeyboardInterrupt")
    a.expect_exact(PROMPT)
    run(a, "print('after')", "after")


def test_ctrl_c_stops_sleep(attach):
    a = attach()
    a.sendline("import time; print('sleep' + 'ing', flush=True); time.sleep(60)")
    a.expect_exact("sleeping")
    a.sendintr()
    a.expect_exact("KeyboardInterrupt")
    a.expect_exact(PROMPT)


def test_ctrl_c_at_prompt_clears_line(attach):
    a = attach()
    a.send("this is not sent")
    a.expect_exact("this is not sent")
    a.sendintr()
    a.expect_exact("KeyboardInterrupt")
    a.expect_exact(PROMPT)
    run(a, "print('clean')", "clean")


def test_stall_in_extension_code_is_shown(attach):
    a = attach()
    a.sendline("import ctypes; ctypes.PyDLL(None).sleep(3)")
    a.expect_exact("Kernel stalled")
    a.expect_exact("Kernel responds again")
    a.expect_exact(PROMPT)


def test_kill_then_restart(attach):
    a, b = attach(), attach()
    run(a, "gone = 1")
    a.sendline("%kill")
    a.expect_exact("SIGKILL")
    a.expect_exact("(no kernel) ")
    b.expect_exact("SIGKILL")
    a.sendline("print(1)")
    a.expect_exact("%restart starts a new one")
    a.sendline("%restart")
    a.expect_exact("kernel restarted")
    a.expect_exact(PROMPT)
    run(a, "print('gone' in dir())", "False")
    b.expect_exact("kernel restarted")


def test_double_ctrl_c_gives_console_prompt_while_stalled(attach):
    a = attach()
    # The regular expression engine holds the GIL and never looks at signals.
    a.sendline("import re; re.match(r'(a+)+$', 'a' * 64 + 'b')")
    a.expect_exact("Kernel stalled")  # SIGINT waits until the C call returns
    a.sendintr()
    a.expect_exact("interrupt sent")
    a.sendintr()
    a.expect_exact("the kernel is still busy")
    a.expect_exact("(busy) ")
    a.sendline("%kill")
    a.expect_exact("SIGKILL")
    a.expect_exact("(no kernel) ")
    a.sendline("%restart")
    a.expect_exact(PROMPT)
    run(a, "print('fresh')", "fresh")


def test_console_commands(attach):
    a = attach()
    a.sendline("%help")
    for name in ("%interrupt", "%terminate", "%kill", "%restart", "%status"):
        a.expect_exact(name)
    a.expect_exact(PROMPT)
    run(a, "%status", "kernel:  Ready", "Python ", "broker:  ", "(connected)")
    run(a, "%bogus", "unknown console command %bogus")
    run(a, "%interrupt")
    run(a, "5 % 3", "2")  # "%" inside code is code


def test_output_from_background_thread_keeps_prompt(attach):
    a = attach()
    a.sendline("import threading; t = threading.Timer(1.0, print, ['ding']); t.start()")
    a.expect_exact(PROMPT)
    a.send("half typed")
    a.expect_exact("ding")
    a.expect_exact(">>> half typed")  # prompt and typed text drawn again
    a.sendline("")
    a.expect("NameError|SyntaxError")
    a.expect_exact(PROMPT)


def test_wrong_key_is_refused_clearly(spawn, broker, home):  # noqa: F811
    key_file = home / "wrong.key"
    key_file.write_text("not-the-key")
    child = spawn(broker.address, "--key-file", str(key_file))
    child.expect_exact("refused the key")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_ctrl_d_leaves_remote_kernel_running(attach, broker):  # noqa: F811
    a = attach()
    run(a, "kept = 'still here'")
    a.sendeof()
    expect_exit(a)
    a.close()
    assert a.exitstatus == 0
    assert broker.process.poll() is None
    b = attach()
    run(b, "print(kept)", "still here")


def test_local_broker_started_and_stopped(spawn, home):  # noqa: F811
    a = spawn()
    a.expect_exact(PROMPT)
    files = list((home / "tmp").glob("yoton-console-*/connection.json"))
    assert len(files) == 1
    broker_pid = json.loads(files[0].read_text())["pid"]
    a.sendline("import os; os.getpid()")
    a.expect(r"(\d+)\r?\n")
    kernel_pid = int(a.match.group(1))
    a.expect_exact(PROMPT)
    a.sendeof()
    expect_exit(a)
    a.close()
    try:
        assert a.exitstatus == 0
        for pid in (broker_pid, kernel_pid):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        history = (home / "history").read_text()
        assert "import os; os.getpid()" in history
    finally:
        for pid in (broker_pid, kernel_pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_exit_in_a_local_kernel_ends_the_session(spawn, home):  # noqa: F811
    a = spawn()
    a.expect_exact(PROMPT)
    broker_pid = json.loads(
        next((home / "tmp").glob("yoton-console-*/connection.json")).read_text()
    )["pid"]
    try:
        a.sendline("exit()")
        expect_exit(a)
        a.close()
        assert a.exitstatus == 0
        with pytest.raises(ProcessLookupError):
            os.kill(broker_pid, 0)
    finally:
        try:
            os.kill(broker_pid, 9)
        except ProcessLookupError:
            pass


def test_detach_local_and_attach_again(spawn, home):  # noqa: F811
    a = spawn()
    a.expect_exact(PROMPT)
    files = list((home / "tmp").glob("yoton-console-*/connection.json"))
    broker_pid = json.loads(files[0].read_text())["pid"]
    try:
        run(a, "kept = 7")
        a.sendline("%detach")
        a.expect_exact("--existing")
        expect_exit(a)
        b = spawn("--existing", str(files[0]))
        b.expect_exact(PROMPT)
        run(b, "print(kept * 6)", "42")
        b.sendline("%shutdown")
        expect_exit(b)
    finally:
        try:
            os.killpg(broker_pid, 9)
        except ProcessLookupError:
            pass


def test_second_broker_attach_by_address(spawn, home):  # noqa: F811
    other = start_broker(home / "..", "--listen", "127.0.0.1:0")
    try:
        key_file = home / "k"
        key_file.write_text(other.key)
        a = spawn(other.address, "--key-file", str(key_file))
        a.expect_exact(PROMPT)
        run(a, "print('by address')", "by address")
    finally:
        other.stop()


def test_hangup_stops_local_broker(spawn, home):  # noqa: F811
    a = spawn()
    a.expect_exact(PROMPT)
    files = list((home / "tmp").glob("yoton-console-*/connection.json"))
    broker_pid = json.loads(files[0].read_text())["pid"]
    watcher = Client.from_connection_file(files[0])
    gone = threading.Event()
    reasons: list[str] = []

    def on_connection(state: str, reason: str) -> None:
        if state == DISCONNECTED:
            reasons.append(reason)
            gone.set()

    watcher.add_connection_callback(on_connection)
    try:
        a.kill(signal.SIGHUP)  # the terminal went away
        expect_exit(a)
        assert gone.wait(WAIT), "the local broker kept running"
        assert not files[0].exists()  # the broker removed its connection file
    finally:
        watcher.close()
        try:
            os.killpg(broker_pid, 9)
        except ProcessLookupError:
            pass


def test_silent_and_lost_broker_are_reported(attach, broker):  # noqa: F811
    a, b = attach(), attach()
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        a.expect_exact("[yoton] broker silent")  # after the heartbeat timeout
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    a.expect_exact("[yoton] the broker answers again")
    b.sendline("%shutdown")
    expect_exit(b)
    a.expect_exact("connection to the broker lost")
    a.expect_exact("(disconnected) ")
    a.sendline("%reconnect")
    a.expect_exact("reconnect failed")
    a.expect_exact("(disconnected) ")
    a.sendeof()
    expect_exit(a)
