"""Unit tests of the kernel's interactive interpreter, in-process, without yoton."""

from __future__ import annotations

import builtins
import pickle
import sys
import threading

import pytest

from kernel.interpreter import (
    Interpreter,
    InterruptGuard,
    LineQueue,
    Status,
    split_lines,
)
from kernel.streams import OutputBuffer

pytestmark = pytest.mark.timeout(30)


class Harness:
    """An Interpreter with recorded output, prompts, statuses and echoes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []  # ("prompt"|"status"|"echo", text)
        self.output = OutputBuffer(
            lambda target, text: self.sent.append((target, text))
        )
        self.lines = LineQueue(InterruptGuard())
        self.interp = Interpreter(
            self.output,
            self.lines,
            on_prompt=lambda t: self.events.append(("prompt", t)),
            on_status=self._status,
            on_echo=lambda t: self.events.append(("echo", t)),
        )
        self.interp.install()
        self.asking = threading.Event()  # set when status "Input" is published

    def _status(self, status: str) -> None:
        self.events.append(("status", status))
        if status == Status.INPUT:
            self.asking.set()

    def run(self, message: str) -> int | None:
        """Feed one ctrl-command message; handle its lines; return an exit code."""
        self.lines.put(message)
        while len(self.lines):
            code = self.interp.step()
            if code is not None:
                return code
        self.output.flush()
        return None

    def out(self) -> str:
        self.output.flush()
        return "".join(t for tg, t in self.sent if tg == "out")

    def err(self) -> str:
        self.output.flush()
        return "".join(t for tg, t in self.sent if tg == "err")

    def kinds(self, kind: str) -> list[str]:
        return [t for k, t in self.events if k == kind]

    def clear(self) -> None:
        self.output.flush()
        self.sent.clear()
        self.events.clear()


@pytest.fixture
def h(monkeypatch):
    for name in ("stdout", "stderr", "stdin", "excepthook", "displayhook"):
        monkeypatch.setattr(sys, name, getattr(sys, name))
    for name in ("ps1", "ps2", "last_type", "last_value", "last_traceback"):
        monkeypatch.setattr(sys, name, None, raising=False)
        monkeypatch.delattr(sys, name)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setattr(builtins, "input", builtins.input)
    monkeypatch.setattr(builtins, "_", None, raising=False)
    harness = Harness()
    yield harness
    harness.output.close()
    harness.lines.close()


def test_split_lines():
    assert split_lines("a") == ["a"]
    assert split_lines("a\n") == ["a"]
    assert split_lines("a\r\nb\rc\n\n") == ["a", "b", "c", ""]
    assert split_lines("") == [""]
    assert split_lines("\n") == [""]
    assert split_lines("x = '\u2028'") == ["x = '\u2028'"]


def test_expression_value_is_displayed(h):
    h.run("1 + 2")
    assert h.out() == "3\n"
    h.run("_ * 2")
    assert h.out() == "3\n6\n"
    h.run("None")
    assert h.out() == "3\n6\n"


def test_prompt_status_echo_sequence(h):
    h.run("x = 1")
    assert h.events == [
        ("status", Status.READY),
        ("prompt", ">>> "),
        ("echo", "x = 1\n"),
        ("status", Status.BUSY),
    ]
    h.clear()
    h.run("if x:")
    assert h.events == [
        ("status", Status.READY),
        ("prompt", ">>> "),
        ("echo", "if x:\n"),
    ]
    h.clear()
    h.run("    print('yes')")
    assert h.events == [
        ("status", Status.MORE),
        ("prompt", "... "),
        ("echo", "    print('yes')\n"),
    ]
    h.run("")
    assert h.out() == "yes\n"


def test_multiline_def_with_blank_line_in_one_message(h):
    h.run("def f(a):\n    return a * 2\n\nprint(f(21))\n")
    assert h.out() == "42\n"
    assert h.err() == ""
    assert h.kinds("echo") == [
        "def f(a):\n",
        "    return a * 2\n",
        "\n",
        "print(f(21))\n",
    ]
    assert h.kinds("prompt") == [">>> ", "... ", "... ", ">>> "]


def test_pasted_block_without_blank_line_runs(h):
    h.run("for i in range(3):\n    print(i)\nprint('done')\n")
    assert h.out() == "0\n1\n2\ndone\n"
    assert h.err() == ""


def test_incomplete_message_waits_for_more(h):
    h.run("x = (1,")
    assert h.out() == ""
    h.run("2)")
    h.run("x")
    assert h.out() == "(1, 2)\n"


def test_exception_traceback_without_kernel_frames(h):
    h.run("def g():\n    return 1 / 0\n\ng()")
    err = h.err()
    assert err.startswith("Traceback (most recent call last):\n")
    assert "ZeroDivisionError: division by zero" in err
    assert "kernel" not in err
    assert "return 1 / 0" in err  # source of interactive input is shown
    assert sys.last_type is ZeroDivisionError
    h.run("print('still alive')")
    assert h.out() == "still alive\n"


def test_syntax_error_reported_like_python(h):
    h.run("x = = 1")
    err = h.err()
    assert "Traceback" not in err
    assert "    x = = 1\n" in err
    assert "^" in err
    assert err.endswith("SyntaxError: invalid syntax\n")
    h.run("1")
    assert h.out() == "1\n"


def test_garbage_input_does_not_break_the_kernel(h):
    h.run("\x00\x01\x02\xff\ufffd garbage \x1b[31m")
    h.run("'\udcff'")
    h.run(")))")
    assert "Error" in h.err()
    h.clear()
    h.run("print('ok')")
    assert h.out() == "ok\n"


def test_huge_line(h):
    h.run("x = '" + "a" * 1_000_000 + "'")
    h.run("len(x)")
    assert h.out() == "1000000\n"


def test_main_module_semantics(h):
    h.run("__name__")
    assert h.out() == "'__main__'\n"
    h.run("class Point:\n    pass\n\n")
    h.run("import pickle; p = pickle.loads(pickle.dumps(Point())); type(p).__name__")
    assert h.out().endswith("'Point'\n")
    assert sys.modules["__main__"] is h.interp.module
    assert pickle.dumps(h.interp.namespace["Point"])


def test_closed_stdout_is_restored_for_next_command(h):
    h.run("import sys; sys.stdout.close()")
    h.run("print('back')")
    assert h.out() == "back\n"
    h.run("import io; sys.stdout = io.StringIO(); sys.stderr = None")
    h.run("print('again')")
    assert h.out() == "back\nagain\n"


def test_input_takes_next_line_and_publishes_prompt(h):
    h.run("name = input('name? ')\nbob\nprint('hi', name)")
    assert h.out() == "hi bob\n"
    assert "name? " in h.kinds("prompt")
    assert Status.INPUT in h.kinds("status")
    assert "bob\n" in h.kinds("echo")


def test_stdin_readline(h):
    h.run("import sys; line = sys.stdin.readline()\nsome text\nline")
    assert h.out() == "'some text\\n'\n"


def test_input_waits_for_a_later_message(h):
    h.lines.put("x = input('? ')")
    done = threading.Event()

    def answer():
        # wait until the interpreter asks, then answer from "another client"
        assert h.asking.wait(10)
        h.lines.put("late")
        done.set()

    t = threading.Thread(target=answer)
    t.start()
    h.interp.step()
    t.join(10)
    assert done.is_set()
    h.run("x")
    assert h.out() == "'late'\n"


def test_sys_exit_returns_code(h):
    assert h.run("import sys; sys.exit(3)") == 3
    h.output.flush()


def test_sys_exit_with_message(h):
    assert h.run("raise SystemExit('bye')") == 1
    assert h.err() == "bye\n"


def test_exit_builtin(h):
    assert h.run("exit()") == 0


def test_keyboard_interrupt_discards_rest_of_block(h):
    h.run("print(1)\nraise KeyboardInterrupt\nprint(2)\n")
    assert h.out() == "1\n"
    assert h.err().endswith("KeyboardInterrupt\n")
    h.run("print(3)")
    assert h.out() == "1\n3\n"


def test_pending_interrupt_at_idle_gives_fresh_prompt(h):
    h.run("if True:")
    h.interp.guard.pending = True
    h.clear()
    assert h.interp.step() is None  # interrupted while waiting: buffer dropped
    assert h.kinds("prompt") == ["... "]
    h.run("x = 5")
    assert h.kinds("prompt") == ["... ", ">>> "]
    h.run("x")
    assert h.out() == "5\n"
    assert h.err() == ""


def test_sigint_handler_raises_only_when_active():
    guard = InterruptGuard()
    guard.handle_sigint(2, None)
    assert guard.pending
    with pytest.raises(KeyboardInterrupt):
        with guard.interruptible():
            pass
    assert not guard.pending
    with guard.interruptible():
        assert guard.active
        with pytest.raises(KeyboardInterrupt):
            guard.handle_sigint(2, None)
    assert not guard.active


def test_shielded_section_delays_sigint():
    guard = InterruptGuard()
    with pytest.raises(KeyboardInterrupt):
        with guard.interruptible():
            with guard.shielded():
                guard.handle_sigint(2, None)  # remembered, not raised here
                assert guard.pending
            raise AssertionError("not reached: raised when the shield ends")
    assert not guard.pending and not guard.active


def test_custom_excepthook_is_used(h):
    h.run("import sys\ndef hook(t, v, tb): print('hooked', t.__name__)\n")
    h.run("sys.excepthook = hook")
    h.run("1/0")
    assert h.out() == "hooked ZeroDivisionError\n"
