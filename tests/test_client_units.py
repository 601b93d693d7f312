"""Unit tests of the client's pure parts: connection files, commands, rendering,
completion, the echo filter and the status reporter. No processes, no sockets."""

from __future__ import annotations

import io
import json
import os

import pytest

from client.client import _history_items, needs_blank_line
from client.commands import COMMANDS, help_text, parse_command
from client.completion import DELIMITERS, Completer, candidates
from client.connection_file import (
    ConnectionFileError,
    parse_address,
    parse_connection_info,
    read_connection_file,
    read_key_file,
)
from client.console import _connection_info, _parser, history_path
from client.render import (
    CURSOR_UP,
    ERASE_LINE,
    EchoFilter,
    Screen,
    StatusReporter,
    split_lines,
)

pytestmark = pytest.mark.timeout(30)


# -- connection files ---------------------------------------------------------------


def test_parse_address_forms():
    assert parse_address("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_address(" example.org:80 ") == ("example.org", 80)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    assert parse_address("7000") == ("127.0.0.1", 7000)


@pytest.mark.parametrize("bad", ["", "host", "host:", "host:abc", "host:0", ":99999"])
def test_parse_address_rejects(bad):
    with pytest.raises(ConnectionFileError):
        parse_address(bad)


def test_connection_file_key_is_utf8_of_string(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"address": "127.0.0.1:1234", "key": "sécret", "pid": 7})
    )
    info = read_connection_file(path)
    assert info.address == "127.0.0.1:1234"
    assert info.key == "sécret".encode()
    assert info.host == "127.0.0.1" and info.port == 1234
    assert info.extra == {"pid": 7}
    assert info.path == str(path)


def test_connection_file_without_key():
    info = parse_connection_info('{"address": "localhost:9", "key": null}')
    assert info.key is None


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"key": "k"}', '{"address": 5}', '{"address": "x"}']
)
def test_connection_file_errors(text):
    with pytest.raises(ConnectionFileError):
        parse_connection_info(text, "f.json")


def test_missing_connection_file_message(tmp_path):
    with pytest.raises(ConnectionFileError, match="No such connection file"):
        read_connection_file(tmp_path / "nope.json")


def test_key_file_plain_and_json(tmp_path):
    plain = tmp_path / "key"
    plain.write_text("abc123\n")
    assert read_key_file(plain) == b"abc123"
    as_json = tmp_path / "key.json"
    as_json.write_text('{"address": "h:1", "key": "xyz"}')
    assert read_key_file(as_json) == b"xyz"
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ConnectionFileError, match="empty"):
        read_key_file(empty)


# -- command line -------------------------------------------------------------------


def test_cli_connection_choices(tmp_path):
    parser = _parser()
    assert _connection_info(parser.parse_args([])) is None
    cf = tmp_path / "c.json"
    cf.write_text('{"address": "127.0.0.1:4000", "key": "k"}')
    info = _connection_info(parser.parse_args(["--existing", str(cf)]))
    assert (info.address, info.key) == ("127.0.0.1:4000", b"k")
    kf = tmp_path / "k"
    kf.write_text("k2")
    info = _connection_info(parser.parse_args(["h:5", "--key-file", str(kf)]))
    assert (info.address, info.key) == ("h:5", b"k2")
    info = _connection_info(parser.parse_args(["127.0.0.1:5", "--no-key"]))
    assert info.key is None
    with pytest.raises(ConnectionFileError, match="--key-file"):
        _connection_info(parser.parse_args(["h:5"]))
    with pytest.raises(ConnectionFileError, match="either"):
        _connection_info(parser.parse_args(["h:5", "--existing", str(cf)]))


def test_history_path_choices(tmp_path):
    assert history_path({"HOME": str(tmp_path)}) == tmp_path / ".yoton_console_history"
    assert history_path({"HOME": "/x", "XDG_STATE_HOME": str(tmp_path)}) == (
        tmp_path / "yoton" / "console_history"
    )
    assert history_path({"YOTON_CONSOLE_HISTORY": str(tmp_path / "h")}) == (
        tmp_path / "h"
    )


