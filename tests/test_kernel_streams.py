"""Unit tests of the kernel's batching output buffer and its stdio objects."""

from __future__ import annotations

import io
import os
import sys
import threading

import pytest

from kernel.streams import (
    InputStream,
    KernelStdio,
    OutputBuffer,
    OutputStream,
)

pytestmark = pytest.mark.timeout(30)


class Collector:
    """A send callback that records (target, text) and can be made to block."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, target: str, text: str) -> None:
        self.gate.wait()
        with self.cond:
            self.sent.append((target, text))
            self.cond.notify_all()

    def wait_for_text(self, total: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(
                lambda: sum(len(t) for _, t in self.sent) >= total, timeout
            )

    def text(self, target: str | None = None) -> str:
        return "".join(t for tg, t in self.sent if target is None or tg == target)


@pytest.fixture
def collector():
    return Collector()


@pytest.fixture
def output(collector):
    buf = OutputBuffer(collector)
    yield buf
    collector.gate.set()
    buf.close()


def test_many_small_writes_are_batched_and_complete(output, collector):
    n = 20000
    for i in range(n):
        output.write("out", f"{i}\n")
    output.flush()
    expected = "".join(f"{i}\n" for i in range(n))
    assert collector.text() == expected
    assert len(collector.sent) < n / 100  # batches, not one send per write


def test_stdout_stderr_order_is_kept(output, collector):
    for i in range(100):
        output.write("out", f"o{i} ")
        if i % 10 == 0:
            output.write("err", f"e{i} ")
    output.flush()
    merged = "".join(t for _, t in collector.sent)
    expected = "".join(f"o{i} " + (f"e{i} " if i % 10 == 0 else "") for i in range(100))
    assert merged == expected
    assert collector.text("err") == "".join(f"e{i} " for i in range(0, 100, 10))


def test_single_write_is_sent_without_flush(output, collector):
    output.write("out", "hello\n")
    collector.wait_for_text(len("hello\n"))
    assert collector.sent == [("out", "hello\n")]


def test_flush_waits_until_sent(output, collector):
    output.write("out", "x" * 10)
    assert output.flush(timeout=10)
    assert collector.text() == "x" * 10


def test_flush_with_nothing_pending_returns_true(output):
    assert output.flush(timeout=0)


def test_slow_send_blocks_writer_and_loses_nothing(collector):
    buf = OutputBuffer(collector, batch_size=100, max_pending=400)
    collector.gate.clear()
    done = threading.Event()

    def writer():
        for i in range(1000):
            buf.write("out", f"{i:05d}\n")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.3)  # blocked: the send cannot proceed
    collector.gate.set()
    t.join(10)
    assert done.is_set()
    buf.flush()
    assert collector.text() == "".join(f"{i:05d}\n" for i in range(1000))
    buf.close()


def test_big_write_is_split_into_messages(collector):
    buf = OutputBuffer(collector, max_message=1000)
    buf.write("out", "a" * 2500)
    buf.flush()
    assert [len(t) for _, t in collector.sent] == [1000, 1000, 500]
    buf.close()


def test_unencodable_text_is_escaped_not_lost(collector):
    def strict_send(target, text):
        text.encode("utf-8")
        collector(target, text)

    buf = OutputBuffer(strict_send)
    buf.write("out", "a\udcffb")
    buf.flush()
    assert collector.text() == "a\\udcffb"
    buf.close()


def test_closed_buffer_refuses_writes(collector):
    buf = OutputBuffer(collector)
    buf.write("out", "x")
    buf.close()
    assert collector.text() == "x"
    with pytest.raises(ValueError):
        buf.write("out", "y")


def test_output_stream_behaves_like_a_text_file(output, collector):
    s = OutputStream(output, "out", "<stdout>")
    assert s.write("abc") == 3
    print("line", 1, file=s)
    with pytest.raises(TypeError):
        s.write(b"bytes")
    assert not s.isatty()
    assert s.writable()
    assert s.encoding == "utf-8"
    with pytest.raises(io.UnsupportedOperation):
        s.fileno()
    s.flush()
    assert collector.text() == "abcline 1\n"
    s.close()
    with pytest.raises(ValueError):
        s.write("x")


def test_output_stream_buffer_decodes_split_utf8(output, collector):
    s = OutputStream(output, "out", "<stdout>")
    data = "héllo €\n".encode()
    for i in range(len(data)):
        s.buffer.write(data[i : i + 1])
    s.flush()
    assert collector.text() == "héllo €\n"


def test_input_stream_readline_and_ask():
    lines = iter(["first", "second", "third"])
    prompts = []

    def read_line(prompt):
        prompts.append(prompt)
        return next(lines)

    s = InputStream(read_line)
    assert s.readline() == "first\n"
    assert s.readline(3) == "sec"
    assert s.readline() == "ond\n"
    assert s.ask("? ") == "third"
    assert prompts == ["", "", "? "]


def test_kernel_stdio_install_replaces_closed_and_swapped_streams(output, monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(sys, "stdin", sys.stdin)
    stdio = KernelStdio(output, lambda prompt: "")
    stdio.install()
    assert sys.stdout is stdio.stdout
    first = stdio.stdout
    sys.stdout.close()
    sys.stderr = io.StringIO()
    stdio.install()
    assert sys.stdout is stdio.stdout is not first
    assert not sys.stdout.closed
    assert sys.stderr is stdio.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_writes_to_fds(output, collector, capfd):
    output.write("out", "parent pending\n")
    pid = os.fork()
    if pid == 0:  # child: no flusher thread, so output must go to fd 1 / 2
        try:
            output.write("out", "from child\n")
            output.write("err", "child error\n")
            output.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    output.flush()
    captured = capfd.readouterr()
    assert captured.out == "from child\n"
    assert captured.err == "child error\n"
    assert collector.text() == "parent pending\n"