# -- console commands ---------------------------------------------------------------


def test_parse_commands():
    assert parse_command("%restart") == ("restart", "")
    assert parse_command("  %KILL  ") == ("kill", "")
    assert parse_command("%int") == ("interrupt", "")
    assert parse_command("%re").name == "re"  # ambiguous: restart, reconnect
    assert not parse_command("%re").known
    assert parse_command("%bogus").name == "bogus"
    assert parse_command("%status now") == ("status", "now")
    for code in ["x = 5 % 3", "print('%s' % 1)", "", "%%timeit", "% 3", "%1"]:
        assert parse_command(code) is None


def test_help_lists_every_command():
    text = help_text()
    for name in COMMANDS:
        assert f"%{name}" in text
    for name in ("restart", "interrupt", "terminate", "kill", "status", "detach"):
        assert name in COMMANDS
    assert "shutdown" in COMMANDS and "help" in COMMANDS


# -- blocks -------------------------------------------------------------------------


def test_needs_blank_line():
    assert not needs_blank_line("x = 1")
    assert not needs_blank_line("x = 1\ny = 2\n")
    assert needs_blank_line("def f():\n    return 1")
    assert needs_blank_line("for i in range(3): print(i)")
    assert needs_blank_line("if x:\n    pass\n")
    assert not needs_blank_line("def f():\n    return 1\n\n")
    assert not needs_blank_line("")
    assert not needs_blank_line("1 +")  # a syntax error, not a block


def test_history_items_validation():
    message = [["strm-out", "a\n"], ["strm-err", "b"], ["strm-nope", "c"], [1, 2], "x"]
    assert _history_items(message) == [("out", "a\n"), ("err", "b")]
    assert _history_items("garbage") == []
    assert _history_items([("prompt", ">>> ")]) == [("prompt", ">>> ")]


# -- screen -------------------------------------------------------------------------


def make_screen(buffer="", ansi=True, width=80):
    out = io.StringIO()
    screen = Screen(out, lambda: buffer, ansi=ansi, width=lambda: width)
    return screen, out


def test_screen_plain_output_without_prompt():
    screen, out = make_screen()
    screen.write("hello\n")
    screen.write("par")
    screen.write("tial\n")
    assert out.getvalue() == "hello\npartial\n"
    assert screen.partial == ""


def test_screen_output_above_active_prompt_redraws_it():
    screen, out = make_screen(buffer="x = ")
    screen.begin_input()
    screen.show_prompt(">>> ")
    screen.write("output\n")
    assert out.getvalue() == ERASE_LINE + "output\n" + ">>> x = "


def test_screen_partial_line_above_prompt_is_continued():
    screen, out = make_screen(buffer="")
    screen.write("abc")  # unfinished line before the prompt
    screen.begin_input()
    assert out.getvalue() == "abc\n"  # the prompt starts on its own line
    screen.show_prompt(">>> ")
    out.seek(0)
    out.truncate()
    screen.write("def\n")
    assert out.getvalue() == ERASE_LINE + CURSOR_UP + "\rabc" + "def\n" + ">>> "
    assert screen.partial == ""


def test_screen_partial_output_at_prompt_keeps_prompt_below():
    screen, out = make_screen()
    screen.begin_input()
    screen.show_prompt("... ")
    screen.write("progress")
    assert out.getvalue() == ERASE_LINE + "progress\n... "
    assert screen.partial == "progress"


def test_screen_long_prompt_line_erases_wrapped_rows():
    screen, out = make_screen(buffer="y" * 30, width=20)
    screen.show_prompt(">>> ")
    screen.write("z\n")
    assert out.getvalue().startswith(ERASE_LINE + CURSOR_UP + ERASE_LINE + "z\n")


def test_screen_without_ansi_never_redraws():
    screen, out = make_screen(buffer="typed", ansi=False)
    screen.show_prompt(">>> ")
    screen.write("out\n")
    assert out.getvalue() == "out\n"


def test_screen_write_line_starts_fresh_line():
    screen, out = make_screen()
    screen.write("no newline")
    screen.write_line("[yoton] message")
    assert out.getvalue() == "no newline\n[yoton] message\n"


def test_screen_end_input_after_eof_adds_newline():
    screen, out = make_screen()
    screen.show_prompt(">>> ")
    screen.end_input(echoed_newline=False)
    assert out.getvalue() == "\n" and screen.prompt is None


def test_screen_unencodable_text_is_replaced():
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    screen = Screen(out, ansi=False)
    screen.write("caf\u00e9\n")
    out.flush()
    assert raw.getvalue() == b"caf?\n"


def test_split_lines():
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\n\n") == ["a", ""]
    assert split_lines("") == [""]
    assert split_lines("a\r\nb") == ["a", "b"]


# -- echo filter --------------------------------------------------------------------


def test_echo_filter_recognises_own_lines_once():
    echo = EchoFilter()
    echo.sent("print(1)")
    assert echo.is_own("print(1)\n")
    assert not echo.is_own("print(1)\n")  # a second echo is someone else's


def test_echo_filter_foreign_lines_and_dropped_lines():
    echo = EchoFilter()
    echo.sent("a\nb\nc")  # a pasted block; the kernel drops "b" (interrupt)
    assert not echo.is_own("other\n")
    assert echo.is_own("a\n")
    assert echo.is_own("c\n")  # "b" is forgotten on the way
    assert len(echo) == 0
    echo.sent("")
    assert echo.is_own("\n")


# -- status reporter ----------------------------------------------------------------


def test_status_reporter_restart_by_pid():
    reporter = StatusReporter()
    assert reporter.kernel_info({"pid": 10}) == []
    assert reporter.kernel_info({"pid": 10}) == []
    assert reporter.kernel_info({"pid": 11}) == ["kernel restarted (pid 11)"]
    assert reporter.kernel_info({"no": "pid"}) == []


def test_status_reporter_is_quiet_about_states():
    reporter = StatusReporter()
    for status in ["Starting", "Ready", "Busy", "Stalled", "Dead", "Ready"]:
        assert reporter.update(status) == []
    assert reporter.status == "Ready"


# -- completion ---------------------------------------------------------------------


def test_candidates_from_jedi_reply():
    reply = {"names": ["path", "pardir", "pathsep"], "prefix_length": 2}
    assert candidates("pa", reply) == ["pardir", "path", "pathsep"]
    reply = {"names": ["_private", "public"], "prefix_length": 0}
    assert candidates("", reply) == ["public", "_private"]
    # jedi's prefix may be shorter than readline's word (e.g. after a quote)
    assert candidates("ab", {"names": ["bc"], "prefix_length": 1}) == ["abc"]
    # or longer: keep only names that fit the word
    assert candidates("c", {"names": ["cd", "xcd"], "prefix_length": 3}) == ["cd"]
    assert candidates("x", None) == []
    assert candidates("x", {"names": "bad"}) == []


def test_completer_states_and_indent():
    calls = []
    line = {"text": "os.pa"}

    def fetch(source):
        calls.append(source)
        return {"names": ["path", "pardir"], "prefix_length": 2}

    completer = Completer(fetch, lambda: line["text"], lambda: 3, lambda: 5)
    assert completer.complete("pa", 0) == "pardir"
    assert completer.complete("pa", 1) == "path"
    assert completer.complete("pa", 2) is None
    assert calls == ["os.pa"]  # one kernel call per Tab
    completer.context = "def f():\n"
    completer.complete("pa", 0)
    assert calls[-1] == "def f():\nos.pa"
    line["text"] = "    "
    assert completer.complete("", 0) == "\t"


def test_completer_never_raises():
    def fetch(source):
        raise RuntimeError("kernel gone")

    completer = Completer(fetch, lambda: "x.y", lambda: 2, None)
    assert completer.complete("y", 0) is None


def test_delimiters_split_at_dots():
    assert "." in DELIMITERS and "(" in DELIMITERS and "_" not in DELIMITERS


def test_package_exports():
    import client

    assert client.Client and client.Output and client.read_connection_file
    assert os.path.basename(os.path.dirname(client.__file__)) == "client"
